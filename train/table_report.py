"""A sweep's results as the paper's tables: every run read back from its summary.json and metrics.jsonl,
each cell mean ± std over seeds under both selection protocols, written as Markdown, CSV and JSON.

Protocols (side by side in every cell):
- held-out: the checkpoint selected on the validation split (part of train, or the set's own
  validation split), evaluated once on test: the figure a user can trust.
- best-on-test: the best test accuracy over the epochs (select on test), the figure the literature reports.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ddakern.atomic import write_text

from .tables import Cell, Table, run_key

FIELDS = (
    "table", "cell", "row", "column", "seed", "status", "exit_code", "heldout_test_acc", "best_on_test_acc",
    "best_on_test_epoch", "selected_epoch", "best_val_acc", "test_acc_tta", "epochs_run", "wall_seconds", "model",
    "recipe", "folder", "note",
)  # fmt: skip


def read_run(folder: Path) -> dict[str, Any] | None:
    """Both protocols' test accuracies of a finished run folder (None when it has no summary.json)."""
    try:
        summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    history = []
    try:
        history = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        pass
    tested = [r for r in history if r.get("test_acc") is not None]
    if tested:
        best = max(tested, key=lambda r: r["test_acc"])
        best_acc, best_epoch = best["test_acc"], best["epoch"]
    else:  # validation was the test split (or nothing trained): one checkpoint, one figure
        best_acc, best_epoch = summary["test_accuracy"], summary.get("selected_epoch")
    return {
        "heldout_test_acc": summary["test_accuracy"] if tested or not history else None,
        "best_on_test_acc": best_acc,
        "best_on_test_epoch": best_epoch,
        "selected_epoch": summary.get("selected_epoch"),
        "best_val_acc": summary.get("best_val_accuracy"),
        "test_acc_tta": summary.get("test_accuracy_tta"),
        "epochs_run": summary.get("epochs_run", len(history)),
        "wall_seconds": summary.get("wall_seconds"),
        "model": summary.get("model") or f"fusion-{summary.get('method')}",
        "recipe": summary.get("recipe"),
        "data": summary.get("data", {}),
    }


RECORDED_NOTE = "run folder absent: result as recorded in the sweep's earlier runs.json"


def recorded_runs(out: Path) -> dict[str, dict]:
    """Finished runs recorded in `out`'s runs.json by an earlier sweep, by job key: a sweep folder whose run
    folders were removed, or a results folder holding only the table's files (runs.json), continues the
    table instead of running those runs again. The caller checks the earlier sweep had the same settings."""
    try:
        old = json.loads((out / "runs.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    runs = old.get("runs") if isinstance(old, dict) and isinstance(old.get("runs"), list) else []
    return {run_key(r["cell"], r["seed"]): r for r in runs if isinstance(r, dict) and r.get("status") == "done"}


def run_rows(
    table: Table,
    folder_of: Any,
    seeds: Sequence[int],
    notes: dict[str, str],
    states: dict,
    recorded: dict[str, dict] | None = None,
) -> list[dict]:
    """One row per (cell, seed): its results, or why it has none (status, note). `folder_of(key, seed)`:
    the run folder; `notes`: cell key -> why it was not run; `states`: job key -> this invocation's Outcome;
    `recorded`: recorded_runs(), used for a run whose folder has no summary.json."""
    rows = []
    for cell in table.cells:
        if not cell.column:
            continue  # a fusion member's run: shown through its "model k alone" cells
        for seed in seeds:
            row = _one(table, cell, seed, folder_of, notes, states)
            old = (recorded or {}).get(run_key(cell.key, seed))
            if row["status"] not in ("done", "n/a") and old is not None:
                row = {**old, "status": "done", "exit_code": None, "note": RECORDED_NOTE}
            rows.append(row)
    return rows


def with_records(rows: list[dict], recorded: dict[str, dict]) -> list[dict]:
    """`rows` and, after them, the recorded runs this invocation did not report (other cells with --cells,
    other seeds): rewriting runs.json must not drop them, as it may be their only copy."""
    have = {run_key(r["cell"], r["seed"]) for r in rows}
    return rows + [r for key, r in recorded.items() if key not in have]


def _one(table: Table, cell: Cell, seed: int, folder_of: Any, notes: dict[str, str], states: dict) -> dict:
    row: dict[str, Any] = {"table": table.name, "cell": cell.key, "row": cell.row, "column": cell.column, "seed": seed}
    source = cell.members[0] if cell.kind == "member" else cell.key
    folder = folder_of(source, seed)
    row["folder"] = str(folder)
    if source in notes:
        return {**row, "status": "n/a", "note": notes[source]}
    found = read_run(folder)
    state = states.get(run_key(source, seed))
    if found is None:
        return {**row, "status": state.state if state else "not-run", "exit_code": state.exit_code if state else None}
    found.pop("data", None)  # a member alone: its own run, as train.run evaluated it
    return {**row, **found, "status": "done"}


def cell_rows(table: Table) -> list[Cell]:
    """The cells shown in the table (member runs of the fusion table appear through their 'alone' rows)."""
    return [c for c in table.cells if c.column]


def mean_std(values: Sequence[float]) -> tuple[float, float] | None:
    """(mean, sample standard deviation; 0 for one value) or None for no values."""
    if not values:
        return None
    m = sum(values) / len(values)
    if len(values) == 1:
        return m, 0.0
    return m, math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1))


