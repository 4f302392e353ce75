"""The modern methods (train.methods, --sam/--ema/--mixup/--cutmix/--random-erasing/--label-smoothing/
--scheduler cosine/--accumulate) and TensorBoard: each method's update checked against a reference, SAM
under AMP, --fused-ops, --recompute and DDP, and a bitwise resume with all of them on."""

from __future__ import annotations

import copy
import json
import signal
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import train.run as train_run
from ddakern.models import create
from train import checkpoint, debug
from train.config import ConfigError, resolve
from train.evaluate import EvalResult
from train.methods.mixing import BatchMixing
from train.methods.schedule import make_scheduler
from train.recipes import RECIPES
from train.run import main
from train.tensorboard_log import open_event_log

sys.path.insert(0, str(Path(__file__).parent))
from ddp_launch import two_ranks  # noqa: E402
from modern_helpers import DDP_OPTIONS, PerRankMixing, batches, bn_net, mlp, trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
pytest.importorskip("pytorch_optimizer")
pytest.importorskip("timm")


def small_dda(seed: int = 0, **kw) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create("resnet18_dda", num_classes=7, dda_stages=(4,), width=16, spatial_width=16, dropout=0.0, **kw)


def params(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


# ---- SAM -------------------------------------------------------------------------------------------------
def test_sam_update_is_pytorch_optimizers_sam_and_moves_batch_norm_once() -> None:
    """The engine's SAM update = pytorch-optimizer's own first_step/second_step recipe (POSTER++'s loop),
    except that batch-norm running statistics move once (pass 1), not twice."""
    import pytorch_optimizer as po

    net = bn_net()
    ref, once = copy.deepcopy(net), copy.deepcopy(net)
    ((x, y),) = batches(1, 6, seed=1)
    t = trainer(net, sam="sam", sam_rho=0.05, optimizer="adam", lr=1e-2, weight_decay=0.0)
    t._step(x, y)

    sam = po.SAM(ref.parameters(), torch.optim.Adam, rho=0.05, lr=1e-2, foreach=True)
    ref.train()
    F.cross_entropy(ref(x), y).backward()
    sam.first_step(zero_grad=True)
    F.cross_entropy(ref(x), y).backward()
    sam.second_step(zero_grad=True)
    once.train()
    with torch.no_grad():
        once(x)  # one forward: the running statistics an update should leave
    got, want, stats = params(net), params(ref), params(once)
    for k in got:
        if "running" in k or "num_batches" in k:
            assert torch.equal(got[k], stats[k]), k
            assert k.endswith("num_batches_tracked") or not torch.equal(got[k], want[k]), k  # ref moved twice
        else:
            torch.testing.assert_close(got[k], want[k], rtol=1e-5, atol=1e-6, msg=k)
    assert any(not torch.equal(got[k], stats[k]) for k in got if "weight" in k)  # it did train


def test_asam_is_the_adaptive_variant() -> None:
    a, b = mlp(), mlp()
    ((x, y),) = batches(1, 4, seed=2)
    trainer(a, sam="sam", lr=1e-2)._step(x, y)
    t = trainer(b, sam="asam", lr=1e-2)
    assert t.sam.param_groups[0]["adaptive"] is True
    t._step(x, y)
    assert any(not torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))


