"""Each fused op describes itself once (ddakern.ops.registry) and every consumer loops over the descriptions.

A new op is its module in ddakern/ops (with `SPEC = register(OpSpec(...))`), its kernels module and its test:
these tests register a small op of their own and check that the benchmarks, the GPU check's stages and the
offline compile list it with no change of theirs, and that the GPU check's code runs it end to end.
Also: kernels/ imports nothing from ddakern (the dependency is one-way), and the mask head's mask is the
op's reference mask.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import torch

from ddakern.ops import attention_residual as ar_op
from ddakern.ops import registry

ROOT = Path(__file__).resolve().parents[1]


def _toy_gate(x: torch.Tensor, logits: torch.Tensor, scale: torch.Tensor, residual: bool) -> torch.Tensor:
    """x * sigmoid(logits) * scale [+ x]: a plain-PyTorch op standing for a new fused one."""
    y = x * torch.sigmoid(logits) * scale.reshape(*scale.shape, 1, 1)
    return x + y if residual else y


def _toy_call(fn, t, variant: str) -> torch.Tensor:
    return fn(t["x"], t["logits"], t["scale"], variant == "residual")


TOY = registry.OpSpec(
    "toy_gate",
    _toy_gate,
    _toy_gate,
    _toy_call,
    variants=("plain", "residual"),
    checked="residual",
    inputs=(registry.Input("logits", "map"), registry.Input("scale", "rows", "fp32", ("uniform", 0.5, 1.5))),
)


@pytest.fixture
def toy_registered(monkeypatch: pytest.MonkeyPatch) -> registry.OpSpec:
    """The toy op registered beside the real ones (bench/ on the path, as bench/gpu_check.sh puts it)."""
    registry.ops()
    monkeypatch.setitem(registry._SPECS, TOY.name, TOY)
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    # inside gpu_check.sh's pytest part these name that part's soft deadline: the in-process gpu_check.main
    # below must not stop at it (a test started near it would fail, its rows skipped)
    monkeypatch.delenv("GPU_CHECK_DEADLINE_S", raising=False)
    monkeypatch.delenv("GPU_CHECK_PART_START", raising=False)
    return TOY


def test_registry_holds_the_ops_modules():
    assert registry.names() == ("attention_residual", "channel_attention")
    spec = registry.get("attention_residual")
    assert spec.grad_names == ("x", "logits", "weight", "bias") and spec.checked in spec.variants
    with pytest.raises(KeyError, match="no fused op 'nope'; registered: attention_residual, channel_attention"):
        registry.get("nope")


def test_a_new_op_is_listed_by_every_consumer(toy_registered):
    """The benchmark's parametrization, the GPU check's stages and the offline compile's quick cases take
    exactly the registered ops, the new one included."""
    import gpu_stage1
    import test_bench_kernels

    from bench import sm90_compile
    from ddakern import functional

    want = {"attention_residual", "channel_attention", "toy_gate"}
    assert {p.values[0] for p in test_bench_kernels.kernel_cases()} == want
    assert {(c.op, c.variant) for c in sm90_compile.quick_cases(shapes=[(64, 56)])} >= {
        ("toy_gate", "plain"), ("toy_gate", "residual")
    }  # fmt: skip
    assert {c.op for c in sm90_compile.quick_cases(shapes=[(64, 56)])} == want
    assert {row[0] for row in gpu_stage1.budget_plan("dry")} == want and functional.toy_gate is _toy_gate


def test_gpu_check_runs_a_new_op(toy_registered, tmp_path, monkeypatch):
    """bench/gpu_check.py and gpu_check.sh's stage 0 (dry run) check the new op with no change of their own:
    inputs, gradient names and bytes moved come from the op's description."""
    import gpu_stage0

    from bench import gpu_check
    from bench.stagefile import StageFile

    monkeypatch.setattr(registry, "_SPECS", {TOY.name: TOY})  # only the toy: a fast run
    monkeypatch.setattr(registry, "_discover", lambda: None)
    argv = ["--dry-run", "--no-sweep", "--hosts", "resnet34", "--dtypes", "fp32", "--out", str(tmp_path)]
    assert gpu_check.main(argv) == 0
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    rows = report["results"]
    assert {r["op"] for r in rows} == {"toy_gate"} and len(rows) == len(gpu_check.DRY_HOSTS["resnet34"])
    assert set(rows[0]["check"]["errors"]) == {"out", "dx", "dlogits", "dscale"}
    assert rows[0]["timing"]["fused"]["fwd_bwd_gbps"] > 0
    monkeypatch.setenv("GPU_CHECK_DRY_RUN", "1")
    stage = StageFile(tmp_path / "stage0.json")
    assert gpu_stage0.ops_check(stage, torch.device("cpu"))
    assert [r["op"] for r in stage.data["checks"]["ops"]["rows"]] == ["toy_gate"]


def test_example_bytes_and_state():
    """min_bytes counts every input once and the output (forward); the backward adds dy, the inputs again and
    one gradient per input. The state (running statistics) is restored by keeping_state."""
    ex = registry.get("attention_residual").example((2, 4, 3, 3), torch.float32, seed=1)
    big, small = 2 * 4 * 9 * 4, 4 * 4
    assert ex.min_bytes("fwd") == 3 * big + 2 * small
    assert ex.min_bytes("fwd+bwd") == 3 * big + 2 * small + big + 2 * (2 * big + 2 * small)
    before = [t.clone() for t in ex.state]
    ex.keeping_state(lambda: ex.run(ar_op.attention_residual))
    assert all(torch.equal(a, b) for a, b in zip(before, ex.state, strict=True))
    ex.run(ar_op.attention_residual)
    assert not torch.equal(before[0], ex.state[0])  # training mode updates the running mean


def _imports(path: Path) -> list[str]:
    """Every module a file imports (relative imports as written: '..ops._common', '._common')."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            found.append("." * node.level + (node.module or ""))
    return found


def test_kernels_never_import_ddakern():
    """ddakern imports kernels, never the other way round (and kernels/ works as `kernels` or `ddakern.kernels`)."""
    files = sorted((ROOT / "kernels").glob("*.py"))
    assert files
    for path in files:
        for name in _imports(path):
            assert not name.startswith(("ddakern", "..")), f"{path.name} imports {name}"


def test_mask_head_mask_is_the_ops_mask():
    """MaskHead.mask is attention_residual's reference mask: forward's x * (1 + m) with the same m, and one
    batch-norm statistics update per call, as nn.BatchNorm2d makes it."""
    from ddakern.layers.mask_head import MaskHead

    torch.manual_seed(3)
    head = MaskHead(6).train()
    x, u = torch.randn(2, 6, 4, 5), torch.randn(2, 6, 4, 5)
    bn = torch.nn.BatchNorm2d(6)
    bn.load_state_dict(head.bn.state_dict())
    want = torch.softmax(torch.relu(bn(head.conv(u))), dim=1)  # what the layer's math means
    m = head.mask(u)
    torch.testing.assert_close(m, want)
    torch.testing.assert_close(head.bn.running_mean, bn.running_mean)
    assert int(head.bn.num_batches_tracked) == 1
    head.eval()
    torch.testing.assert_close(x * (1 + head.mask(u)), head(x, u))
