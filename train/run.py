"""`python -m train.run`: train, select, evaluate (with and without TTA) and report one model.

Exit codes: 0 finished (report written); 1 the run failed (non-finite loss, bad data, bad checkpoint);
2 bad command line or config; 130 / 143 stopped by SIGINT / SIGTERM after saving last.pt (continue
with `--resume auto` or `--resume <out>/last.pt`).
Under torchrun every process runs this; rank 0 alone writes checkpoints and reports.
"""

from __future__ import annotations

import logging
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddakern.models import create
from ddakern.models.weights import WeightsError
from train import checkpoint as ckpt_io
from train.config import Config, ConfigError, parse_cli, resolve
from train.data import DataError
from train.distributed import DistEnv, broadcast_object, cleanup, setup
from train.engine import NonFiniteLoss, StopRequested, Trainer
from train.evaluate import EvalResult, evaluate, evaluate_tta
from train.report import peak_memory, plot_confusion, plot_curves, write_json
from train.sources import load_data, make_loaders, protocol, resolve_loader

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
            print("--resume auto: no last.pt found; starting a new run", file=sys.stderr)
            return cfg, None
    else:
        path = Path(cfg.resume)
    ckpt = ckpt_io.load(path)
    # debug switches and the resume source apply to one invocation only
    base = {k: v for k, v in ckpt["config"].items() if not k.startswith("debug_") and k != "resume"}
    base["out"] = base.get("out") or str(path.parent)
    cfg = resolve(cli, toml, base=base)
    cfg.resume = str(path)
    return cfg, ckpt


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def out_dir(cfg: Config, env: DistEnv) -> Path:
    """--out, or runs/<recipe>-<model>-<timestamp> chosen by rank 0."""
    if cfg.out is None:
        cfg.out = broadcast_object(f"runs/{cfg.recipe}-{cfg.model}-{time.strftime('%Y%m%d-%H%M%S')}", env)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    return out


def build_net(cfg: Config, num_classes: int, device: torch.device) -> torch.nn.Module:
    """The model from ddakern's registry (fused ops routed through use_kernels(cfg.kernels))."""
    if cfg.fused_kernels:
        import ddakern

        ddakern.use_ops_backend(cfg.kernels)
    kwargs = cfg.dda_options if cfg.model.endswith("_dda") else {}
    net = create(
        cfg.model,
        num_classes=num_classes,
        pretrained=cfg.pretrained,
        dda_stages=cfg.dda_stages,
        dropout=cfg.dropout,
        fused_ops=cfg.fused_kernels,
        **kwargs,
    )
    return net.to(device)


def _result(r: EvalResult, class_names: tuple[str, ...]) -> dict[str, Any]:
    return {
        "accuracy": r.accuracy,
        "loss": r.loss,
        "images": r.total,
        "per_class_accuracy": r.per_class_accuracy(class_names),
        "confusion_matrix": r.confusion.tolist(),
        "images_per_s": r.images_per_s,
    }


def finish(
    trainer: Trainer, cfg: Config, env: DistEnv, outcome: str, splits: dict, started: float
) -> dict[str, Any] | None:
    """Evaluate the selected checkpoint on the test split (plain and TTA) and write the report."""
    trainer.load_best()
    kw = dict(env=env, num_classes=trainer.num_classes, autocast=trainer.autocast, channels_last=cfg.channels_last)
    test = evaluate(trainer.model, trainer.loaders["test"], **kw)
    tta = evaluate_tta(trainer.model, trainer.loaders["tta"], **kw) if cfg.tta else None
    out = trainer.out
    if not env.is_main:
        return None
    names = trainer.class_names
    s = trainer.state
    summary: dict[str, Any] = {
        "status": outcome,
        "recipe": cfg.recipe,
        "dataset": cfg.dataset,
        "model": cfg.model,
        "protocol": protocol(cfg),
        "selected_epoch": s.best_epoch,
        "best_val_accuracy": s.best_acc,
        "epochs_run": len(s.history),
        "test_accuracy": test.accuracy,
        "test_accuracy_tta": None if tta is None else tta.accuracy,
        "tta_views": cfg.tta_views if tta is not None else 0,
        "tta_augment": cfg.tta_views_recipe if tta is not None else None,
        "test": _result(test, names),
        "test_tta": None if tta is None else _result(tta, names),
        "class_names": list(names),
        "samples": {k: len(v) for k, v in splits.items()},
        "skipped_samples": {k: int(v.skipped) for k, v in splits.items()},
        "train_images_per_s": s.train_images / s.train_seconds if s.train_seconds > 0 else 0.0,
        "eval_images_per_s": test.images_per_s,
        "tta_images_per_s": None if tta is None else tta.images_per_s,
        "peak_memory": peak_memory(env.device),
        "wall_seconds": time.perf_counter() - started,
        "world_size": env.world_size,
        "device": str(env.device),
        "loader": resolve_loader(cfg.loader),
        "fused_kernels": cfg.fused_kernels,
        "kernels": cfg.kernels if cfg.fused_kernels else None,
        "amp": cfg.amp,
        "checkpoint": str(out / "best.pt"),
    }
    shown = tta if tta is not None else test
    title = f"{cfg.recipe} test, {cfg.model}, epoch {s.best_epoch}" + (
        f", TTA {cfg.tta_views} views" if tta is not None else ""
    )
    plot_confusion(out / "confusion_matrix.png", shown.confusion, names, title + f": {shown.accuracy:.2f}%")
    plot_curves(out / "curves.png", s.history)
    write_json(out / "summary.json", summary)
    return summary


