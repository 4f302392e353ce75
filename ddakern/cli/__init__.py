"""The `ddakern` command (and `python -m ddakern`): one entrance to the library's and the engine's commands.

    ddakern train --recipe rafdb --data-root data/RAF-DB --fused-ops   (= python -m train.run ...)
    ddakern predict runs/x/best.pt photos/                                (= python -m ddakern predict ...)

COMMANDS is the table: a command's module has `main(argv) -> int`, and the module is imported only when
its command runs, after the packages of its extra are checked (one line naming the extra, ddakern.extras).
Library commands live in this package; engine commands name a module of the training engine, which
this package never imports at module level: the table holds the engine's module names as strings,
resolved by `engine_package()` at run time, so the dependency stays engine -> library (the engine
imports ddakern; ddakern reaches the engine only through `importlib` when a user asks for it).
Exit codes: 0 done, 1 the command failed (or a package of its extra is missing), 2 bad command line.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ddakern.extras import PREPARE, TRAIN, MissingExtra, require


@dataclass(frozen=True)
class Command:
    """One subcommand: its module (ENGINE-relative when `engine`), one line of help, what it needs."""

    module: str
    help: str
    engine: bool = False
    needs: tuple[str, ...] = ()
    extra: str = ""


COMMANDS: dict[str, Command] = {
    "train": Command("run", "train, select, evaluate and report one model (python -m train.run)", True, TRAIN, "train"),
    "fuse": Command("fuse", "combine two trained models: late, early, joint or attention fusion", True, TRAIN, "train"),
    "prepare": Command("prepare", "face crops of a folder of photos, ready to train on", True, PREPARE, "train"),
    "layouts": Command("data.layouts", "the data layout found in a folder, and its splits", True),
    "reproduce": Command("reproduce", "the paper's tables as resumable sweeps, mean ± std", True, TRAIN, "train"),
    "predict": Command("ddakern.cli.predict", "emotions of the faces in images, folders, videos or a webcam"),
    "export": Command("ddakern.cli.export", "a checkpoint to ONNX, TorchScript or torch.export, parity-checked"),
    "memory": Command("ddakern.cli.memory", "activation memory per image and the largest batch, per recompute mode"),
    "check": Command("ddakern.cli.check", "a short DDA forward/backward on random data, with parameter counts"),
}
"""Command name -> its module and help line. An engine command whose module is not there (an older engine)
is left out of the listing."""

ENGINE_INSTALLED = "ddakern_train"
"""The engine's name in a wheel (setup.py maps train/ to it; `train` is PyPI's)."""

_running: dict[str, str] = {}
"""While a command runs: its module -> the usage name its parser shows ("ddakern train")."""


class EngineMissing(RuntimeError):
    """Neither the installed engine nor a checkout's train/ folder is importable."""


def engine_package() -> str:
    """`train` in a source checkout (the folder beside ddakern/, as `python -m train.run` uses it), else the
    installed `ddakern_train`. A `train` package elsewhere (PyPI's) is never taken."""
    root = Path(__file__).resolve().parents[2]
    spec = importlib.util.find_spec("train") if (root / "pyproject.toml").is_file() else None
    if spec is not None and spec.origin and Path(spec.origin).resolve() == root / "train" / "__init__.py":
        return "train"
    if importlib.util.find_spec(ENGINE_INSTALLED) is not None:
        return ENGINE_INSTALLED
    raise EngineMissing(f"the training engine is not installed (no {ENGINE_INSTALLED}, no train/ beside {root})")


def module_of(name: str) -> str:
    """The dotted module that runs command `name`."""
    command = COMMANDS[name]
    return f"{engine_package()}.{command.module}" if command.engine else command.module


def available(name: str) -> bool:
    """Whether command `name`'s module is there: its file is looked for, nothing is imported."""
    command = COMMANDS[name]
    if not command.engine:
        return True
    try:
        package = engine_package()
    except EngineMissing:
        return False
    spec = importlib.util.find_spec(package)
    base = Path(spec.origin).parent if spec is not None and spec.origin else None
    path = base.joinpath(*command.module.split(".")) if base is not None else None
    return path is not None and (path.with_suffix(".py").is_file() or (path / "__init__.py").is_file())


def prog(module: str, default: str) -> str:
    """A command parser's usage name: "ddakern <command>" while the ddakern command runs `module`, else
    `default` (its module form, e.g. "python -m train.run")."""
    return _running.get(module, default)


def usage(front: str = "ddakern") -> str:
    shown = [name for name in COMMANDS if available(name)]
    width = max(map(len, shown))
    lines = [f"  {name:<{width}}  {COMMANDS[name].help}" for name in shown]
    return (
        f"usage: {front} COMMAND [options]\n\ncommands:\n"
        + "\n".join(lines)
        + f"\n\n`{front} COMMAND --help` shows a command's options. Their optional packages:\n"
        "pip install 'ddakern[train]' (train, fuse, prepare, reproduce), "
        "'ddakern[predict]' (predict, export to ONNX)."
    )


def main(argv: Sequence[str] | None = None, front: str = "ddakern") -> int:
    """Run one command; returns its exit code. `front` is how the user called us (for usage lines)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help"):
        print(usage(front))
        return 0
    name, rest = args[0], args[1:]
    if name not in COMMANDS or not available(name):
        known = ", ".join(n for n in COMMANDS if available(n))
        print(f"error: unknown command {name!r} (commands: {known})", file=sys.stderr)
        return 2
    command = COMMANDS[name]
    try:
        require(command.needs, name, command.extra)  # before the import: that may need them
        module = module_of(name)
        _running[module] = f"{front} {name}"
        return int(importlib.import_module(module).main(rest) or 0)
    except MissingExtra as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        _running.clear()
