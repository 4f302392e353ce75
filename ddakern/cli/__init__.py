"""`python -m ddakern COMMAND ...`: one module per command in this package, each with `main(argv) -> int`.

Commands are imported only when run, so `python -m ddakern check` needs nothing a command like
`predict` needs. Exit codes: 0 done, 1 the command failed, 2 bad command line.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

COMMANDS: dict[str, str] = {
    "check": "a short DDA forward/backward on random data, with parameter counts",
    "export": "a checkpoint to ONNX, TorchScript or a torch.export program, with a parity check",
    "predict": "emotions of the faces in images, folders, videos or a webcam (CSV/JSONL, annotations, attention)",
    "memory": "activation memory per image and the largest batch that fits a budget, per recompute mode",
}
"""Command name -> one-line help; the module is ddakern.cli.<name> (dashes become underscores)."""


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {text}" for name, text in COMMANDS.items()]
    return (
        "usage: python -m ddakern COMMAND [options]\n\ncommands:\n"
        + "\n".join(lines)
        + ("\n\n`python -m ddakern COMMAND --help` shows a command's options.")
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage())
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module = importlib.import_module(f"ddakern.cli.{name.replace('-', '_')}")
    return int(module.main(rest) or 0)
