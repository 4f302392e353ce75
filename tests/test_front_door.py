"""The `ddakern` command: one table of subcommands over the library's and the engine's entry points, each
help line shown, the engine's parsers named as the user called them, and a missing optional package one
line naming the extra before any work (in-process: the dispatcher is a function; `python -m` adds nothing)."""

from __future__ import annotations

import importlib
import runpy
import sys
from pathlib import Path

import pytest

from ddakern import cli
from ddakern.extras import TRAIN, MissingExtra, require_at_start

ROOT = Path(__file__).resolve().parents[1]


def test_help_lists_every_command_with_one_line(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    listed = [line.split()[0] for line in out.splitlines() if line.startswith("  ")]
    expected = ["train", "fuse", "prepare", "layouts", "predict", "export", "memory", "check"]
    if (ROOT / "train" / "reproduce.py").is_file():  # listed once its module exists, not before
        expected.insert(4, "reproduce")
    assert listed == expected
    assert all(len(cli.COMMANDS[n].help) <= 90 for n in listed)


def test_every_command_runs_the_module_of_its_module_form():
    """`ddakern X` and the module form users were promised run the same main()."""
    forms = {"train": "train.run", "fuse": "train.fuse", "prepare": "train.prepare", "layouts": "train.data.layouts"}
    forms |= {n: f"ddakern.cli.{n}" for n in ("predict", "export", "memory", "check")}
    for name, module in forms.items():
        assert cli.module_of(name) == module
        assert callable(importlib.import_module(module).main)


def test_train_help_is_train_runs_help_under_its_name(capsys):
    from train.config import build_parser

    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out == build_parser(prog="ddakern train").format_help()
    assert out.startswith("usage: ddakern train ") and "--fused-ops" in out
    assert build_parser().prog == "python -m train.run"  # the module form, outside the ddakern command


def test_a_missing_extra_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setitem(sys.modules, "tqdm", None)  # as if `pip install ddakern` without [train]
    assert cli.main(["train", "--recipe", "synthetic", "--epochs", "1", "--out", "run"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"error: train needs tqdm ({err[0].split('(', 1)[1].split(')')[0]}); install it with: "
        "pip install 'ddakern[train]'"
    ]
    assert list(tmp_path.iterdir()) == []  # nothing started: no run folder


@pytest.mark.filterwarnings("ignore:.*found in sys.modules after import of package")
def test_python_m_train_run_checks_its_extra_at_the_top(monkeypatch, capsys):
    """`python -m train.run` without [train]: one line and exit 1 (was a ModuleNotFoundError traceback)."""
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    monkeypatch.setattr(sys, "argv", ["train.run", "--epochs", "1"])
    with pytest.raises(SystemExit) as e:
        runpy.run_module("train.run", run_name="__main__")
    assert e.value.code == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "needs matplotlib" in err[0] and err[0].endswith("pip install 'ddakern[train]'")
    with pytest.raises(MissingExtra, match=r"ddakern\[train\]"):  # imported, not run: an ImportError
        require_at_start(TRAIN, "train", "train", "train.run")


def test_a_foreign_train_package_is_never_the_engine(tmp_path, monkeypatch):
    """PyPI's unrelated `train` first on sys.path: not taken for the engine (here the checkout's is shadowed,
    and no ddakern_train is installed, so the engine is missing)."""
    assert cli.engine_package() == "train"
    (tmp_path / "train").mkdir()
    (tmp_path / "train" / "__init__.py").write_text("")
    for name in [m for m in sys.modules if m == "train" or m.startswith("train.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.syspath_prepend(str(tmp_path))
    if importlib.util.find_spec(cli.ENGINE_INSTALLED) is None:
        with pytest.raises(cli.EngineMissing):
            cli.engine_package()
        assert not cli.available("train") and cli.available("predict")
    else:
        assert cli.engine_package() == cli.ENGINE_INSTALLED


def test_the_engine_imports_itself_relatively():
    """train/ runs as `train` (a checkout) and as `ddakern_train` (a wheel) only if no module names itself."""
    import ast

    absolute = []
    for path in (ROOT / "train").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            names += [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else []
            absolute += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] == "train"]
    assert not absolute


def test_readme_shows_the_help_as_it_is():
    text = (ROOT / "README.md").read_text()
    shown = text.split("$ ddakern --help\n", 1)[1].split("```", 1)[0]
    assert shown == cli.usage() + "\n"


@pytest.mark.parametrize("command", ["fuse", "reproduce"])
def test_engine_commands_show_their_front_door_name(command, capsys):
    """Each engine command's usage and errors name how the user called it (ddakern <command>)."""
    with pytest.raises(SystemExit) as e:
        cli.main([command, "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: ddakern {command} ")
