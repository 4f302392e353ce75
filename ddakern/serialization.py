"""Safe loading: reading a checkpoint or a pretrained pickle never runs code from the file.

`torch.load(weights_only=True)` admits tensors and plain containers; training checkpoints also hold
numpy's RNG state (a tuple with a uint32 array) and numpy scalars, so exactly the numpy globals that
rebuild arrays, scalars and dtypes are allow-listed (`NUMPY_GLOBALS`). Pickles of numpy arrays (the
VGGFace2 `.pkl` files) go through `RestrictedUnpickler`, which admits the same globals and nothing
else. A file that needs any other global is refused with `UnsafeFileError`, one line naming the file
and the global.
"""

from __future__ import annotations

import codecs
import os
import pickle
import re
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch

_MULTIARRAY = np._core.multiarray  # type: ignore[attr-defined]
_DTYPE_CLASSES = tuple(
    getattr(np.dtypes, name) for name in dir(np.dtypes) if name.endswith("DType") and name != "StringDType"
)


def _numpy_globals() -> dict[str, Any]:
    """'module.name' -> object for every global a pickle of numpy arrays, scalars and dtypes uses,
    under numpy 2's module paths and numpy 1's (`numpy.core`), so older files load too."""
    found: dict[str, Any] = {}
    for module in ("numpy._core.multiarray", "numpy.core.multiarray"):
        found[f"{module}._reconstruct"] = _MULTIARRAY._reconstruct
        found[f"{module}.scalar"] = _MULTIARRAY.scalar
    found["numpy.ndarray"] = np.ndarray
    found["numpy.dtype"] = np.dtype
    for cls in _DTYPE_CLASSES:
        found[f"numpy.dtypes.{cls.__name__}"] = cls
    # protocol-2 pickles written by Python 3 rebuild bytes (array buffers) as _codecs.encode(str, "latin1");
    # torch's weights-only unpickler admits it too: it only encodes a string
    found["_codecs.encode"] = codecs.encode
    return found


NUMPY_GLOBALS: dict[str, Any] = _numpy_globals()
"""The only globals a safely loaded file may name."""


class UnsafeFileError(ValueError):
    """A file needs globals outside the allow-list (loading it could run code); the message names both."""


def _refusal(path: str | os.PathLike, what: str) -> UnsafeFileError:
    return UnsafeFileError(
        f"{path}: refused to load: it needs {what}, which could run code (only tensors, numpy arrays "
        "and plain Python values are admitted)"
    )


@contextmanager
def quiet_protocol_warning() -> Iterator[None]:
    """Silence torch's "Detected pickle protocol N" warning while a file is read: a damaged file whose
    bytes happen to start like pickle protocol 3-5 triggers it before the error, so the user's one-line
    error would come second after two lines of advice that do not apply."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
        yield


def torch_load(path: str | os.PathLike, map_location: str | torch.device | None = "cpu") -> Any:
    """`torch.load(path, weights_only=True)` with the numpy globals allow-listed.

    Raises UnsafeFileError naming the first global the file needs beyond that; other read errors
    (missing, truncated, not a torch file) propagate as torch raises them.
    """
    allowed = [(obj, name) for name, obj in NUMPY_GLOBALS.items()]
    with torch.serialization.safe_globals(allowed), quiet_protocol_warning():
        try:
            return torch.load(path, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as e:
            name = _global_named_in(str(e))
            if name is None:
                raise pickle.UnpicklingError(f"not a torch file, or damaged: {_detail(str(e))}") from None
            raise _refusal(path, f"the global {name}") from None


def _global_named_in(message: str) -> str | None:
    """The global torch's weights-only unpickler rejected, from its message (None: another failure)."""
    m = re.search(r"GLOBAL ([\w.]+)", message) or re.search(r"global:? ([\w.]+)", message, re.IGNORECASE)
    return m.group(1) if m else None


def _detail(message: str) -> str:
    """The informative line of torch's weights-only error (it wraps every unpickling failure)."""
    rest = message.split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in rest.splitlines() if line.strip()]
    return lines[0] if lines else "unpickling failed"


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds numpy arrays, scalars and dtypes and refuses every other global."""

    def __init__(self, file: BinaryIO, *, source: str | os.PathLike, **kwargs: Any) -> None:
        super().__init__(file, **kwargs)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        key = f"{module}.{name}"
        if key in NUMPY_GLOBALS:
            return NUMPY_GLOBALS[key]
        raise _refusal(self.source, f"the global {key}")


def load_numpy_pickle(path: str | os.PathLike, *, encoding: str = "latin1") -> Any:
    """Read a pickle of numpy arrays (and plain containers) without running code from it."""
    path = Path(path)
    with open(path, "rb") as fh:
        return RestrictedUnpickler(fh, source=path, encoding=encoding).load()


__all__ = ["NUMPY_GLOBALS", "RestrictedUnpickler", "UnsafeFileError", "load_numpy_pickle", "torch_load"]
