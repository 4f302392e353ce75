"""`python -m ddakern`: the command dispatcher, run as a user runs it (one real `python -m ddakern` run;
help and unknown commands through the same `main` in-process, which needs no interpreter start)."""

import subprocess
import sys

from ddakern.cli import main


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ddakern", *args], capture_output=True, text=True, timeout=300)


def test_help_lists_commands(capsys):
    assert main(["--help"]) == 0
    assert "check" in capsys.readouterr().out


def test_unknown_command_is_one_line(capsys):
    assert main(["nonsense"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown command 'nonsense' (commands: train, fuse")


def test_check_runs_a_step():
    r = run("check", "--model", "resnet18_dda", "--image-size", "32", "--batch-size", "2")
    assert r.returncode == 0, r.stderr
    assert "parameter tensors got gradients" in r.stdout
