"""Turn `pytest bench/ --benchmark-json=FILE` output into markdown tables of ratios and a PNG.

Every benchmark names its variant and the variant it is compared with (`extra_info.variant`,
`extra_info.baseline`); the speed-up is baseline median / median within the same group (same run), or,
where both rows report `faces_per_s` (rows that do different amounts of work per call: the predict
table), the ratio of their faces/s.
`extra_info.table` sorts groups into sections; each section gets a summary (one row per group, one
speed-up column per variant) and a detail table (time per call, GB/s, images/s, saved and peak memory).
The PNG needs matplotlib; without it the markdown is still written and a message says so.

    python bench/report.py bench.json --markdown docs/benchmarks.md --png docs/benchmarks.png
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path

from ddakern.atomic import write_text, write_with

MiB = 2**20


def load_rows(path: Path) -> tuple[dict, list[dict]]:
    """(machine_info, one row per benchmark) from a pytest-benchmark JSON file."""
    data = json.loads(path.read_text())
    rows = []
    for b in data.get("benchmarks", []):
        info = b.get("extra_info", {})
        calls = info.get("calls_per_round") or 1
        rows.append(
            {
                "table": info.get("table", "benchmarks"),
                "group": b.get("group") or b["name"],
                "name": b["name"],
                "variant": info.get("variant", b["name"]),
                "baseline": info.get("baseline"),
                "median_s": b["stats"]["median"] / calls,  # per call
                "rounds": b["stats"].get("rounds"),
                "info": info,
            }
        )
    return data.get("machine_info", {}), rows


def with_ratios(rows: list[dict]) -> list[dict]:
    """Add `speedup` (baseline median / median, or faces/s / baseline's) and `saved_ratio` (saved bytes /
    baseline's) per group."""
    by_group: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        by_group[r["group"]].append(r)
    for group_rows in by_group.values():
        for r in group_rows:
            base = next((b for b in group_rows if b["variant"] == r["baseline"]), None)
            r["speedup"] = base["median_s"] / r["median_s"] if base else None
            if base and r["info"].get("faces_per_s") and base["info"].get("faces_per_s"):
                r["speedup"] = r["info"]["faces_per_s"] / base["info"]["faces_per_s"]
            mem, base_mem = r["info"].get("saved_bytes"), base and base["info"].get("saved_bytes")
            r["saved_ratio"] = mem / base_mem if mem is not None and base_mem else None
    return rows


def fmt(v: object, spec: str) -> str:
    """format(v, spec), or "-" for None."""
    return "-" if v is None else format(v, spec)


def ordered(values: list[str]) -> list[str]:
    """Distinct values in order of first appearance."""
    return list(dict.fromkeys(values))


def sections(rows: list[dict]) -> dict[str, list[dict]]:
    """Rows by `table`, in order of first appearance."""
    out: dict[str, list[dict]] = {}
    for r in rows:
        out.setdefault(r["table"], []).append(r)
    return out


def summary_table(rows: list[dict]) -> list[str]:
    """One row per group: the baseline's time per call and every other variant's speed-up."""
    baseline = ordered([r["baseline"] for r in rows if r["baseline"]])
    variants = [v for v in ordered([r["variant"] for r in rows]) if v not in baseline]
    base_name = "/".join(baseline) or "baseline"
    lines = [
        f"| case | {base_name} ms | " + " | ".join(f"{v} speed-up" for v in variants) + " |",
        "|---" * (len(variants) + 2) + "|",
    ]
    for group in ordered([r["group"] for r in rows]):
        by_variant = {r["variant"]: r for r in rows if r["group"] == group}
        base = next((by_variant[b] for b in baseline if b in by_variant), None)
        cells = [group, fmt(base and base["median_s"] * 1e3, ".3f")]
        for v in variants:
            r = by_variant.get(v)
            cells.append(fmt(r and r["speedup"], ".2f") + ("x" if r and r["speedup"] is not None else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def rate(info: dict) -> str:
    """images/s, or faces/s in parentheses for the predict rows."""
    if info.get("images_per_s") is None and info.get("faces_per_s") is not None:
        return f"({info['faces_per_s']:.1f})"
    return fmt(info.get("images_per_s"), ".1f")


def detail_table(rows: list[dict]) -> list[str]:
    """Every benchmark of a section: time per call, speed-up, throughput, saved and peak memory."""
    lines = [
        "| case | variant | ms | speed-up | GB/s | images/s (faces/s) | saved MiB | saved ratio | peak MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        info = r["info"]
        saved, peak = info.get("saved_bytes"), info.get("peak_memory_bytes")
        lines.append(
            f"| {r['group']} | {r['variant']} | {r['median_s'] * 1e3:.3f} "
            f"| {fmt(r['speedup'], '.2f')}x vs {r['baseline']} | {fmt(info.get('gbps'), '.1f')} "
            f"| {rate(info)} | {fmt(saved and saved / MiB, '.2f')} "
            f"| {fmt(r['saved_ratio'], '.2f')} | {fmt(peak and peak / MiB, '.0f')} |"
        )
    return lines


def markdown(machine: dict, rows: list[dict], heading: str = "##") -> str:
    """Summary and detail tables of every section, headed by the machine description."""
    cpu = machine.get("cpu", {}).get("brand_raw", machine.get("processor", "?"))
    devices = ", ".join(ordered([str(r["info"].get("device")) for r in rows if r["info"].get("device")]))
    lines = [
        f"Machine: {cpu} ({machine.get('cpu', {}).get('count', '?')} logical CPUs); "
        f"{machine.get('python_implementation', '')} {machine.get('python_version', '')}; devices: {devices or '?'}.",
        "Times are medians per call in ms; speed-up = baseline median / median in the same run "
        "(the ratio of faces/s for the predict rows).",
    ]
    for table, table_rows in sections(rows).items():
        groups, variants = ordered([r["group"] for r in table_rows]), ordered([r["variant"] for r in table_rows])
        table_rows = sorted(table_rows, key=lambda r: (groups.index(r["group"]), variants.index(r["variant"])))
        lines += ["", f"{heading} {table}", "", *summary_table(table_rows), ""]
        lines += [f"{heading}# {table}: details", "", *detail_table(table_rows)]
    return "\n".join(lines).strip() + "\n"


def plot(rows: list[dict], path: Path) -> bool:
    """Speed-up bars (one panel per section, one bar per non-baseline variant); False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        print(f"report.py: matplotlib is not installed; {path} not written (the markdown is)", file=sys.stderr)
        return False
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = {t: [r for r in rs if r["speedup"] is not None and r["variant"] != r["baseline"]] for t, rs in
              sections(rows).items()}  # fmt: skip
    panels = {t: rs for t, rs in panels.items() if rs}
    if not panels:
        print(f"report.py: no speed-ups to plot; {path} not written", file=sys.stderr)
        return False
    heights = [max(1.5, 0.22 * len(ordered([r["group"] for r in rs])) * len(ordered([r["variant"] for r in rs])))
               for rs in panels.values()]  # fmt: skip
    fig, axes = plt.subplots(len(panels), 1, figsize=(11, sum(heights) + 1), height_ratios=heights, squeeze=False)
    for ax, (table, rs) in zip(axes[:, 0], panels.items()):
        groups = ordered([r["group"] for r in rs])
        variants = ordered([r["variant"] for r in rs])
        width = 0.8 / len(variants)
        for j, v in enumerate(variants):
            ys, xs = [], []
            for i, g in enumerate(groups):
                r = next((r for r in rs if r["group"] == g and r["variant"] == v), None)
                if r is not None:
                    ys.append(i + (j - (len(variants) - 1) / 2) * width)
                    xs.append(r["speedup"])
            ax.barh(ys, xs, height=width, label=v)
        ax.axvline(1.0, color="k", lw=0.8)
        ax.set_yticks(range(len(groups)), groups, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(f"{table} (vs {'/'.join(ordered([r['baseline'] for r in rs]))})", fontsize=9)
        ax.legend(fontsize=7, loc="lower right")
    axes[-1, 0].set_xlabel("speed-up vs baseline (higher is better)")
    fig.tight_layout()
    write_with(path, lambda f: fig.savefig(f, format="png", dpi=100))
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json", type=Path, help="pytest-benchmark --benchmark-json output")
    parser.add_argument("--markdown", type=Path, help="write the tables here (default: print them)")
    parser.add_argument("--png", type=Path, help="write a speed-up bar chart here (needs matplotlib)")
    parser.add_argument("--title", default="ddakern benchmarks", help="top heading; empty for none")
    parser.add_argument("--heading", default="##", help="markdown heading of each section (e.g. ### to nest)")
    args = parser.parse_args(argv)
    if not args.json.is_file():
        parser.error(f"{args.json} does not exist: run pytest bench/ --benchmark-json={args.json} first")
    machine, rows = load_rows(args.json)
    if not rows:
        print(f"report.py: {args.json} has no benchmarks (all skipped, or --benchmark-disable)", file=sys.stderr)
    rows = with_ratios(rows)
    text = (f"# {args.title}\n\n" if args.title else "") + markdown(machine, rows, args.heading)
    if args.markdown:
        write_text(args.markdown, text)
    else:
        print(text)
    if args.png:
        plot(rows, args.png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
