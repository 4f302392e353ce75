"""Triton kernels and launchers of ddakern's fused ops: `kernels` in a source tree, `ddakern.kernels` installed.

ddakern imports this package (never the other way round): its layout helpers (`layout`) and the
backends' one interface (`contract`), both pure torch, always, and a launcher module (which imports
triton) only when a Triton launch needs it (ddakern.ops._common.triton_kernels). Modules here use
relative imports only, so they work under either name, and import nothing from ddakern.
"""