def _fmt(values: Sequence[float], expected: int) -> str:
    ms = mean_std(values)
    if ms is None:
        return "-"
    text = f"{ms[0]:.2f} ± {ms[1]:.2f}" if len(values) > 1 else f"{ms[0]:.2f}"
    return text + (f" (n={len(values)})" if len(values) != expected else "")


def markdown(table: Table, rows: Sequence[dict], header: Sequence[str], seeds: Sequence[int]) -> str:
    """The table in the paper's layout, two sub-columns (held-out | best-on-test) per column."""
    lines = [f"# {table.title} (`{table.name}`)", "", *header, ""]
    heads = [h for c in table.columns for h in (f"{c}: held-out", f"{c}: best-on-test")]
    lines.append("| | " + " | ".join(heads) + " |")
    lines.append("|---|" + "---:|" * len(heads))
    notes: dict[str, int] = {}
    for r in table.rows:
        out = []
        for c in table.columns:
            mine = [x for x in rows if x["row"] == r and x["column"] == c and x.get("seed") in seeds]
            if not mine:
                out += ["", ""]
                continue
            na = [x["note"] for x in mine if x["status"] == "n/a"]
            if na:
                k = notes.setdefault(na[0], len(notes) + 1)
                out += [f"n/a [{k}]", f"n/a [{k}]"]
                continue
            held = [x["heldout_test_acc"] for x in mine if x["status"] == "done" and x["heldout_test_acc"] is not None]
            best = [x["best_on_test_acc"] for x in mine if x["status"] == "done"]
            out += [_fmt(held, len(seeds)), _fmt(best, len(seeds))]
        lines.append(f"| {r} | " + " | ".join(out) + " |")
    if notes:
        lines.append("")
        lines += [f"[{k}] {note}" for note, k in notes.items()]
    return "\n".join(lines) + "\n"


def write_tables(out: Path, table: Table, rows: Sequence[dict], header: Sequence[str], seeds: Sequence[int],
                 meta: dict[str, Any]) -> Path:  # fmt: skip
    """table.md, runs.csv and runs.json (every run, with the sweep's settings) in `out`; returns table.md."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FIELDS, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: r.get(k) for k in FIELDS})
    write_text(out / "runs.csv", buf.getvalue())
    write_text(out / "runs.json", json.dumps({**meta, "runs": list(rows)}, indent=1) + "\n")
    write_text(out / "table.md", markdown(table, rows, header, seeds))
    return out / "table.md"
