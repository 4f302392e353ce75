"""`python -m train.reproduce TABLE --data-root DIR --seeds N`: one of the paper's tables, run and written.

TABLE is main, ablation, fusion or modern (train.tables). Every cell trains once per seed (seeds
113, 114, ...) as a train.run (or train.fuse) run in its own folder under --out; the sweep is resumable
(run the same command again: finished runs are skipped, an interrupted one resumes from its last.pt). A
run counts as finished when its folder holds summary.json, or when --out's runs.json (written by a sweep
with the same settings) records it as done: a results folder keeping only table.md / runs.json is
continued by copying it to --out (a sweep over part of it, --cells or fewer seeds, keeps the other
records in runs.json).
At the end --out holds table.md (each cell mean ± std over seeds, held-out and best-on-test protocols
side by side), runs.csv and runs.json (every run) and sweep.json (the plan).

--data-root is a data folder (its layout detected as train.run does) or the built-in set by name:
`synthetic` (easy) or `synthetic-hard`. --scale cpu shrinks every run so that a table fits a CPU;
its values are written in the table's header. Exit codes: 0 every run finished; 1 a run failed (the
others still ran; see logs/); 2 bad options or an --out another sweep holds; 130 / 143 stopped by
SIGINT / SIGTERM (run the command again to continue).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import logging
import shlex
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ddakern.atomic import write_text
from ddakern.builtin_set import builtin_cache, builtin_name
from ddakern.cli import prog
from ddakern.extras import MissingExtra, require
from ddakern.folder_lock import FolderBusy, lock_folder, release

from .config import RECIPES
from .data.errors import DataError
from .data.layouts import detect_layout
from .data.synthetic import DIFFICULTIES, describe_noise, read_manifest
from .run_folder import RunFolderError, prepare_out
from .sweep import EXECUTORS, Job, Outcome, SlurmOptions, Sweep, run_state
from .table_report import recorded_runs, run_rows, with_records, write_tables
from .tables import TABLE_NAMES, Table, build_table, missing_weights, run_key

log = logging.getLogger("train.reproduce")

RECIPE_OF_FAMILY = {
    "fer2013": "fer2013",
    "ferplus": "ferplus",
    "rafdb": "rafdb",
    "affectnet": "affectnet7",
    "folders": "folders",
    "synthetic": "synthetic",
}
"""The published recipe a detected data-set family trains with (--recipe overrides it)."""

SCALES: dict[str, dict[str, Any]] = {
    "paper": {},
    "cpu": {
        "image_size": 32,
        "epochs": 5,
        "batch_size": 16,
        "dda_width": 32,
        "dda_spatial_width": 32,
        "synthetic_train": 840,
        "synthetic_val": 140,
        "synthetic_test": 280,
        "tta": False,
        "loader": "torch",
        "workers": 0,
        "threads": 1,
        "memory_estimate": False,
        "progress": False,
    },
}
"""Flags every run of a sweep gets at each --scale (paper: the recipes' own values). cpu: one torch
thread per run, as a shared CPU machine loses far more to OpenMP threads spinning against other
processes than a second thread gains (a ResNet-34 step measured 13x slower with 2 threads than 1 on
the loaded 2-core development machine); `--run-args '--threads 2'` on an idle machine."""
MODEL_ONLY = ("dda_width", "dda_spatial_width")
"""Scale values that apply to DDA models only (a plain host refuses them)."""
DATA_ONLY = ("image_size", "synthetic_train", "synthetic_val", "synthetic_test")
"""Scale values a fusion run takes from its members instead."""


@dataclass(frozen=True)
class Data:
    """What --data-root names: the folder, the recipe that reads it and the train.run flags for it."""

    root: Path
    recipe: str
    flags: tuple[str, ...]
    label: str
    facts: dict[str, Any]


def _flag(name: str, value: Any) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, str(value)]


def scale_flags(scale: str, model: str | None, *, fusion: bool = False) -> list[str]:
    """The --scale's flags for one run of `model` (a fusion run: none of the data's or the model's)."""
    out: list[str] = []
    for name, value in SCALES[scale].items():
        if name in MODEL_ONLY and not (model or "").endswith("_dda"):
            continue
        if fusion and (name in DATA_ONLY or name in MODEL_ONLY):
            continue
        out += _flag(name, value)
    return out


def resolve_data(word: str, recipe: str | None) -> Data:
    """--data-root: `synthetic` / `synthetic-<difficulty>` (the built-in set, in its cache) or a folder."""
    names = {builtin_name(d): d for d in DIFFICULTIES}
    if word in names and not Path(word).exists():
        difficulty = names[word]
        root = builtin_cache(difficulty)
        facts = {"builtin_set": difficulty}
        label = f"built-in set {word} (drawn into {root})"
    else:
        root = Path(word).expanduser().absolute()
        layout, base = detect_layout(root, None)
        if layout == "synthetic":
            facts = describe_noise(read_manifest(base) or {})
            difficulty = facts["builtin_set"]
            label = f"built-in set {builtin_name(difficulty)} in {root}"
        else:
            difficulty, facts = None, {"layout": layout}
            label = f"{root} (layout {layout})"
        recipe = recipe or RECIPE_OF_FAMILY[_family(layout)]
    recipe = recipe or "synthetic"
    flags = ["--recipe", recipe, "--data-root", str(root)]
    if difficulty is not None:
        flags += ["--synthetic-difficulty", difficulty]
    return Data(root, recipe, tuple(flags), label, facts)


def _family(layout: str) -> str:
    from .data.layouts import LAYOUTS

    return LAYOUTS[layout].family


def plan(table: Table, data: Data, seeds: Sequence[int], scale: str, out: Path, extra: Sequence[str]) -> tuple[
    list[Job], list[Job], dict[str, str]
]:  # fmt: skip
    """(training runs, fusion runs, notes): one job per cell and seed; `notes` says why a cell is not run
    (its weights file or its recipe does not exist here)."""
    notes: dict[str, str] = {}
    runs: list[Job] = []
    fusions: list[Job] = []
    for cell in table.cells:
        if cell.kind == "member":
            continue
        recipe = cell.recipe or data.recipe
        if recipe not in RECIPES:
            notes[cell.key] = f"recipe {recipe} does not exist in this version of ddakern"
            continue
        if cell.kind == "fuse":
            missing = [notes[m] for m in cell.members if m in notes]
            if missing:
                notes[cell.key] = missing[0]
                continue
        else:
            model = cell.model or RECIPES[recipe].get("model")
            why = missing_weights(model, cell.init) if model else None
            if why:
                notes[cell.key] = why
                continue
        for seed in seeds:
            folder = out / run_key(cell.key, seed)
            if cell.kind == "fuse":
                members = [str(out / run_key(m, seed) / "best.pt") for m in cell.members]
                flags = [*cell.flags, "--members", *members, "--seed", str(seed)]
                flags += scale_flags(scale, None, fusion=True) + list(extra)
                fusions.append(Job(run_key(cell.key, seed), folder, "train.fuse", tuple(flags), resumable=False))
            else:
                flags = [*data.flags]
                if cell.recipe:
                    flags[1] = cell.recipe
                model = cell.model or RECIPES[recipe].get("model")
                flags += ["--seed", str(seed), *scale_flags(scale, model), *cell.flags, *extra]
                runs.append(Job(run_key(cell.key, seed), folder, "train.run", tuple(flags)))
    return runs, fusions, notes


def header(
    table: Table, data: Data, seeds: Sequence[int], scale: str, extra: Sequence[str], scratch: bool
) -> list[str]:
    """The lines above the table: data, recipe, scale and its values, seeds, protocols."""
    values = ", ".join(f"{k} {v}" for k, v in SCALES[scale].items()) or "the recipes' own values"
    lines = [
        f"- data: {data.label}; recipe `{data.recipe}`" + (f"; {_noise(data.facts)}" if _noise(data.facts) else ""),
        f"- scale `{scale}`: {values}" + (f"; extra run flags `{' '.join(extra)}`" if extra else ""),
        f"- seeds: {', '.join(map(str, seeds))} (mean ± sample std over seeds)",
        "- init: " + ("every model from scratch (random weights)" if scratch else "as the paper (ImageNet / VGGFace2)"),
        "- held-out: checkpoint selected on the validation split (held out of the labelled training pool), "
        "evaluated once on test; best-on-test: the best per-epoch test accuracy (the literature's protocol)",
        f"- written {time.strftime('%Y-%m-%d %H:%M')} by `python -m train.reproduce {table.name}`",
    ]
    return lines


def _noise(facts: dict[str, Any]) -> str:
    noise = facts.get("label_noise")
    if isinstance(noise, dict) and noise.get("rate"):
        return f"label noise: {noise['rate']:.0%} of the labels of {', '.join(noise['splits'])} changed, test clean"
    if facts.get("builtin_set") == "hard":
        return "label noise: 15% of the training and validation labels changed, test labels clean"
    return ""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog(f"{__package__}.reproduce", f"python -m {__package__}.reproduce"),
        description="Run one of the paper's tables over seeds and write it (Markdown, CSV, JSON).",
        epilog="Exit codes: 0 all runs finished; 1 a run failed; 2 bad options or a busy --out; 130/143 stopped.",
    )
    p.add_argument("table", choices=TABLE_NAMES)
    p.add_argument("--data-root", required=True, help="data folder, or the built-in set: synthetic, synthetic-hard")
    p.add_argument("--seeds", type=int, default=3, help="runs per cell (seeds 113, 114, ...)")
    p.add_argument("--seed-base", type=int, default=113, help="first seed")
    p.add_argument("--recipe", choices=sorted(RECIPES), help="recipe of the runs (default: the data's)")
    p.add_argument("--scale", choices=tuple(SCALES), default="paper", help="paper, or cpu (small runs)")
    p.add_argument("--init", choices=("paper", "scratch"), help="weights to start from (default: paper; cpu: scratch)")
    p.add_argument("--out", type=Path, help="sweep folder (default runs/reproduce-<table>-<data>-<scale>)")
    p.add_argument("--executor", choices=EXECUTORS, default="local", help="inline, local (default), slurm")
    p.add_argument("--cells", help="only the cells whose key matches this glob (e.g. 'resnet34-*')")
    p.add_argument("--run-args", default="", help="extra train.run flags for every run, e.g. '--amp bf16'")
    p.add_argument("--report-only", action="store_true", help="write the table from the runs there, run nothing")
    p.add_argument(
        "--prune",
        choices=("none", "last", "all"),
        help="checkpoints to delete from finished runs: none, last.pt (default) or both",
    )
    s = p.add_argument_group("slurm (--executor slurm)")
    s.add_argument("--slurm-partition")
    s.add_argument("--slurm-timeout-min", type=int, default=24 * 60)
    s.add_argument("--slurm-cpus", type=int, default=8, help="CPUs per task (data loading)")
    s.add_argument("--slurm-parallelism", type=int, default=64, help="array tasks running at once")
    s.add_argument("--no-wait", action="store_true", help="submit and exit (run again with --report-only later)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code (module docstring)."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr, force=True)
    if args.seeds < 1:
        print("error: --seeds: must be >= 1", file=sys.stderr)
        return 2
    if args.executor in ("slurm", "submitit-local") and not args.report_only:
        try:
            require(("submitit",), f"--executor {args.executor}", "train")
        except MissingExtra as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
    try:
        data = resolve_data(args.data_root, args.recipe)
    except DataError as e:
        print(f"error: --data-root: {e}", file=sys.stderr)
        return 2
    scratch = (args.init or ("scratch" if args.scale == "cpu" else "paper")) == "scratch"
    table = build_table(args.table, data.recipe, scratch=scratch)
    if args.cells:
        keep = {c.key for c in table.cells if fnmatch.fnmatch(c.key, args.cells)}
        keep |= {m for c in table.cells if c.key in keep for m in c.members}
        table = Table(table.name, table.title, table.rows, table.columns, tuple(c for c in table.cells if c.key in keep
                      or (c.kind == "member" and c.members[0] in keep)))  # fmt: skip
    seeds = [args.seed_base + i for i in range(args.seeds)]
    out = (args.out or Path("runs") / f"reproduce-{args.table}-{Path(str(data.root)).name}-{args.scale}").absolute()
    extra = shlex.split(args.run_args)
    runs, fusions, notes = plan(table, data, seeds, args.scale, out, extra)
    try:
        prepare_out(out)
        lock = lock_folder(out)
    except RunFolderError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FolderBusy:
        print(f"error: --out {out} is in use by another sweep; wait for it or choose another folder", file=sys.stderr)
        return 2
    try:
        meta = {"table": table.name, "data": str(data.root), "recipe": data.recipe, "scale": args.scale}
        meta.update(scale_values=SCALES[args.scale], seeds=seeds, scratch=scratch, extra_run_flags=extra)
        conflict = other_settings(out, meta)
        if conflict:
            print(f"error: --out {out} holds a sweep with other settings ({conflict}); its runs would be mixed "
                  "with these: choose another --out, or run with that sweep's settings", file=sys.stderr)  # fmt: skip
            return 2
        recorded = recorded_runs(out)
        jobs = [[j.key, j.module, *j.flags] for j in runs + fusions]
        write_text(out / "sweep.json", json.dumps({**meta, "jobs": jobs}, indent=1) + "\n")
        runs, fusions = (_not_recorded(js, recorded) for js in (runs, fusions))
        outcomes: list[Outcome] = []
        if not args.report_only:
            slurm = SlurmOptions(args.slurm_partition, args.slurm_timeout_min, args.slurm_cpus, 1,
                                 args.slurm_parallelism, not args.no_wait)  # fmt: skip
            prune = args.prune or "last"  # a fusion reads its members' best.pt only
            sweep = Sweep(args.executor, out / "logs", slurm, out / "slurm", prune)
            outcomes = sweep.run(runs)
            ready = [j for j in fusions if all(Path(m).is_file() for m in _members(j))]
            if not sweep.stopping and (ready or not fusions):
                outcomes += sweep.run(ready)
        states = {o.job.key: o for o in outcomes}
        rows = run_rows(table, lambda key, seed: out / run_key(key, seed), seeds, notes, states, recorded)
        rows = with_records(rows, recorded)
        path = write_tables(out, table, rows, header(table, data, seeds, args.scale, extra, scratch), seeds, meta)
        print(path.read_text(encoding="utf-8"))
        print(f"table: {path}; every run: {out / 'runs.csv'}, {out / 'runs.json'}")
    finally:
        release(lock)
    codes = [o.exit_code for o in outcomes if o.state in ("stopped", "failed")]
    stopped = [c for c in codes if c in (130, 143)]
    return stopped[0] if stopped else (1 if codes else 0)


def other_settings(out: Path, meta: dict[str, Any]) -> str | None:
    """What differs (seeds aside) between `meta` and the settings an earlier sweep left in `out`
    (sweep.json, runs.json), e.g. "scale: paper, not cpu"; None when they agree or there is none."""
    for name in ("sweep.json", "runs.json"):
        try:
            old = json.loads((out / name).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        if not isinstance(old, dict):
            continue
        diff = [f"{k}: {old.get(k)!r}, not {v!r}" for k, v in meta.items() if k != "seeds" and old.get(k) != v]
        if diff:
            return "; ".join(diff)
    return None


def _not_recorded(jobs: list[Job], recorded: dict[str, dict]) -> list[Job]:
    """The jobs to run: those recorded as finished in runs.json (folder gone) are skipped, and said so."""
    keep = []
    for job in jobs:
        if job.key in recorded and run_state(job.folder) != "finished":
            log.info("%s: finished before (recorded in runs.json, its folder is gone), skipped", job.key)
        else:
            keep.append(job)
    return keep


def _members(job: Job) -> list[str]:
    i = job.flags.index("--members")
    return list(job.flags[i + 1 : i + 3])


if __name__ == "__main__":
    sys.exit(main())
