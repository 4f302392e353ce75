"""`python -m train.fuse`: combine two trained models (late, early, joint or fusion attention).

    python -m train.fuse --method attention --members runs/a/best.pt runs/b/best.pt [train.run flags]

The members are `train.run` checkpoints (any two registry models, of different feature widths too)
trained on the same data, classes and input size. One data pipeline feeds both members. The method's
trainable part trains with the engine's loop (late fusion trains nothing unless --learned-weights),
then the fused model and each member are evaluated on the test split with and without TTA. The run
folder holds config.json, metrics.jsonl, curves.png, confusion_matrix.png and summary.json (with
each member's accuracy beside the fused one). Exit codes as `train.run` (a missing or foreign member
checkpoint: 1).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddakern.extras import TRAIN, require_at_start

require_at_start(TRAIN, "fuse", "train", __name__)  # one line, before any import that needs [train]

from ddakern.cli import prog
from ddakern.ensemble import METHODS, create_ensemble
from ddakern.inference.checkpoint import model_of
from ddakern.models import list_models

from . import checkpoint as ckpt_io
from .cli import Session, enable_fused_ops, run_entry, seed_everything, seed_rank
from .config import Config, ConfigError, inheritable, parse_cli, resolve
from .engine import Trainer, autocast_factory
from .evaluate import evaluate_all
from .report import fusion_summary, write_json, write_outputs
from .sources import load_data, make_loaders, protocol

FUSION_DEFAULTS: dict[str, dict[str, Any]] = {
    "late": {"epochs": 3, "lr": 1e-2, "weight_decay": 0.0},
    "early": {"epochs": 5, "lr": 1e-3, "weight_decay": 1e-4},
    "joint": {"epochs": 3, "lr": 1e-4, "weight_decay": 1e-4},
    "attention": {"epochs": 8, "lr": 1e-3, "weight_decay": 1e-4},
}
"""Training defaults per method (the published work does not give them); every one is a flag."""
_MEMBER_KEYS_NOT_INHERITED = {"out", "epochs", "lr", "weight_decay", "early_stop", "scheduler"}


def parse_fusion_args(argv: Sequence[str]) -> tuple[argparse.Namespace, list[str]]:
    """Fusion options; everything else is a `train.run` flag (data, batch, amp, epochs, ...)."""
    p = argparse.ArgumentParser(
        prog=prog(f"{__package__}.fuse", f"python -m {__package__}.fuse"),
        description=f"Fuse two trained models. Other flags are train.run's (see python -m {__package__}.run --help).",
    )
    p.add_argument("--method", required=True, choices=METHODS)
    p.add_argument("--members", required=True, nargs=2, type=Path, metavar=("A.pt", "B.pt"))
    p.add_argument("--learned-weights", action="store_true", help="late: learn the two members' weights")
    p.add_argument("--fusion-dim", type=int, default=512, help="attention: fused feature size")
    p.add_argument("--fusion-tokens", type=int, default=8, help="attention: tokens the fused vector splits into")
    p.add_argument("--fusion-heads", type=int, default=4, help="attention: self-attention heads")
    p.add_argument("--fusion-hidden", type=int, default=512, help="attention: MLP and classifier hidden size")
    p.add_argument(
        "--train-members",
        action="store_true",
        help="attention: train the members too (default: frozen, as early fusion)",
    )
    return p.parse_known_args(list(argv))


def load_members(paths: Sequence[Path]) -> list[dict[str, Any]]:
    """Both checkpoints, checked to be registry models with the same classes and inputs."""
    ckpts = [ckpt_io.load(p) for p in paths]
    for path, c in zip(paths, ckpts):
        if c["model_name"] not in list_models():
            raise ckpt_io.CheckpointError(
                f"{path}: unknown model {c['model_name']!r} (known: {', '.join(list_models())})"
            )
    a, b = ckpts
    if a["num_classes"] != b["num_classes"] or list(a["class_names"]) != list(b["class_names"]):
        raise ckpt_io.CheckpointError(
            f"members predict different classes: {paths[0]} has {a['num_classes']} ({', '.join(a['class_names'])}), "
            f"{paths[1]} has {b['num_classes']} ({', '.join(b['class_names'])})"
        )
    for key in ("image_size", "normalize"):
        if a[key] != b[key]:
            raise ckpt_io.CheckpointError(
                f"members were trained on different inputs: {key} {a[key]} ({paths[0]}) vs {b[key]} ({paths[1]})"
            )
    return ckpts


def fusion_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.method == "late":
        return {"learned_weights": args.learned_weights}
    if args.method == "attention":
        return {
            "dim": args.fusion_dim,
            "tokens": args.fusion_tokens,
            "heads": args.fusion_heads,
            "hidden": args.fusion_hidden,
            "freeze_members": not args.train_members,
        }
    return {}


def configure(argv: Sequence[str]) -> tuple[Config, tuple[argparse.Namespace, list[dict[str, Any]]]]:
    """The run config: the first member's config (data, batch, amp, ...) < method defaults < TOML < flags."""
    args, rest = parse_fusion_args(argv)
    ckpts = load_members(args.members)
    cli, toml = parse_cli(rest)
    if "resume" in cli:
        raise ConfigError("--resume: train.fuse does not resume; run it again (fusion heads train in minutes)")
    base = inheritable(ckpts[0]["config"], _MEMBER_KEYS_NOT_INHERITED)
    base.update(FUSION_DEFAULTS[args.method], early_stop=0, scheduler="none")
    cfg = resolve(cli, toml, base=base)
    for key in ("image_size", "normalize"):  # the members only work on the inputs they were trained on
        if getattr(cfg, key) != ckpts[0][key]:
            flag = "--" + key.replace("_", "-")
            raise ConfigError(
                f"{flag} {getattr(cfg, key)}: the members were trained with {ckpts[0][key]} ({args.members[0]}); "
                f"drop {flag} to use theirs"
            )
    return cfg, (args, ckpts)