def test_sam_under_fp16_grad_scaler_matches_unscaled_and_skips_overflow() -> None:
    """fp16 autocast on the CPU: with its GradScaler the update equals the same update without scaling
    (the scale is a power of two: unscaling is exact), and an overflowing scale skips the whole update --
    weights back where they were, no NaN -- and lowers the scale."""
    ((x, y),) = batches(1, 4, seed=4)
    scaled, plain = mlp(), mlp()
    ts = trainer(scaled, sam="sam", amp="fp16", lr=1e-2)
    tp = trainer(plain, sam="sam", amp="fp16", lr=1e-2)
    tp.scaler = torch.amp.GradScaler("cpu", enabled=False)
    assert ts.scaler.is_enabled()
    ts._step(x, y)
    tp._step(x, y)
    for (k, p), q in zip(scaled.named_parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-7, msg=k)

    over = bn_net()  # with batch norm: pass 2 at NaN weights wrote NaN into its frozen statistics
    before = params(over)
    t = trainer(over, sam="sam", amp="fp16", lr=1e-2)
    t.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**100)  # pass 1 overflows in fp16
    t._step(x, y)
    for k, v in params(over).items():
        if "running" in k or "num_batches" in k:  # pass 1 moved them once, as any skipped AMP step does
            assert torch.isfinite(v.float()).all(), k
        else:
            assert torch.equal(v, before[k]), k
    assert t.scaler.get_scale() < 2.0**100
    assert not t.sam.state or all("old_p" not in s for s in t.sam.state.values())
    assert t._check(0) == 0  # no NaN loss noted: the run goes on (it ended with "non-finite loss")
    t._step(x, y)  # and the next update, at the lowered scale, trains
    assert all(torch.isfinite(p).all() for p in over.parameters())


def test_sam_under_bf16_autocast_trains_close_to_fp32() -> None:
    ((x, y),) = batches(1, 4, seed=5)
    a, b, start = mlp(), mlp(), params(mlp())
    trainer(a, sam="sam", amp="bf16", lr=1e-2)._step(x, y)
    trainer(b, sam="sam", lr=1e-2)._step(x, y)
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        assert torch.isfinite(p).all() and not torch.equal(p, start[k])
        torch.testing.assert_close(p, q, rtol=0, atol=2e-3, msg=k)


def test_sam_with_fused_ops_and_recompute_matches_the_plain_update() -> None:
    """One SAM update of a DDA model with the fused ops (torch backend) and with activation recomputation
    equals the plain one: recomputation to rounding, the fused ops within 1% of the update (their rounding,
    5e-6 of a plain update, grows through SAM's perturbation to about 1e-3; SAM against no SAM differs by
    100%), batch-norm running statistics moved once in both."""
    import ddakern

    ((x, y),) = batches(1, 4, seed=6, image=64)
    start = params(small_dda())

    def update(**option) -> tuple[dict, dict]:
        with ddakern.use_ops_backend("torch"):
            net = small_dda(**option)
            trainer(net, sam="sam", optimizer="sgd", lr=1e-3, **option)._step(x, y)
        p = params(net)
        steps = {k: p[k] - start[k] for k in p if p[k].is_floating_point() and "running" not in k}
        return steps, {k: p[k] for k in p if "running" in k or "num_batches" in k}

    def relative(a: dict, b: dict) -> float:
        return float(sum(((a[k] - b[k]) ** 2).sum() for k in a) ** 0.5 / sum((b[k] ** 2).sum() for k in b) ** 0.5)

    plain, plain_stats = update()
    for option, tolerance in (({"fused_ops": True}, 1e-2), ({"recompute": "all"}, 1e-6)):
        steps, stats = update(**option)
        assert relative(steps, plain) < tolerance, option
        for k, v in stats.items():
            torch.testing.assert_close(v, plain_stats[k], rtol=1e-4, atol=1e-5, msg=f"{option} {k}")


def test_ddp_sam_accumulation_and_batch_methods_equal_one_process_on_the_union(tmp_path) -> None:
    """2 gloo processes, each on half of every batch, SAM + --accumulate 2 + RandomErasing, mixup/cutmix,
    label smoothing and EMA through the Trainer's DDP model: both ranks end with the weights (and the EMA)
    of one process training on the whole batches, each half erased and mixed as its rank did. That needs
    both SAM passes' gradients all-reduced once per update (not per micro-batch), each rank mixing only
    its own images, and the EMA updated once per step from the all-reduced weights."""
    out = tmp_path / "params"
    p = two_ranks(str(ROOT / "tests" / "modern_ddp_worker.py"), str(out))
    assert p.returncode == 0, p.stderr[-3000:]
    ref = trainer(mlp(), **DDP_OPTIONS)
    ref.mixing.prepare = PerRankMixing(ref.mixing.prepare)
    data = batches(4, 8, seed=3)
    ref._update(data[:2], 0)
    ref._update(data[2:], 2)
    want = params(ref.net)
    want.update({f"ema.{k}": v for k, v in ref.ema.state_dict().items()})
    assert any(not torch.equal(want[k], want[f"ema.{k}"]) for k in params(ref.net))  # the EMA lags the weights
    ranks = [torch.load(f"{out}.rank{r}") for r in (0, 1)]
    assert ranks[0].keys() == want.keys()
    for k in want:
        assert torch.equal(ranks[0][k], ranks[1][k]), k
        torch.testing.assert_close(ranks[0][k], want[k], rtol=1e-5, atol=1e-6, msg=k)


