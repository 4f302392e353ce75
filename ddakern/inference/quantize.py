"""Static int8 quantization of an exported ONNX classifier (ONNX Runtime's quantizer) and its checks.

Calibration runs the fp32 model on preprocessed face crops (the run's training images) and records
each activation's range (MinMax); weights are quantized per output channel. Only convolutions (and
Gemm/MatMul) are quantized, in QDQ format: they hold nearly all the work, while the DDA attention's
softmax, gates and the residual adds stay in fp32. The first convolution (raw pixels in) and the
classifier (logits out) stay fp32 too: on the built-in recipe's model that raised top-1 agreement with
fp32 from 99.29% to 99.64% (epoch-1 model: 96.1% to 97.9%) at no measurable cost in faces/s; per-tensor
weights gave 98.9%, Percentile / Entropy calibration no gain (docs/benchmarks.md).
The ModelSpec metadata is copied, so `predict` runs the int8 file like any exported `.onnx`.
"""

from __future__ import annotations

import fnmatch
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ddakern.atomic import temp_path
from ddakern.inference.backends import SPEC_KEY

QUANT_KEY = "ddakern_quantization"
"""Metadata key of a quantized file: how it was quantized (JSON)."""
DEFAULT_OPS = ("Conv", "Gemm", "MatMul")


class BatchReader:
    """A CalibrationDataReader over N x 3 x S x S float32 inputs, `batch` at a time (ORT duck-types it)."""

    def __init__(self, x: np.ndarray, input_name: str, batch: int = 16) -> None:
        self.x, self.name, self.batch, self.i = x, input_name, batch, 0

    def get_next(self) -> dict[str, np.ndarray] | None:
        if self.i >= len(self.x):
            return None
        chunk = self.x[self.i : self.i + self.batch]
        self.i += self.batch
        return {self.name: np.ascontiguousarray(chunk, dtype=np.float32)}

    def rewind(self) -> None:
        self.i = 0


def quantize_int8(
    fp32_path: Path,
    out: Path,
    calibration: np.ndarray,
    *,
    fmt: str = "qdq",
    per_channel: bool = True,
    op_types: Sequence[str] | None = DEFAULT_OPS,
    exclude: Sequence[str] = (),
    method: str = "minmax",
    fp32_ends: bool = True,
) -> Path:
    """Write `out`: the ONNX file `fp32_path` statically quantized to int8, calibrated on `calibration`
    (float32 N x 3 x S x S, preprocessed as the model expects). `fmt` "qdq" (QuantizeLinear /
    DequantizeLinear pairs, ORT fuses them into int8 kernels) or "qoperator" (QLinearConv ...);
    `op_types` None quantizes every op type ORT can; `exclude`: node-name patterns (fnmatch) kept in fp32;
    `method`: how activation ranges are calibrated ("minmax", "percentile", "entropy"); `fp32_ends` keeps
    the first convolution (raw pixels in) and the last Gemm / MatMul (logits out) in fp32."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    if len(calibration) == 0:
        raise ValueError("int8 calibration needs at least one image")
    proto = onnx.load(str(fp32_path))
    meta = {p.key: p.value for p in proto.metadata_props}
    input_name = proto.graph.input[0].name
    options = {
        "format": fmt,
        "per_channel": per_channel,
        "op_types": list(op_types) if op_types else "all",
        "exclude": list(exclude),
        "calibration_images": int(len(calibration)),
        "calibration": method,
        "fp32_ends": fp32_ends,
    }
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix=".quantize.", dir=out.parent) as work, temp_path(out, ".onnx") as tmp:
        pre = Path(work) / "pre.onnx"  # shape inference + graph optimisation first, as ORT advises
        quant_pre_process(str(fp32_path), str(pre))
        nodes = list(onnx.load(str(pre)).graph.node)  # topological order
        excluded = [n.name for n in nodes if any(fnmatch.fnmatchcase(n.name, pattern) for pattern in exclude)]
        if fp32_ends:
            excluded += [n.name for n in nodes if n.op_type == "Conv"][:1]
            excluded += [n.name for n in nodes if n.op_type in ("Gemm", "MatMul")][-1:]
        quantize_static(
            str(pre), str(tmp), BatchReader(calibration, input_name),
            quant_format=QuantFormat.QDQ if fmt == "qdq" else QuantFormat.QOperator,
            op_types_to_quantize=list(op_types) if op_types else None,
            per_channel=per_channel, activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
            nodes_to_exclude=excluded, calibrate_method=methods[method],
        )  # fmt: skip
        q = onnx.load(str(tmp))
        del q.metadata_props[:]
        for key, value in {**meta, QUANT_KEY: json.dumps(options)}.items():
            entry = q.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(q, str(tmp))
    return out


def session(path: Path, threads: int | None = None):
    """A CPU ONNX Runtime session of `path` (`threads` intra-op threads; None: ORT's default)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])


def logits(sess, x: np.ndarray, batch: int = 32) -> np.ndarray:
    """The session's logits of x, `batch` inputs per run."""
    name = sess.get_inputs()[0].name
    chunks = [np.ascontiguousarray(x[i : i + batch], np.float32) for i in range(0, len(x), batch)]
    out = [sess.run(None, {name: c})[0] for c in chunks]
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def agreement(a: np.ndarray, b: np.ndarray) -> float:
    """Fraction of rows whose top-1 class is the same in logits a and b."""
    return float(np.mean(a.argmax(1) == b.argmax(1))) if len(a) else float("nan")


def faces_per_s(sess, x: np.ndarray, rounds: int = 3) -> float:
    """Faces/s of the session on x in one batch: the best of `rounds` timed runs after a warm-up."""
    name = sess.get_inputs()[0].name
    x = np.ascontiguousarray(x, np.float32)
    sess.run(None, {name: x})
    best = min(_timed(sess, name, x) for _ in range(rounds))
    return len(x) / best


def _timed(sess, name: str, x: np.ndarray) -> float:
    t = time.perf_counter()
    sess.run(None, {name: x})
    return time.perf_counter() - t


def spec_json(path: Path) -> str | None:
    """The ModelSpec JSON stored in an exported ONNX file (None if absent)."""
    import onnx

    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}.get(SPEC_KEY)
