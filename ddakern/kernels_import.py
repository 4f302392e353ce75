"""The kernels package, imported the ordinary way and in one direction only (ddakern -> kernels).

`ddakern.kernels` where ddakern is installed (the wheel maps the kernels/ folder there), else the source
tree's top-level `kernels` package beside ddakern/ (a checkout on PYTHONPATH, no install). Importing it
imports no triton; a Triton module is imported only when a launch needs it (`kernels_module`).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

try:
    from ddakern.kernels import contract, interpret, layout
except ModuleNotFoundError as e:  # a source tree: kernels/ sits beside ddakern/
    if e.name != "ddakern.kernels":
        raise
    from kernels import contract, interpret, layout

    if Path(layout.__file__).resolve().parents[1] != Path(__file__).resolve().parents[1]:
        raise ImportError(
            f"ddakern: the `kernels` package at {Path(layout.__file__).parent} is not this source tree's "
            "kernels/ folder (another package of that name comes first on sys.path)"
        ) from None

KERNELS_PACKAGE: str = layout.__name__.rpartition(".")[0]
"""The kernels package's name: ddakern.kernels (installed) or kernels (a source tree)."""

__all__ = ["KERNELS_PACKAGE", "contract", "interpret", "kernels_module", "layout"]


def kernels_module(name: str) -> ModuleType:
    """The kernels module `name` (e.g. "attention_residual": imports triton; called only when a launch needs it)."""
    return importlib.import_module(f"{KERNELS_PACKAGE}.{name}")
