"""The optional packages each command needs, checked when it starts, before any work.

`pip install ddakern` installs the library; the extras add what its commands import: `[train]` the
engine's (train, fuse, prepare, reproduce), `[predict]` predict's and export's. A missing (or broken) one is a
`MissingExtra` whose message is one line naming the package and the extra to install; the engine's
entry modules check at their top (`python -m train.run` too), the `ddakern` command before importing one.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence

PACKAGES = {
    "cv2": "opencv-python-headless",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
    "tomli": "tomli",
}
"""Import name -> the package on PyPI that provides it."""

TRAIN = ("tqdm", "matplotlib", *(("tomli",) if sys.version_info < (3, 11) else ()))
"""What train.run and train.fuse import: progress bars, the report's plots (at the end of a run, so checked
first), TOML configs on Python 3.10. DALI and simplejpeg are optional there (a fallback, said in the log)."""
PREPARE = ("tqdm", "cv2")
"""What train.prepare imports: progress bars and OpenCV (face detection, decoding, encoding)."""


class MissingExtra(ImportError):
    """An optional package a command needs is not importable; one line."""


def require(modules: Sequence[str], what: str, extra: str = "predict") -> None:
    """Import each module; the first that fails raises MissingExtra naming it and the extra."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            cause = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise MissingExtra(
                f"{what} needs {PACKAGES.get(name, name)} ({cause}); install it with: pip install 'ddakern[{extra}]'"
            ) from None


def require_at_start(modules: Sequence[str], what: str, extra: str, module: str) -> None:
    """`require` at the top of an entry module, before the imports that need the extra: run as a script
    (`module` is "__main__"), a missing package is one line on stderr and exit code 1; imported (by the
    `ddakern` command, a test), it raises MissingExtra."""
    try:
        require(modules, what, extra)
    except MissingExtra as e:
        if module != "__main__":
            raise
        print(f"error: {e}", file=sys.stderr)
        raise SystemExit(1) from None


def for_predict(attention: bool, onnx: bool) -> list[str]:
    """What `predict` imports: OpenCV (detection, video, drawing), tqdm; matplotlib for --attention;
    onnxruntime for an exported .onnx."""
    return ["cv2", "tqdm", *(["matplotlib"] if attention else []), *(["onnxruntime"] if onnx else [])]
