"""Run a command's `main(argv)` in the test process as `python -m <module>` would run it: the exit code,
stdout and stderr, read at the file-descriptor level (capfd), so that what C libraries print
(libjpeg's "Corrupt JPEG data") and Python warnings count as they did in a subprocess.

Why: each `python -m train.run` subprocess spends about 5 CPU-seconds importing torch before its first
line of work; the checks are on the exit code, the lines and the files, which a subprocess adds nothing
to. The tests that check the process itself (signals, torchrun, import-time behaviour, the umbrella
`python -m` entry) stay subprocesses. The process-wide state a run changes (torch's thread count, the
fused-op backend, the root logger, SIGINT/SIGTERM handlers, the umask, the working directory and the
environment) is put back afterwards.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import torch

from ddakern import dispatch


def run_main(
    main: Callable[[Sequence[str]], int | None],
    argv: Sequence[str],
    capfd: pytest.CaptureFixture[str] | None,
    *,
    cwd: Path | None = None,
    env: dict[str, str | None] | None = None,
    umask: int | None = None,
) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `main(argv)`; `env` sets (or with None removes)
    variables for the call, `cwd` is its working directory, `umask` its umask. Without capfd (a module
    fixture's run) the output is left to pytest's own capture and "" is returned for both."""
    if capfd is not None:
        capfd.readouterr()  # what the test printed before is not the command's
    threads, mode = torch.get_num_threads(), dispatch.current_mode()
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    handlers_of = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    old_umask = os.umask(umask) if umask is not None else None
    with pytest.MonkeyPatch.context() as m, warnings.catch_warnings():
        _python_default_warnings()
        if cwd is not None:
            m.chdir(cwd)
        for key, value in (env or {}).items():
            if value is None:
                m.delenv(key, raising=False)
            else:
                m.setenv(key, value)
        try:
            code = main(list(argv))
        except SystemExit as e:  # argparse's usage errors
            code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            if isinstance(e.code, str):
                print(e.code, file=sys.stderr)
        finally:
            torch.set_num_threads(threads)
            dispatch.use_ops_backend(mode)
            root.handlers[:] = handlers
            root.setLevel(level)
            for s, h in handlers_of.items():
                signal.signal(s, h)
            if old_umask is not None:
                os.umask(old_umask)
    out, err = capfd.readouterr() if capfd is not None else ("", "")
    return int(code or 0), out, err


def _python_default_warnings() -> None:
    """The warning filters and output of a plain `python` process (pytest records warnings instead of
    printing them): a warning a user would see on stderr is seen here too."""
    warnings.resetwarnings()
    warnings.simplefilter("default")
    for category in (DeprecationWarning, PendingDeprecationWarning, ImportWarning, ResourceWarning):
        warnings.simplefilter("ignore", category)
    warnings.showwarning = _to_stderr


def _to_stderr(message, category, filename, lineno, file=None, line=None) -> None:  # noqa: ANN001
    sys.stderr.write(warnings.formatwarning(message, category, filename, lineno, line))
