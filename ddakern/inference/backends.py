"""Classifier backends: a PyTorch module (eager or torch.compile) or an exported ONNX file on ONNX Runtime.

Each backend maps a float32 N x 3 x S x S batch (already normalised) to N x C class probabilities.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddakern.inference.checkpoint import CheckpointError, ModelSpec

SPEC_KEY = "ddakern_spec"
"""Metadata key of exported files: the ModelSpec (classes, input size, normalisation) as JSON."""


def cuda_device_problem(dev: torch.device) -> str | None:
    """Why the CUDA device `dev` cannot be used on this machine (no GPU, or an index past the last one), in
    words that follow the device's name; None when it can."""
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return "this machine has no CUDA GPU (use auto or cpu)"
    if dev.index is not None and dev.index >= count:
        return f"this machine has {count} CUDA GPU(s), cuda:0 to cuda:{count - 1}"
    return None


def resolve_device(device: str | torch.device | None) -> torch.device:
    """ "auto"/None -> CUDA when available, else CPU. Any other value must name a device this machine has:
    a typo, CUDA without a GPU or a GPU index past the last is a one-line ValueError here, not a torch
    traceback at the model's first move."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {str(device)!r} is not a device name (auto, cpu, cuda, cuda:N)") from None
    problem = cuda_device_problem(dev) if dev.type == "cuda" else None
    if problem:
        raise ValueError(f"device {str(device)!r}: {problem}")
    return dev


def class_probabilities(
    forward: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device
) -> torch.Tensor:
    """N x C class probabilities on `device` of a batch `x` (any device): the model's part of a
    prediction, queued on the device without reading anything back (the caller reads the result)."""
    logits = forward(x.to(device, non_blocking=True))
    return torch.softmax(logits.float(), dim=1)


class TorchBackend:
    """An eval-mode module on `device`; `compile=True` wraps it in torch.compile (dynamic batch)."""

    name = "torch"

    def __init__(self, model: nn.Module, device: str | torch.device | None = "auto", compile: bool = False) -> None:
        self.device = resolve_device(device)
        self.model = model.eval().to(self.device)
        self.forward = torch.compile(self.model, dynamic=True) if compile else self.model
        if compile:
            self.name = "torch.compile"

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> np.ndarray:
        return class_probabilities(self.forward, x, self.device).cpu().numpy()


class OnnxBackend:
    """An exported `.onnx` model on ONNX Runtime (CUDA provider when available, else CPU)."""

    name = "onnxruntime"

    def __init__(self, path: str | os.PathLike, device: str | torch.device | None = "auto") -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise CheckpointError("--backend onnxruntime needs ONNX Runtime: pip install onnxruntime") from None
        path = Path(path)
        if not path.is_file():
            raise CheckpointError(f"{path}: ONNX file not found")
        dev = resolve_device(device)
        wanted = [("CUDAExecutionProvider", {"device_id": dev.index or 0})] if dev.type == "cuda" else []
        available = ort.get_available_providers()
        providers = [p for p in wanted if p[0] in available] + ["CPUExecutionProvider"]
        try:
            self.session = ort.InferenceSession(str(path), providers=providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own types for bad files
            raise CheckpointError(f"{path}: ONNX Runtime cannot load this file ({type(e).__name__})") from None
        taken = self.session.get_providers()
        if dev.type == "cuda" and "CUDAExecutionProvider" not in taken:
            # the CPU `onnxruntime` package (or an onnxruntime-gpu that cannot load its CUDA libraries) runs the
            # model on the CPU without a word: an explicit GPU is refused, auto says it runs on the CPU
            have = ", ".join(taken)
            why = (
                f"ONNX Runtime has no usable CUDA provider (providers {have}; install onnxruntime-gpu alone: "
                "beside the CPU onnxruntime package it loses its CUDA provider)"
            )
            if device not in (None, "auto"):
                raise CheckpointError(f"{path}: --device {device}: {why}; or use --device cpu")
            self.name = "onnxruntime (CPU: no usable CUDA provider)"
            print(f"{path}: running on the CPU: {why}", file=sys.stderr)
        self.input_name = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        if SPEC_KEY not in meta:
            raise CheckpointError(f"{path}: not exported by `python -m ddakern export` (no {SPEC_KEY} metadata)")
        self.spec = spec_from_json(meta[SPEC_KEY])

    def __call__(self, x: torch.Tensor) -> np.ndarray:
        (logits,) = self.session.run(None, {self.input_name: x.cpu().numpy().astype(np.float32)})
        z = logits - logits.max(axis=1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(axis=1, keepdims=True)


def spec_from_json(text: str) -> ModelSpec:
    d = json.loads(text)
    return ModelSpec(
        model_name=d["model_name"],
        class_names=tuple(d["class_names"]),
        image_size=int(d["image_size"]),
        normalize=d["normalize"],
    )
