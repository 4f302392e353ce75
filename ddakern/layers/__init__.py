"""DDA building blocks: small modules composed into the four DDA stage blocks."""

from ddakern.layers.blocks import ConvBN, UpBlock, Upsampler
from ddakern.layers.channel_attention import ChannelAttention
from ddakern.layers.context_path import ContextPath
from ddakern.layers.dda import DDA
from ddakern.layers.dual_domain_fusion import DualDomainFusion
from ddakern.layers.mask_head import MaskHead

__all__ = [
    "ChannelAttention",
    "ContextPath",
    "ConvBN",
    "DDA",
    "DualDomainFusion",
    "MaskHead",
    "UpBlock",
    "Upsampler",
]
