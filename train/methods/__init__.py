"""Training methods beyond the published recipes, each in its own module and each from a kept library:
SAM/ASAM (`sam`, pytorch-optimizer), the weight EMA (`ema`, timm), RandomErasing, mixup/cutmix and the
loss they need (`mixing`, timm), and the LR schedules (`schedule`, torch and timm).

The libraries are imported only when a method is on; a missing one is a one-line ConfigError naming the
`train` extra that installs it.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from ..config import ConfigError

__all__ = ["need"]

PACKAGES = {"timm": "timm", "pytorch_optimizer": "pytorch-optimizer", "tensorboard": "tensorboard"}


def need(module: str, flag: str) -> ModuleType:
    """Import `module` for `flag`, or raise a one-line ConfigError naming the package and the extra."""
    try:
        return importlib.import_module(module)
    except ImportError:
        top = module.split(".")[0]
        package = PACKAGES.get(top, top)
        raise ConfigError(
            f"{flag} needs the {package} package: pip install '{package}' (or the extra: pip install 'ddakern[train]')"
        ) from None
