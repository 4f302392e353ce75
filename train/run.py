"""`python -m train.run`: train, select, evaluate (with and without TTA) and report one model.

Exit codes: 0 finished (report written); 1 the run failed (non-finite loss, bad data, bad or missing
checkpoint, including a bad --resume file, a file that cannot be written such as on a full disk); 2 bad
command line or config, or an --out another run is using; 130 / 143 stopped by SIGINT / SIGTERM after
saving last.pt (continue with `--resume auto` or `--resume <out>/last.pt`).
Under torchrun every process runs this; rank 0 alone writes checkpoints and reports.
"""

from __future__ import annotations

import copy
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddakern.extras import TRAIN, require_at_start

require_at_start(TRAIN, "train", "train", __name__)  # one line, before any import that needs [train]

import torch

from ddakern.models import create

from . import checkpoint as ckpt_io
from .cli import Session, enable_fused_ops, run_entry, seed_everything, seed_rank
from .config import Config, ConfigError, inheritable, parse_cli, resolve
from .data.layouts import Layout
from .engine import Trainer
from .evaluate import EvalResult, evaluate_all
from .report import run_summary, write_json, write_outputs
from .sources import collect_skips, load_data, make_loaders, protocol, record_splits, settle_loader

log = logging.getLogger("train")


def configure(argv: Sequence[str]) -> tuple[Config, dict[str, Any] | None]:
    """Resolve the config; with --resume, the checkpoint's config is the base and the checkpoint is returned."""
    cli, toml = parse_cli(argv)
    cfg = resolve(cli, toml)
    if cfg.resume is None:
        return cfg, None
    if cfg.resume == "auto":
        path = ckpt_io.find_auto_resume(cfg.out, cfg.recipe, cfg.model)
        if path is None:
            where = ckpt_io.auto_resume_place(cfg.out, cfg.recipe, cfg.model)
            if os.environ.get("RANK", "0") == "0":  # one line per run, not per torchrun process
                print(f"--resume auto: no checkpoint under {where}: starting a new run", file=sys.stderr)
            return cfg, None
    else:
        path = Path(cfg.resume)
    ckpt = ckpt_io.load(path)
    cfg = resolve(cli, toml, base=inheritable(ckpt["config"]))
    # the run continues in the checkpoint's own folder, wherever it is resumed from or whatever --out says
    home = path.absolute().parent
    if cli.get("out") is not None and Path(cli["out"]).absolute() != home:
        print(f"--resume {path}: continuing in the checkpoint's folder {home}, not --out {cli['out']}", file=sys.stderr)
    cfg.out, cfg.resume = str(home), str(path)
    saved = ckpt.get("dataset") or ckpt["config"].get("recipe")
    # built-in runs saved before the built-in set became a layout of its own recorded its FER2013 format
    renamed = cfg.builtin and ckpt.get("dataset") == "fer2013" and cfg.dataset == "synthetic"
    if ckpt.get("dataset") is not None and ckpt["dataset"] != cfg.dataset and not renamed:
        raise ckpt_io.CheckpointError(f"{path}: checkpoint was trained on {saved}, this run reads {cfg.dataset}")
    return cfg, ckpt


def build_net(cfg: Config, num_classes: int, device: torch.device) -> torch.nn.Module:
    """The model from ddakern's registry (fused ops routed through the --ops-backend)."""
    enable_fused_ops(cfg)
    kwargs = cfg.dda_options if cfg.model.endswith("_dda") else {}
    net = create(
        cfg.model,
        num_classes=num_classes,
        pretrained=cfg.pretrained,
        dda_stages=cfg.dda_stages,
        dropout=cfg.dropout,
        fused_ops=cfg.fused_ops,
        recompute=cfg.recompute,
        **kwargs,
    )
    return net.to(device)


def mean_class_accuracy(r: EvalResult) -> float | None:
    """Mean of the per-class accuracies (the AffectNet convention), classes without samples left out."""
    values = [v for v in r.per_class_accuracy(range(r.confusion.shape[0])).values() if v is not None]
    return sum(values) / len(values) if values else None


def log_memory_estimate(cfg: Config, net: torch.nn.Module, device: torch.device) -> None:
    """The run header's memory line: ddakern.memory's estimate for this model, mode and batch (CPU forwards)."""
    from ddakern import dispatch, memory

    amp = cfg.amp if cfg.amp in memory.AMP_DTYPES else "none"
    probe = copy.deepcopy(net).cpu()
    # the probe runs on the CPU: where the run's fused ops take the Triton kernels (--ops-backend triton, or
    # auto on CUDA) it measures through the fused ops' torch backend, which saves the same tensors for
    # backward (Triton refuses CPU tensors outside the interpreter; auto on the CPU would pick the unfused
    # reference for the probe's small batches and overstate the figure)
    mode = dispatch.current_mode()
    fused_on_gpu = (mode == "triton" and not dispatch.triton_interpreting()) or (
        mode == "auto" and device.type == "cuda"
    )
    on_cpu = "torch" if fused_on_gpu else mode
    with dispatch.use_ops_backend(on_cpu):
        (est,) = memory.measure(probe, cfg.image_size, amp, modes=[cfg.recompute])
    log.info(
        f"memory estimate ({cfg.recompute} recompute, amp {amp}): {est.per_image / 2**20:.1f} MiB activations per "
        f"image, {est.total(cfg.batch_size) / 2**30:.2f} GiB per step at batch {cfg.batch_size} "
        f"(weights, gradients, {cfg.optimizer} state included)"
    )


