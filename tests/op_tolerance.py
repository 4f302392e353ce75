"""The fused-op tests' fp32 allowance, as a fraction: shared by the op tests and the GPU-budget kernel tests."""

from __future__ import annotations


def allowance_fraction(err: float, tol: float, ours: float | None, theirs: float | None) -> float:
    """Error as a fraction of the fp32 allowance: within `tol` of the fp32 reference, or (where the
    float64 errors are known) at most twice the fp32 reference's own error; <= 1 passes."""
    frac = err / tol
    if ours is not None and theirs is not None:
        frac = min(frac, ours / (2 * theirs) if theirs > 0 else (0.0 if ours == 0 else float("inf")))
    return frac
