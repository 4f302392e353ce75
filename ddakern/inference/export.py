"""Export a checkpoint's model to ONNX, TorchScript, a torch.export program or a weights-only `.pt`.

The model is rebuilt with `fused_ops=False`: the same weights in the plain-PyTorch graph, so every
fused op is lowered to standard operators (convolutions, batch norm, softmax, ...) that ONNX, the
TorchScript tracer and torch.export represent without custom symbolics. The batch axis is dynamic.
The ModelSpec (classes, input size, normalisation) travels inside the file (ONNX metadata, extra
files), so `predict` needs nothing else.

A training checkpoint (best.pt / last.pt) also holds the optimiser, scheduler and scaler states, the
RNG states and the history: what resuming needs, two thirds of the file with Adam, and numpy RNG
objects that a plain `torch.load(weights_only=True)` refuses. `--format pt` keeps what inference and
provenance need (weights, classes, architecture, input size, normalisation, the run's config), in
plain tensors and containers: 1/3 of the size, loadable by anyone with `weights_only=True`, and read
by `predict`, `Predictor` and `load_model` like the checkpoint itself.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ddakern.atomic import temp_path, torch_save
from ddakern.inference.backends import SPEC_KEY
from ddakern.inference.checkpoint import MODEL_KEYS, ModelSpec, load_model, member_path

FORMATS = {
    "onnx": ".onnx",
    "torchscript": ".torchscript.pt",
    "exported-program": ".pt2",
    "pt": ".weights.pt",
}  # torch.export.save insists on .pt2
EXTRA_FILE = f"{SPEC_KEY}.json"


def _atomic(path: Path, write: Callable[[str], None]) -> Path:
    """Run write(temp path) in path's folder, then rename the temp file to path."""
    with temp_path(path, suffix=path.suffix) as tmp:  # exporters check the suffix (.pt2)
        write(str(tmp))
    return path


def export_onnx(model: nn.Module, spec: ModelSpec, path: Path, opset: int = 17) -> Path:
    """ONNX (TorchScript-based exporter, dynamic batch axis), spec in the model's metadata_props."""
    import onnx

    x = torch.randn(2, 3, spec.image_size, spec.image_size)

    def write(tmp: str) -> None:
        torch.onnx.export(
            model, (x,), tmp, dynamo=False, opset_version=opset, input_names=["input"], output_names=["logits"],
            dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}},
        )  # fmt: skip
        proto = onnx.load(tmp)
        entry = proto.metadata_props.add()
        entry.key, entry.value = SPEC_KEY, json.dumps(spec.to_dict())
        onnx.checker.check_model(proto)
        onnx.save(proto, tmp)

    return _atomic(path, write)


def export_torchscript(model: nn.Module, spec: ModelSpec, path: Path) -> Path:
    """A traced TorchScript module (shape-generic ops, so any batch size), spec as an extra file."""
    x = torch.randn(2, 3, spec.image_size, spec.image_size)
    with torch.no_grad():
        traced = torch.jit.trace(model, x, check_trace=False)
    extra = {EXTRA_FILE: json.dumps(spec.to_dict())}
    return _atomic(path, lambda tmp: torch.jit.save(traced, tmp, _extra_files=extra))


def export_program(model: nn.Module, spec: ModelSpec, path: Path) -> Path:
    """A torch.export ExportedProgram (.pt2) with a dynamic batch dimension, spec as an extra file."""
    x = torch.randn(2, 3, spec.image_size, spec.image_size)
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (x,), dynamic_shapes=({0: batch},))
    extra = {EXTRA_FILE: json.dumps(spec.to_dict())}
    return _atomic(path, lambda tmp: torch.export.save(program, tmp, extra_files=extra))


WEIGHTS_KEYS = ("format", *MODEL_KEYS, "recipe", "dataset", "epoch", "best_metric", "best_epoch")
"""What a weights-only file keeps of a training checkpoint besides `model`, `config` and `fusion`."""


def _plain(value: Any) -> Any:
    """`value` with numpy scalars / arrays as Python numbers / lists (weights_only=True needs no allow-list)."""
    return json.loads(json.dumps(value, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))


def weights_only(ckpt: dict[str, Any], path: str | Path = "<checkpoint>") -> dict[str, Any]:
    """The inference part of a checkpoint dict: weights (own storage, not views of bigger tensors),
    what rebuilds the model, the run's config; fusion members' paths made absolute."""
    slim = {k: _plain(ckpt[k]) for k in WEIGHTS_KEYS if k in ckpt}
    slim["model"] = {k: v.detach().clone() for k, v in ckpt["model"].items()}
    slim["config"] = _plain(ckpt.get("config") or {})
    if ckpt.get("fusion"):
        fusion = _plain(ckpt["fusion"])
        fusion["members"] = [str(member_path(m, Path(path)).resolve()) for m in fusion.get("members", [])]
        slim["fusion"] = fusion
    return slim


def export_weights(ckpt: dict[str, Any], path: Path, source: str | Path = "<checkpoint>") -> Path:
    """Write `weights_only(ckpt)` to `path` (atomically)."""
    torch_save(weights_only(ckpt, source), path)
    return path


def export(model: nn.Module, spec: ModelSpec, fmt: str, path: Path) -> Path:
    model = model.eval().cpu()
    if fmt == "onnx":
        return export_onnx(model, spec, path)
    if fmt == "torchscript":
        return export_torchscript(model, spec, path)
    if fmt == "exported-program":
        return export_program(model, spec, path)
    if fmt == "pt":
        raise ValueError("weights-only files are written from the checkpoint dict: use export_weights")
    raise ValueError(f"unknown export format {fmt!r} (choose {', '.join(FORMATS)})")


def runner(fmt: str, path: Path) -> Callable[[torch.Tensor], np.ndarray]:
    """A function that runs the exported file on a batch and returns its logits (numpy)."""
    if fmt == "onnx":
        import onnxruntime as ort

        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        name = session.get_inputs()[0].name
        return lambda x: session.run(None, {name: x.numpy()})[0]
    if fmt == "pt":
        module = load_model(path)[0]
    elif fmt == "torchscript":
        module = torch.jit.load(str(path), map_location="cpu")
    else:
        module = torch.export.load(str(path)).module()

    def run(x: torch.Tensor) -> np.ndarray:
        with torch.no_grad():
            return module(x).numpy()

    return run


def parity(model: nn.Module, run: Callable[[torch.Tensor], np.ndarray], x: torch.Tensor) -> tuple[float, float]:
    """(max abs diff, max abs diff / max |reference|) between the exported file and PyTorch on x."""
    with torch.no_grad():
        ref = model.eval()(x).numpy()
    got = run(x)
    diff = float(np.abs(got - ref).max())
    return diff, diff / max(float(np.abs(ref).max()), 1e-12)
