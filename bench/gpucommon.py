"""Shared bits of bench/gpu_check.sh's stage scripts: device and dry-run mode, environment record.

GPU_CHECK_DRY_RUN=1 (set by `bash bench/gpu_check.sh --dry-run`) runs every stage on CPU with tiny shapes
and the Triton kernels through the interpreter (TRITON_INTERPRET=1, set by the shell before any import),
so the whole check can be tried, and tested in CI, without a GPU.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# packages the GPU machine lacks (or that the check must not need): never imported by a stage
FORBIDDEN_MODULES = ("nvidia.dali", "tqdm", "matplotlib", "cv2", "onnx", "onnxruntime", "PIL", "skimage", "pandas")


def dry_run() -> bool:
    """Whether this is a CPU dry run (GPU_CHECK_DRY_RUN=1)."""
    return os.environ.get("GPU_CHECK_DRY_RUN", "0") not in ("", "0")


def device() -> torch.device:
    """CUDA for the real check, CPU for a dry run; no CUDA outside a dry run is a one-line error."""
    if dry_run():
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (bash bench/gpu_check.sh --dry-run runs on CPU)")
    return torch.device("cuda")


def sync(dev: torch.device) -> None:
    """Wait for queued work on dev (no-op on CPU)."""
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def peak_reset(dev: torch.device) -> None:
    """Start a new peak-memory window (CUDA only)."""
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)


def peak_bytes(dev: torch.device) -> int | None:
    """torch.cuda.max_memory_allocated since the last reset (None on CPU)."""
    return int(torch.cuda.max_memory_allocated(dev)) if dev.type == "cuda" else None


def release(dev: torch.device) -> None:
    """Free cached blocks between rows so each row's peak is its own."""
    import gc

    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()


def error_line(exc: BaseException) -> str:
    """One line naming an exception (rows record it and the stage goes on)."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


def sanitizer() -> str | None:
    """Path of compute-sanitizer: on PATH or under /usr/local/cuda*/bin (None when absent)."""
    found = shutil.which("compute-sanitizer")
    if found:
        return found
    for base in sorted(Path("/usr/local").glob("cuda*"), reverse=True):
        tool = base / "bin" / "compute-sanitizer"
        if tool.is_file() and os.access(tool, os.X_OK):
            return str(tool)
    return None


def nvidia_smi() -> dict[str, str]:
    """Driver version, GPU name and memory as nvidia-smi reports them ({} without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return {}
    fields = "driver_version,name,memory.total,clocks.max.sm,power.limit"
    try:
        out = subprocess.run(
            ["nvidia-smi", f"--query-gpu={fields}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.splitlines()
    except (OSError, subprocess.SubprocessError):
        return {}
    return dict(zip(fields.split(","), (v.strip() for v in out[0].split(",")), strict=False)) if out else {}


def environment(dev: torch.device) -> dict[str, Any]:
    """Versions and the device: what a result must be read against."""
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "missing"
    import numpy

    env: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_cuda": torch.version.cuda,
        "triton": triton_version,
        "numpy": numpy.__version__,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "device": str(dev),
        "dry_run": dry_run(),
        "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "compute_sanitizer": sanitizer(),
        # Triton builds its launcher and Inductor its CPU kernels with a C compiler: a missing one is named
        # here, before the first compile fails with a longer message
        "c_compiler": next((p for p in map(shutil.which, ("cc", "gcc", "clang")) if p), None),
        "optional": {m: _exists(m) for m in ("torchvision", "nvidia.dali")},
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        env.update(
            gpu=props.name,
            capability=f"{props.major}.{props.minor}",
            sms=props.multi_processor_count,
            gpu_memory_gib=round(props.total_memory / 2**30, 1),
            nvidia_smi=nvidia_smi(),
        )
    return env


def _exists(name: str) -> bool:
    """Whether module `name` could be imported (without importing it, parents aside)."""
    import importlib.util

    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def loaded_modules() -> dict[str, Any]:
    """Top-level modules this process imported from outside the standard library, and any forbidden one."""
    loaded = {m.split(".")[0] for m, mod in sys.modules.items() if mod is not None and not m.startswith("_")}
    names = sorted(loaded - set(sys.stdlib_module_names))
    return {"third_party": names, "forbidden": [m for m in FORBIDDEN_MODULES if sys.modules.get(m) is not None]}
