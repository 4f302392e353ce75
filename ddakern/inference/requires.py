"""The optional packages a command needs, checked when it starts, before any work.

`pip install 'ddakern[predict]'` installs every one of them; a missing (or broken) one is a
`MissingExtra` whose message is one line naming the package and the extra.
"""

from __future__ import annotations

import importlib

PACKAGES = {
    "cv2": "opencv-python-headless",
    "tqdm": "tqdm",
    "matplotlib": "matplotlib",
    "onnx": "onnx",
    "onnxruntime": "onnxruntime",
}
"""Import name -> the package on PyPI that provides it (all in the [predict] extra)."""


class MissingExtra(ImportError):
    """An optional package a command needs is not importable; one line."""


def require(modules: list[str], what: str, extra: str = "predict") -> None:
    """Import each module; the first that fails raises MissingExtra naming it and the extra."""
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as e:
            cause = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise MissingExtra(
                f"{what} needs {PACKAGES.get(name, name)} ({cause}); install it with: pip install 'ddakern[{extra}]'"
            ) from None


def for_predict(attention: bool, onnx: bool) -> list[str]:
    """What `predict` imports: OpenCV (detection, video, drawing), tqdm; matplotlib for --attention;
    onnxruntime for an exported .onnx."""
    return ["cv2", "tqdm", *(["matplotlib"] if attention else []), *(["onnxruntime"] if onnx else [])]
