"""ddakern: Dual-Domain Attention for facial-expression recognition.

`DDA` and `attach` put DDA into existing models; `models.create` builds registered hosts;
`functional` holds the fused ops and `use_ops_backend` (alias `use_kernels`) picks their backend.
"""

from ddakern import functional, models
from ddakern.dispatch import use_kernels, use_ops_backend
from ddakern.layers.dda import DDA
from ddakern.models.attach import attach
from ddakern.models.original import load_original_checkpoint

__version__ = "0.1.0"

__all__ = ["DDA", "attach", "functional", "load_original_checkpoint", "models", "use_kernels", "use_ops_backend"]
