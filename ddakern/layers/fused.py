"""The base of layers whose math is a fused op: one switch, `fused_ops`, that DDA sets on all of them."""

from __future__ import annotations

from torch import nn


class FusedOpLayer(nn.Module):
    """A layer computed by a fused op of ddakern.ops: with `fused_ops` the op itself (backend from
    ddakern.use_ops_backend), else the op's autograd reference. DDA.fused_ops switches every such layer in
    the block, so a new op-using layer needs no list to join."""

    def __init__(self, *, fused_ops: bool = False) -> None:
        super().__init__()
        self.fused_ops = fused_ops
