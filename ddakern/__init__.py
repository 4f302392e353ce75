"""ddakern: Dual-Domain Attention for facial-expression recognition.

`DDA` and `attach` put DDA into existing models; `models.create` builds registered hosts;
`functional` holds the fused ops and `use_kernels` picks their backend.
"""

from __future__ import annotations

import importlib
from typing import Any

from ddakern import models
from ddakern.layers.dda import DDA
from ddakern.models.attach import attach
from ddakern.models.original import load_original_checkpoint

__version__ = "0.1.0"

_LAZY = {"use_kernels": ("ddakern.dispatch", "use_kernels"), "functional": ("ddakern.functional", None)}


def __getattr__(name: str) -> Any:
    """Import the kernel dispatch and fused ops on first use (they pull in optional triton)."""
    if name in _LAZY:
        module_name, attr = _LAZY[name]
        module = importlib.import_module(module_name)
        return module if attr is None else getattr(module, attr)
    raise AttributeError(f"module 'ddakern' has no attribute {name!r}")


__all__ = ["DDA", "attach", "functional", "load_original_checkpoint", "models", "use_kernels"]