def fuse(job: tuple[argparse.Namespace, list[dict[str, Any]]], session: Session) -> int:
    """The body of train.fuse: members, fusion module, its training (if any), evaluation and report."""
    (args, ckpts), cfg, env, out = job, session.cfg, session.env, session.out
    data = load_data(cfg, env)
    splits = data.splits
    names = splits["train"].class_names
    if list(names) != list(ckpts[0]["class_names"]):
        raise ConfigError(f"the data's classes ({', '.join(names)}) are not the members' classes")
    seed_everything(cfg.seed)
    enable_fused_ops(cfg)
    members = [model_of(c, p, fused_ops=cfg.fused_ops)[0].to(env.device) for c, p in zip(ckpts, args.members)]
    fused = create_ensemble(args.method, *members, len(names), **fusion_options(args)).to(env.device)
    seed_rank(cfg.seed, env.rank)  # the fusion head's dropout and any erasing/mixing: each rank its own draws
    fused.set_grad_checkpointing(cfg.recompute)  # both members (frozen ones run without grad anyway)
    loaders = make_loaders(cfg, env, splits, session.loader)
    meta = {"method": args.method, "members": [str(p) for p in args.members], "options": fusion_options(args)}
    if env.is_main:
        write_json(out / "config.json", {**cfg.to_dict(), "fusion": meta})
    kw = dict(env=env, num_classes=len(names), autocast=autocast_factory(cfg, env.device))
    # the members as trained on their own, before joint fusion trains them further
    member_results = [evaluate_all(m, loaders, cfg.tta, **kw) for m in members]
    trains = any(p.requires_grad for p in fused.parameters())
    history: list[dict[str, Any]] = []
    selected, model = None, fused
    if trains:
        extra = {"model_name": f"fusion-{args.method}", "fusion": meta}
        trainer = Trainer(cfg, env, fused, names, loaders, out, splits["train"].labels, checkpoint_extra=extra)
        trainer.fit()
        trainer.load_best()
        model, history, selected = trainer.model, trainer.state.history, trainer.state.best_epoch
    test, tta = evaluate_all(model, loaders, cfg.tta, **kw)
    if not env.is_main:
        return 0
    member_rows = [
        {
            "checkpoint": str(path),
            "model": c["model_name"],
            "test_accuracy": r.accuracy,
            "test_accuracy_tta": None if rt is None else rt.accuracy,
        }
        for path, c, (r, rt) in zip(args.members, ckpts, member_results)
    ]
    summary = fusion_summary(session, protocol(cfg, data), meta, trains, selected, test, tta, names, member_rows)
    shown = tta if tta is not None else test
    write_outputs(out, summary, shown, f"{args.method} fusion: {shown.accuracy:.2f}%", history)
    accs = ", ".join(f"{m['model']} {m['test_accuracy']:.2f}%" for m in member_rows)
    print(f"report: {out / 'summary.json'} ({args.method} fusion {test.accuracy:.2f}%; members {accs})")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code (see the module docstring)."""
    return run_entry(
        argv,
        configure,
        fuse,
        folder_stem=lambda cfg, job: f"fuse-{job[0].method}",
        stop_hint="the fusion run stopped (run it again to redo it)",
    )


if __name__ == "__main__":
    sys.exit(main())
