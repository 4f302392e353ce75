"""Turn `pytest bench/ --benchmark-json=FILE` output into a markdown table of ratios and a PNG.

Every benchmark names its variant and the variant it is compared with (`extra_info.variant`,
`extra_info.baseline`); the speed-up is baseline median / median within the same group.

    python bench/report.py bench.json --markdown docs/benchmarks.md --png docs/benchmarks.png
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from collections import defaultdict
from pathlib import Path


def load_rows(path: Path) -> tuple[dict, list[dict]]:
    data = json.loads(path.read_text())
    rows = []
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        rows.append(
            {
                "group": b.get("group") or b["name"],
                "name": b["name"],
                "variant": info.get("variant", b["name"]),
                "baseline": info.get("baseline"),
                "median_s": b["stats"]["median"],
                "info": info,
            }
        )
    return data.get("machine_info", {}), rows


def with_ratios(rows: list[dict]) -> list[dict]:
    """Add `speedup` (baseline median / median) and `memory_ratio` for each row of its group."""
    by_group: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    for group_rows in by_group.values():
        for r in group_rows:
            base = next((b for b in group_rows if b["variant"] == r["baseline"]), None)
            r["speedup"] = base["median_s"] / r["median_s"] if base else None
            mem, base_mem = r["info"].get("saved_bytes"), base and base["info"].get("saved_bytes")
            r["saved_ratio"] = mem / base_mem if mem is not None and base_mem else None
    return rows


def fmt(v: object, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def markdown(machine: dict, rows: list[dict]) -> str:
    cpu = machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?"))
    lines = [
        f"Machine: {cpu}; {machine.get('python_implementation', '')} {machine.get('python_version', '')}",
        "",
    ]
    group = None
    for r in sorted(rows, key=lambda r: (r["group"], r["median_s"])):
        if r["group"] != group:
            group = r["group"]
            lines += [
                "",
                f"### {group}",
                "",
                "| variant | median ms | speed-up vs baseline | GB/s | images/s | saved bytes ratio"
                " | peak MiB |",
                "|---|---|---|---|---|---|---|",
            ]
        info = r["info"]
        peak = info.get("peak_memory_bytes")
        lines.append(
            f"| {r['variant']} | {r['median_s'] * 1e3:.3f} | {fmt(r['speedup'], '.2f')}x vs {r['baseline']} "
            f"| {fmt(info.get('gbps'), '.1f')} | {fmt(info.get('images_per_s'), '.1f')} "
            f"| {fmt(r['saved_ratio'], '.2f')} | {fmt(peak and peak / 2**20, '.0f')} |"
        )
    return "\n".join(lines).strip() + "\n"


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [r for r in rows if r["speedup"] is not None]
    fig, ax = plt.subplots(figsize=(10, max(3, 0.25 * len(shown))))
    labels = [f"{r['group']} | {r['variant']}" for r in shown]
    ax.barh(range(len(shown)), [r["speedup"] for r in shown], color="tab:blue")
    ax.axvline(1.0, color="k", lw=0.8)
    ax.set_yticks(range(len(shown)), labels, fontsize=7)
    ax.set_xlabel("speed-up vs baseline (higher is better)")
    fig.tight_layout()
    atomic_write_bytes(path, lambda f: fig.savefig(f, format="png", dpi=110))
    plt.close(fig)


def atomic_write_bytes(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "wb") as f:
        write(f)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark --benchmark-json output")
    parser.add_argument("--markdown", type=Path, help="write the table here (default: print it)")
    parser.add_argument("--png", type=Path, help="write a speed-up bar chart here")
    parser.add_argument("--title", default="ddakern benchmarks")
    args = parser.parse_args(argv)
    if not args.json.is_file():
        parser.error(f"{args.json} does not exist: run pytest bench/ --benchmark-json={args.json} first")
    machine, rows = load_rows(args.json)
    rows = with_ratios(rows)
    text = f"# {args.title}\n\n" + markdown(machine, rows)
    if args.markdown:
        atomic_write_bytes(args.markdown, lambda f: f.write(text.encode()))
    else:
        print(text)
    if args.png:
        plot(rows, args.png)


if __name__ == "__main__":
    main()
