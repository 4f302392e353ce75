"""Public fused ops of DDA (re-exported from their homes in ddakern.ops; backends: ddakern.dispatch).

Any other registered op (ddakern.ops.registry) is found here by name too, so a new op needs no line here.
"""

from typing import Any

from ddakern.ops.attention_residual import attention_residual
from ddakern.ops.channel_attention import channel_attention

__all__ = ["attention_residual", "channel_attention"]


def __getattr__(name: str) -> Any:
    """A registered op's public function by its name (ops without a line above)."""
    from ddakern.ops import registry

    if name.startswith("_") or name not in registry.names():
        raise AttributeError(f"module 'ddakern.functional' has no attribute {name!r}")
    return registry.get(name).fused
