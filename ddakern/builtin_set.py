"""Where the built-in synthetic face sets live on disk: one definition for the engine, which draws them
there, and for the library's export, which reads calibration images from them."""

from __future__ import annotations

import os
from pathlib import Path


def builtin_name(difficulty: str) -> str:
    """The built-in set's folder name: synthetic (easy) or synthetic-hard."""
    return "synthetic" if difficulty == "easy" else f"synthetic-{difficulty}"


def builtin_cache(difficulty: str = "easy") -> Path:
    """$DDAKERN_DATA/<name>, else ~/.cache/ddakern/<name> (builtin_name)."""
    if os.environ.get("DDAKERN_DATA"):
        return Path(os.environ["DDAKERN_DATA"]) / builtin_name(difficulty)
    return Path.home() / ".cache" / "ddakern" / builtin_name(difficulty)
