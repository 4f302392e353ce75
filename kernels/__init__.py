"""Triton kernels for ddakern's fused ops (imported lazily: importing this package needs no triton)."""