# ---- accumulation, EMA selection, mixing, schedule ---------------------------------------------------------
def test_accumulation_equals_one_update_on_the_whole_batch() -> None:
    a, b = mlp(), mlp()
    (x1, y1), (x2, y2) = batches(2, 4, seed=7)
    trainer(a, accumulate=2)._update([(x1, y1), (x2, y2)], 0)
    trainer(b)._update([(torch.cat([x1, x2]), torch.cat([y1, y2]))], 0)
    for (k, p), q in zip(a.named_parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=k)


def test_ema_selection_says_which_weights_won_and_best_pt_holds_them(tmp_path) -> None:
    net = mlp()
    t = trainer(net, ema=0.5, out=tmp_path)
    ((x, y),) = batches(1, 4, seed=8)
    t._step(x, y)
    assert any(not torch.equal(p, q) for p, q in zip(net.parameters(), t.ema.module.parameters()))

    def result(acc: float) -> EvalResult:
        import numpy as np

        return EvalResult(0.0, int(acc), 100, np.zeros((7, 7), dtype=int), 0.0)

    row: dict = {}
    assert t._select(row, result(50), 0, result(60))
    assert (t.state.best_weights, t.state.best_metric, row["best_weights"]) == ("ema", 60, "ema")
    t.save("best.pt", weights="ema")
    t.save("last.pt")
    best, last = checkpoint.load(tmp_path / "best.pt"), checkpoint.load(tmp_path / "last.pt")
    ema, raw = t.ema.state_dict(), net.state_dict()
    for k in raw:  # inference loads "model": the selected weights; a resume loads the raw ones
        assert torch.equal(best["model"][k], ema[k]) and torch.equal(best["raw_model"][k], raw[k])
        assert torch.equal(last["model"][k], raw[k]) and torch.equal(last["ema"][k], ema[k])
    assert best["selected_weights"] == "ema" and best["best_weights"] == "ema" and last["selected_weights"] == "raw"
    again = trainer(mlp(seed=1), ema=0.5)
    again.restore(best)
    for k in raw:
        assert torch.equal(again.net.state_dict()[k], raw[k]) and torch.equal(again.ema.state_dict()[k], ema[k])
    assert again.state.best_weights == "ema"
    assert not t._select({}, result(70), 1, result(70)) or t.state.best_weights == "raw"  # a tie: raw


