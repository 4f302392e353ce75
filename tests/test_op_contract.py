"""Each fused op's torch backend and Triton launchers follow the one interface of kernels.contract.

The argument bundles and the signatures are defined once there (a Protocol per op); this checks that
both backends' functions take exactly the Protocol's parameters, with its annotations, so the two
cannot drift apart (imports only: no kernel runs).
"""

from __future__ import annotations

import inspect
import typing

import pytest
from torch import Tensor

from ddakern.kernels_import import contract
from ddakern.ops import attention_residual as ar_op
from ddakern.ops import channel_attention as ca_op
from ddakern.ops._common import triton_kernels

CASES = [
    ("attention_residual", contract.AttentionResidualBackend, ar_op._TorchMath),
    ("channel_attention", contract.ChannelAttentionBackend, ca_op._TorchMath),
]


def _signature(fn: object) -> list[tuple[str, object]]:
    """(name, resolved annotation) of each parameter but `self`, and of the return value."""
    hints = typing.get_type_hints(fn)
    names = [p for p in inspect.signature(fn).parameters if p != "self"]
    return [(p, hints[p]) for p in names] + [("return", hints["return"])]


@pytest.mark.parametrize("op, protocol, torch_math", CASES, ids=[c[0] for c in CASES])
def test_both_backends_follow_the_contract(op, protocol, torch_math):
    methods = [m for m in protocol.__dict__ if not m.startswith("_")]
    assert methods, protocol
    launchers = triton_kernels(op)
    for method in methods:
        want = _signature(getattr(protocol, method))
        assert _signature(getattr(torch_math, method)) == want, f"torch backend {op}.{method}"
        assert _signature(getattr(launchers, method)) == want, f"triton launcher {op}.{method}"


def test_a_drifted_signature_is_caught():
    def forward(x: Tensor, logits: Tensor, weight: Tensor, bias: Tensor, mean: Tensor, rstd: Tensor) -> Tensor:
        return x  # the flat signature the bundles replaced

    want = _signature(contract.AttentionResidualBackend.forward)
    assert _signature(ar_op.torch_forward) == want
    assert _signature(forward) != want
