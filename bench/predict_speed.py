"""Prediction speed against the classifier alone, every figure measured in one run, interleaved.

    PYTHONPATH=. python bench/predict_speed.py                      # CPU: built-in 64 px model and resnet34_dda
    PYTHONPATH=. python bench/predict_speed.py --models builtin --rounds 5
    PYTHONPATH=. python bench/predict_speed.py --device cuda --models resnet34 --photos 96 --frames 96

Inputs are made here: `--photos` JPEGs of 1024 x 768 with one real face each (skimage's astronaut,
150-260 px, pasted on three backgrounds at varied places) and an MJPG video of `--frames` such frames.
Models have random weights (speed does not depend on them): "builtin" is the built-in recipe's model
(resnet18_dda, DDA after stage 4, width 64) at 64 px, batch 32; "resnet34" the published resnet34_dda
(DDA after every stage) at 224 px, batch 16. Each round measures, one after the other:
- detection per photo: today's detector (full resolution, scale factor 1.1, min face 4% of the short
  side) and the new one (a copy with the smallest face at 40 px, scale factor 1.2), on decoded photos;
- the classifier alone: `Predictor.classify` on face crops (preprocessing included), full batches;
- photos: `Predictor.predict_stream` over the JPEG paths (decode, detect, crop, classify, overlapped);
- video: frames decoded in a reader thread into `predict_stream` (as `predict` does);
- "before" (builtin only): the previous flow, decode + old detector + classify one after the other.
The figures are medians over `--rounds`; ratios are to the classifier alone in the same run.
`wait` is the time the classifying thread waited for prepared images (decode + detect) beside its
classify time: on CUDA the classifier never waits for the detector when wait stays near 0.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from ddakern.inference.backends import TorchBackend
from ddakern.inference.checkpoint import ModelSpec
from ddakern.inference.detect import Detection
from ddakern.inference.images import read_image
from ddakern.inference.predictor import Predictor
from ddakern.inference.prefetch import StreamStats, background
from ddakern.models import create

CLASSES = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
MODELS = {
    "builtin": ("resnet18_dda", {"dda_stages": (4,), "width": 64, "spatial_width": 64}, 64, 32),
    "resnet34": ("resnet34_dda", {}, 224, 16),
}


def make_photos(folder: Path, n: int) -> list[Path]:
    import cv2
    from PIL import Image
    from skimage import data

    a = data.astronaut()
    face = a[112 - 96 : 112 + 96, 222 - 96 : 222 + 96]  # the face (about 96 px) and as much around it
    backgrounds = [cv2.resize(b, (1024, 768)) for b in (data.coffee(), data.chelsea(), data.rocket())]
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = backgrounds[i % 3].copy()
        side = int(rng.integers(300, 520))  # the face 150-260 px
        x, y = int(rng.integers(0, 1024 - side)), int(rng.integers(0, 768 - side))
        img[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
        paths.append(folder / f"photo{i:03d}.jpg")
        Image.fromarray(img).save(paths[-1], quality=90)
    return paths


def make_video(path: Path, photos: list[Path], n: int) -> Path:
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 25, (1024, 768))
    for i in range(n):
        writer.write(cv2.cvtColor(read_image(photos[i % len(photos)]), cv2.COLOR_RGB2BGR))
    writer.release()
    return path


class OldHaar:
    """The detector before this change: full resolution, scale factor 1.1, min face 4% of the short side."""

    def __init__(self) -> None:
        import cv2

        self.cv2 = cv2
        self.c = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")

    def __call__(self, rgb: np.ndarray) -> list[Detection]:
        cv2 = self.cv2
        gray = cv2.equalizeHist(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
        side = max(20, int(0.04 * min(gray.shape)))
        rects, _, w = self.c.detectMultiScale3(gray, 1.1, 5, minSize=(side, side), outputRejectLevels=True)
        return [
            Detection((int(x), int(y), int(x + bw), int(y + bh)), float(s))
            for (x, y, bw, bh), s in zip(np.asarray(rects).reshape(-1, 4), np.asarray(w).reshape(-1))
            if s >= 2.0
        ]


def video_frames(path: Path):
    import cv2

    cap = cv2.VideoCapture(str(path))
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                return
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(name: str, args: argparse.Namespace, photos: list[Path], video: Path) -> dict[str, list[float]]:
    model_name, opts, size, batch = MODELS[name]
    batch = args.batch or batch
    torch.manual_seed(0)
    model = create(model_name, num_classes=len(CLASSES), **opts).eval()
    spec = ModelSpec(model_name, CLASSES, size, "unit", tuple(opts.get("dda_stages", (1, 2, 3, 4))), {})
    backend = TorchBackend(model, args.device)
    pred = Predictor(backend, spec, batch_size=batch, workers=args.workers)
    old = OldHaar()
    decoded = [read_image(p) for p in photos]
    crops = [c for rgb in decoded[:batch] for _, _, c in pred.detect(rgb)][:batch]
    while len(crops) < batch:
        crops += crops[: batch - len(crops)]
    pred.classify(crops)  # warm-up
    sync(backend.device)
    fig: dict[str, list[float]] = {}

    def add(key: str, value: float) -> None:
        fig.setdefault(key, []).append(value)

    for r in range(args.rounds):
        t = time.perf_counter()
        for rgb in decoded[: args.detect_photos]:
            old(rgb)
        add("detect old ms/photo", 1e3 * (time.perf_counter() - t) / args.detect_photos)
        t = time.perf_counter()
        for rgb in decoded[: args.detect_photos]:
            pred.detector(rgb)
        add("detect new ms/photo", 1e3 * (time.perf_counter() - t) / args.detect_photos)

        n = max(1, len(photos) // batch)
        t = time.perf_counter()
        for _ in range(n):
            pred.classify(crops)
        sync(backend.device)
        add("classifier faces/s", n * batch / (time.perf_counter() - t))

        st = StreamStats()
        t = time.perf_counter()
        faces = sum(len(res.faces) for _, res in pred.predict_stream(photos, stats=st))
        add("photos faces/s", faces / (time.perf_counter() - t))
        add("photos wait/classify", st.wait_s / max(st.classify_s, 1e-9))

        st = StreamStats()
        t = time.perf_counter()
        frames = background(video_frames(video), depth=2 * pred.workers + 2)
        faces = sum(len(res.faces) for _, res in pred.predict_stream(frames, stats=st))
        add("video faces/s", faces / (time.perf_counter() - t))
        add("video wait/classify", st.wait_s / max(st.classify_s, 1e-9))

        if name == "builtin" and not args.no_before:
            before = Predictor(backend, spec, detector=old, batch_size=batch)
            t, faces = time.perf_counter(), 0
            for start in range(0, len(photos), batch):  # the old run_images: a chunk at a time, one after the other
                rgbs = [read_image(p) for p in photos[start : start + batch]]
                found = [before.detect(rgb) for rgb in rgbs]
                probs = before.classify([c for f in found for _, _, c in f])
                faces += len(probs)
            add("before faces/s", faces / (time.perf_counter() - t))
        print(f"  {name} round {r + 1}/{args.rounds} done", file=sys.stderr, flush=True)
    return fig


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="builtin,resnet34", help="comma list of: builtin, resnet34")
    p.add_argument("--device", default="cpu")
    p.add_argument("--photos", type=int, default=24)
    p.add_argument("--frames", type=int, default=24)
    p.add_argument("--detect-photos", type=int, default=8, help="photos timed for detection alone per round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, help="classifier batch (default: 32 builtin, 16 resnet34)")
    p.add_argument("--workers", type=int, help="decode + detect threads (default: cores, at most 4)")
    p.add_argument("--no-before", action="store_true", help="skip the previous flow (slow)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        photos = make_photos(Path(tmp), args.photos)
        video = make_video(Path(tmp) / "clip.avi", photos, args.frames)
        print(f"device {args.device}, torch threads {torch.get_num_threads()}, {args.rounds} rounds (medians)")
        for name in args.models.split(","):
            fig = measure(name, args, photos, video)
            med = {k: statistics.median(v) for k, v in fig.items()}
            alone = med["classifier faces/s"]
            print(f"{name}: {MODELS[name][0]} at {MODELS[name][2]} px, batch {args.batch or MODELS[name][3]}")
            for k, v in med.items():
                ratio = (
                    f"  ({v / alone:.3f}x the classifier alone)"
                    if k.endswith("faces/s") and k != "classifier faces/s"
                    else ""
                )
                print(f"  {k:24s} {v:9.2f}{ratio}")
            if "before faces/s" in med:
                gain = (med["photos faces/s"] / alone) / (med["before faces/s"] / alone)
                print(f"  photos ratio / before ratio: {gain:.1f}x")
            print(f"  detection (new) / classifier time per face: {med['detect new ms/photo'] * alone / 1e3:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
