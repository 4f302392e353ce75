"""Models for weights a test loads at once: allocated, not randomly initialised.

The random initialisation is most of a model's build (about 0.8 s for a DDA ResNet's 87-98 M parameters, 1.3 s
for VGG's 130 M); a test that loads a full state dict (strict) straight after gains nothing from it.
"""

from __future__ import annotations

from torch import device, nn

from ddakern.models import create


def uninitialised(name: str, **kwargs) -> nn.Module:
    """`create(name, **kwargs)` built on the meta device and given empty CPU storage: every tensor must be
    loaded (strictly) before use."""
    with device("meta"):
        model = create(name, **kwargs)
    return model.to_empty(device="cpu")
