"""Triton kernels and launchers of ddakern's fused ops, installed as `ddakern.kernels`.

ddakern loads this package only when a Triton launch needs it (ddakern.ops._common.triton_kernels):
from the installed `ddakern.kernels`, or from this folder of a source tree on PYTHONPATH. Modules here
use relative imports only, so they work under either name.
"""