def finish(trainer: Trainer, session: Session, outcome: str, data: Layout) -> dict[str, Any] | None:
    """Evaluate the selected checkpoint on the test split (plain and TTA) and write the report (rank 0)."""
    cfg, env = session.cfg, session.env
    trainer.load_best()
    kw = dict(env=env, num_classes=trainer.num_classes, autocast=trainer.autocast, channels_last=cfg.channels_last)
    test, tta = evaluate_all(trainer.model, trainer.loaders, cfg.tta, **kw)
    skips = collect_skips(cfg, env, trainer.loaders)
    if not env.is_main:
        return None
    if skips.count:
        log.warning(f"end of run: {skips.line()}")
    s = trainer.state
    summary = run_summary(session, outcome, protocol(cfg, data), s, test, tta, trainer.class_names, data.splits)
    summary["layout"] = data.name
    summary["data"] = {"skip_bad": cfg.skip_bad, "skipped_during_training": skips.summary(), **data.facts}
    summary["test"]["mean_class_accuracy"] = mean_class_accuracy(test)
    summary["selected_weights"] = s.best_weights  # raw, or the EMA (--ema) when they validated better
    shown = tta if tta is not None else test
    title = f"{cfg.recipe} test, {cfg.model}, epoch {s.best_epoch}" + (
        f", TTA {cfg.tta_views} views" if tta is not None else ""
    )
    write_outputs(session.out, summary, shown, title + f": {shown.accuracy:.2f}%", s.history)
    return summary


def check_batches(cfg: Config, env: Any, splits: dict) -> None:
    """An epoch without a single full batch (training drops the incomplete last one) would train nothing and
    still report a model: refuse it before anything is written."""
    n = len(splits["train"])
    if n // env.world_size < cfg.batch_size:
        per = f" x {env.world_size} processes" if env.world_size > 1 else ""
        raise ConfigError(
            f"--batch-size {cfg.batch_size}{per} is larger than the training set ({n} images): no full batch "
            f"to train on; use --batch-size {max(1, n // env.world_size)} or less"
        )


def train(ckpt: dict[str, Any] | None, session: Session) -> int:
    """The body of train.run: data, model, loaders, training, final evaluation and report."""
    cfg, env, out = session.cfg, session.env, session.out
    data = load_data(cfg, env)
    splits = data.splits
    check_batches(cfg, env, splits)
    class_names = splits["train"].class_names
    session.loader, loader_reason = settle_loader(cfg, env, session.loader, splits["train"])
    if env.is_main:
        write_json(out / "config.json", cfg.to_dict())
        record_splits(out, data)
        sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
        log.info(
            f"run folder {out} | {cfg.recipe} ({cfg.dataset}) {sizes} "
            f"| {cfg.model} on {env.device} x{env.world_size} | loader {session.loader} ({loader_reason})"
        )
    seed_everything(cfg.seed)
    net = build_net(cfg, len(class_names), env.device)
    if env.is_main and cfg.memory_estimate:
        log_memory_estimate(cfg, net, env.device)
    seed_rank(cfg.seed, env.rank)
    if ckpt is not None and list(ckpt["class_names"]) != list(class_names):
        raise ckpt_io.CheckpointError(
            f"{cfg.resume}: checkpoint classes ({', '.join(ckpt['class_names'])}) are not the data's "
            f"({', '.join(class_names)}); resume it on the data set it was trained on"
        )
    loaders = make_loaders(cfg, env, splits, session.loader)
    replay = session.loader == "dali" and cfg.augment != "none"
    trainer = Trainer(cfg, env, net, class_names, loaders, out, splits["train"].labels, replay)
    if ckpt is not None:
        trainer.restore(ckpt)
        log.info(f"resumed from {cfg.resume}: epoch {ckpt['epoch'] + 1}, step {ckpt['step']}")
    summary = finish(trainer, session, trainer.fit(), data)
    if summary is not None:
        acc = f"test accuracy {summary['test_accuracy']:.2f}%"
        if summary["test_accuracy_tta"] is not None:
            acc += f", with {cfg.tta_views}-view TTA {summary['test_accuracy_tta']:.2f}%"
        print(
            f"report: {out / 'summary.json'} ({acc}; selected epoch {summary['selected_epoch']}"
            + (f", {summary['selected_weights']} weights)" if cfg.ema is not None else ")")
        )
        print(f"plots: {out / 'curves.png'}, {out / 'confusion_matrix.png'}; checkpoints: {out}/best.pt, last.pt")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (see the module docstring)."""
    return run_entry(
        argv,
        configure,
        train,
        folder_stem=lambda cfg, job: f"{cfg.recipe}-{cfg.model}",
        stop_hint="continue with --resume {path}",
    )


if __name__ == "__main__":
    sys.exit(main())
