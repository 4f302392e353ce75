"""--sync-bn reaches DDA's mask heads: their batch statistics span every rank (ddakern.ops.sync_bn).

The mask head normalises inside ddakern.ops.attention_residual from its batch norm's parameters, so
nn.SyncBatchNorm.convert_sync_batchnorm alone would leave each rank normalising its own shard.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from ddp_launch import ROOT, two_ranks
from torch import nn

from ddakern.layers import DDA, MaskHead

RTOL = 1e-5  # fp32: max |difference| over max |value|


def test_mask_head_sync_bn_equals_one_process_on_the_union(tmp_path) -> None:
    out = tmp_path / "sync"
    p = two_ranks(str(ROOT / "tests" / "sync_bn_worker.py"), str(out), timeout=240)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    worst: dict[str, float] = {}
    for rank in (0, 1):
        result = json.loads(Path(f"{out}.rank{rank}").read_text(encoding="utf-8"))
        assert {"unfused", "torch"} <= set(result)
        for case, diffs in result.items():
            for name, (abs_err, rel_err) in diffs.items():
                worst[name] = max(worst.get(name, 0.0), abs_err)
                assert rel_err <= RTOL, f"rank {rank} {case} {name}: max abs {abs_err:.3g}, rel {rel_err:.3g}"
    print("sync-bn vs one process on the union, max abs difference:", worst)


def test_every_batch_norm_is_called_or_synchronised_by_its_op() -> None:
    """After conversion, each batch norm of a DDA block either runs as a module (torch syncs it) or is
    the mask head's, whose op takes the group (the two-process test): none is read without syncing."""
    net = nn.SyncBatchNorm.convert_sync_batchnorm(DDA(8, 2, width=8, spatial_width=8))
    called: set[nn.Module] = set()
    for m in net.modules():
        if isinstance(m, nn.SyncBatchNorm):
            m.register_forward_hook(lambda mod, *_: called.add(mod))
    heads = {m.bn for m in net.modules() if isinstance(m, MaskHead)}
    net.train()(torch.randn(2, 8, 8, 8))  # no process group: SyncBatchNorm runs as BatchNorm2d
    bns = {m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)}
    assert all(isinstance(m, nn.SyncBatchNorm) for m in bns)
    assert heads and bns - called == heads