def test_random_erasing_mixup_and_label_smoothing() -> None:
    cfg = resolve({"random_erasing": 1.0, "erasing_min_area": 0.2, "erasing_max_area": 0.2}, {})
    x = torch.rand(4, 3, 16, 16) + 1.0  # no zeros before
    erased, y = BatchMixing(cfg, 7, torch.device("cpu")).prepare(x.clone(), torch.arange(4))
    zeros = (erased == 0).all(1).flatten(1).sum(1)
    assert ((zeros >= 0.1 * 256) & (zeros <= 0.3 * 256)).all(), zeros  # one block of about 20% per image
    assert torch.equal(y, torch.arange(4))

    cfg = resolve({"mixup": 0.4, "cutmix": 1.0, "label_smoothing": 0.1}, {})
    mixing = BatchMixing(cfg, 7, torch.device("cpu"))
    x, y = torch.rand(4, 3, 16, 16), torch.tensor([0, 1, 2, 3])
    xm, target = mixing.prepare(x.clone(), y)
    assert target.shape == (4, 7) and torch.allclose(target.sum(1), torch.ones(4))
    assert target.min() > 0  # label smoothing folded into the soft targets, as timm does
    logits = torch.randn(4, 7)
    torch.testing.assert_close(mixing.loss(logits, target, None), (-target * logits.log_softmax(1)).sum(1).mean())

    cfg = resolve({"label_smoothing": 0.2}, {})
    mixing = BatchMixing(cfg, 7, torch.device("cpu"))
    assert not mixing.active
    torch.testing.assert_close(mixing.loss(logits, y, None), F.cross_entropy(logits, y, label_smoothing=0.2))
    with pytest.raises(ConfigError, match="even"):
        resolve({"mixup": 0.2, "batch_size": 7}, {})


def test_cosine_schedule_warms_up_then_decays_per_epoch() -> None:
    cfg = resolve({"scheduler": "cosine", "warmup_epochs": 2, "epochs": 10, "lr": 1e-3, "min_lr": 1e-5}, {})
    opt = torch.optim.SGD(mlp().parameters(), lr=cfg.lr)
    sched = make_scheduler(cfg, opt)
    lrs = [opt.param_groups[0]["lr"]]
    for e in range(1, 10):
        sched.step(e)
        lrs.append(opt.param_groups[0]["lr"])
    assert lrs[0] == pytest.approx(1e-5) and lrs[1] == pytest.approx((1e-5 + 1e-3) / 2) and lrs[1] < lrs[2] < cfg.lr
    assert all(a > b for a, b in zip(lrs[2:], lrs[3:])) and lrs[-1] > cfg.min_lr
    with pytest.raises(ConfigError, match="warmup"):
        resolve({"warmup_epochs": 2}, {})


# ---- recipes, TensorBoard --------------------------------------------------------------------------------
def test_modern_recipes_name_a_source_for_every_value_they_change() -> None:
    for name in ("rafdb-modern", "fer2013-modern", "affectnet7-modern", "synthetic-modern"):
        recipe, base = RECIPES[name], RECIPES[name.replace("-modern", "")]
        assert (recipe.family, recipe.num_classes, recipe.builtin) == (base.family, base.num_classes, base.builtin)
        changed = {k for k, v in recipe.values.items() if base.values.get(k, resolve({}, {}).__dict__[k]) != v}
        assert changed and changed <= set(recipe.sources), (name, changed - set(recipe.sources))
        assert all(".py" in s for s in recipe.sources.values()), name  # the repository file of each value
        assert resolve({"recipe": name, "data_root": "/x"}, {}).sam == "sam"


def test_tensorboard_absent_is_one_line_and_no_writer(tmp_path, monkeypatch, caplog) -> None:
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails as if not installed
    with caplog.at_level("INFO", logger="train"):
        assert open_event_log(tmp_path, True, True) is None
    assert "tensorboard: not installed" in caplog.text and not (tmp_path / "tb").exists()
    assert open_event_log(tmp_path, False, True) is None and open_event_log(tmp_path, True, False) is None


# ---- everything on: checkpoint contents and a bitwise resume ---------------------------------------------
TINY = [
    "--recipe", "synthetic-modern", "--model", "resnet18", "--image-size", "32", "--batch-size", "8",
    "--epochs", "2", "--synthetic-train", "48", "--synthetic-val", "8", "--synthetic-test", "8",
    "--augment", "fer2013", "--no-tta", "--loader", "torch", "--workers", "0", "--no-progress", "--device", "cpu",
    "--no-memory-estimate", "--ema", "0.8", "--scheduler", "cosine", "--warmup-epochs", "1", "--accumulate", "2",
    "--mixup", "0.2", "--cutmix", "0.2", "--label-smoothing", "0.1", "--sam", "asam",
]  # fmt: skip
# 48 / 8 = 6 batches per epoch, 3 updates of 2; RandomErasing 0.5 and SAM from the recipe, ASAM here