RUN_FAILURES = (NonFiniteLoss, DataError, WeightsError, ckpt_io.CheckpointError)
"""Errors that end a run with one line and exit code 1."""


def print_failure(e: BaseException) -> int:
    """Print `error: <one line>` on stderr; the exit code: 2 for bad options, 1 for a failed run."""
    print(f"error: {e}", file=sys.stderr)
    return 2 if isinstance(e, ConfigError) else 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (see the module docstring)."""
    started = time.perf_counter()
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        cfg, ckpt = configure(argv)
    except (ConfigError, ckpt_io.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    env = setup(cfg.device)
    logging.basicConfig(
        level=logging.INFO if env.is_main else logging.WARNING, format="%(message)s", stream=sys.stderr, force=True
    )
    try:
        if cfg.sync_bn and env.distributed and env.device.type != "cuda":
            raise ConfigError("--sync-bn needs CUDA devices (torch's SyncBatchNorm has no CPU implementation)")
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        out = out_dir(cfg, env)
        splits = load_data(cfg, env)
        class_names = splits["train"].class_names
        if env.is_main:
            write_json(out / "config.json", cfg.to_dict())
            sizes = ", ".join(f"{k} {len(v)}" for k, v in splits.items())
            log.info(
                f"run folder {out} | {cfg.recipe} ({cfg.dataset}) {sizes} "
                f"| {cfg.model} on {env.device} x{env.world_size} | loader {resolve_loader(cfg.loader)}"
            )
        seed_everything(cfg.seed)
        net = build_net(cfg, len(class_names), env.device)
        if env.rank:
            torch.manual_seed(cfg.seed + env.rank)  # distinct dropout streams per rank
        loaders = make_loaders(cfg, env, splits)
        replay = resolve_loader(cfg.loader) == "dali" and cfg.augment != "none"
        trainer = Trainer(cfg, env, net, class_names, loaders, out, splits["train"].labels, replay)
        if ckpt is not None:
            trainer.restore(ckpt)
            log.info(f"resumed from {cfg.resume}: epoch {ckpt['epoch'] + 1}, step {ckpt['step']}")
        outcome = trainer.fit()
        summary = finish(trainer, cfg, env, outcome, splits, started)
        if summary is not None:
            acc = f"test accuracy {summary['test_accuracy']:.2f}%"
            if summary["test_accuracy_tta"] is not None:
                acc += f", with {cfg.tta_views}-view TTA {summary['test_accuracy_tta']:.2f}%"
            print(f"report: {out / 'summary.json'} ({acc}; selected epoch {summary['selected_epoch']})")
            print(f"plots: {out / 'curves.png'}, {out / 'confusion_matrix.png'}; checkpoints: {out}/best.pt, last.pt")
        return 0
    except StopRequested as e:
        if env.is_main:
            print(f"{e}; continue with --resume {e.path}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # outside the training loop (setup, final evaluation): nothing new to save
        print("interrupted outside the training loop; checkpoints already written are kept", file=sys.stderr)
        return 130
    except (ConfigError, *RUN_FAILURES) as e:
        return print_failure(e)
    finally:
        cleanup()


if __name__ == "__main__":
    sys.exit(main())
