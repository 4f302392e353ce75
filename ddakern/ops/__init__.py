"""Implementations behind ddakern.functional: the autograd reference and the PyTorch math of the fused ops."""