def test_all_methods_resume_bitwise_and_checkpoint_their_state(tmp_path, monkeypatch) -> None:
    """train.run end to end with a tiny convolutional model in place of the registry's (the engine is what is
    tested; a ResNet would make this test 30x slower)."""
    monkeypatch.setattr(train_run, "build_net", lambda cfg, n, device: bn_net(seed=cfg.seed).to(device))
    data, a, b = tmp_path / "data", tmp_path / "straight", tmp_path / "resumed"
    args = [*TINY, "--data-root", str(data)]
    assert main([*args, "--out", str(a)]) == 0

    # stop at global step 8 (epoch 2, mid-epoch): the hook raises SIGTERM in-process instead of waiting
    monkeypatch.setattr(debug, "wait_for_signal", lambda *_: signal.raise_signal(signal.SIGTERM))
    assert main([*args, "--out", str(b), "--debug-wait-at-step", "8"]) == 128 + signal.SIGTERM
    saved = checkpoint.load(b / "last.pt")
    assert saved["epoch"] == 1 and 0 < saved["step"] < 6 and saved["step"] % 2 == 0
    for key in ("ema", "optimizer", "scheduler", "scaler", "rng", "best_weights"):
        assert saved.get(key) is not None, key
    assert "rho" in saved["optimizer"]["param_groups"][0]  # SAM's state (its base optimiser's moments inside)
    assert saved["optimizer"]["state"] and saved["scheduler"]["warmup_t"] == 1
    assert main(["--resume", "auto", "--out", str(b)]) == 0

    ca, cb = checkpoint.load(a / "last.pt"), checkpoint.load(b / "last.pt")
    assert ca["global_step"] == cb["global_step"] == 12
    for part in ("model", "ema"):
        for k in ca[part]:
            assert torch.equal(ca[part][k], cb[part][k]), (part, k)
    sa, sb = ca["optimizer"]["state"], cb["optimizer"]["state"]
    assert sa.keys() == sb.keys()
    for i in sa:
        for k in sa[i]:
            assert torch.equal(torch.as_tensor(sa[i][k]), torch.as_tensor(sb[i][k])), (i, k)
    assert ca["scheduler"] == cb["scheduler"]
    rows = [[json.loads(r) for r in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b)]
    keys = ("epoch", "lr", "train_loss", "train_acc", "val_acc", "val_acc_ema", "best_weights")
    assert [[r[k] for k in keys] for r in rows[0]] == [[r[k] for k in keys] for r in rows[1]]
    assert rows[0][0]["lr"] == pytest.approx(1e-3 * 0.01)  # warm-up epoch of the cosine schedule

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(a / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"loss/train", "accuracy/val", "accuracy/val_ema", "lr", "throughput/train_images_per_s"} <= tags
    assert [e.step for e in acc.Scalars("loss/train")] == [1, 2]
    summary = json.loads((a / "summary.json").read_text())
    assert summary["selected_weights"] in ("raw", "ema") and summary["selected_weights"] == ca["best_weights"]


def test_each_rank_erases_and_mixes_with_its_own_draws() -> None:
    """torchrun ranks start from one seed (the same initial weights); once the model is built each draws
    from seed + rank in all three generators RandomErasing, mixup/cutmix and dropout use (only torch's was
    re-seeded: every rank erased and mixed its images with the same draws). Rank 0 keeps the seed's."""
    import random

    import numpy as np

    from train.cli import seed_everything, seed_rank

    def draws() -> tuple:
        return random.random(), float(np.random.rand()), float(torch.rand(()))

    seed_everything(5)
    seed_rank(5, 0)
    rank0 = draws()
    seed_everything(5)
    seed_rank(5, 1)
    rank1 = draws()
    seed_everything(5)
    assert draws() == rank0
    assert all(a != b for a, b in zip(rank0, rank1))
    seed_everything(6)
    assert draws() == rank1
