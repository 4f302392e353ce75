"""Public fused ops of DDA (re-exported from their homes in ddakern.ops; backends: ddakern.dispatch)."""

from ddakern.ops.attention_residual import attention_residual
from ddakern.ops.channel_attention import channel_attention

__all__ = ["attention_residual", "channel_attention"]
