"""`python -m train.prepare --data-root DIR --out DIR2`: face crops of a class-folder set of photos.

Every image under DIR (any folder layout: class folders, train/test/<class>, ...) is searched for faces
with the detector prediction uses (ddakern.inference.detect: `--detector`, `--min-face` as in
`python -m ddakern predict`); the largest one is cropped (the square prediction crops, with a margin,
levelled by the eye line) and written to the same relative path under DIR2, so DIR2 trains with
`python -m train.run --recipe folders --data-root DIR2`.
Images without a face (or unreadable) are listed in DIR2/no_face.txt and DIR2/prepare_report.json.
Resumable: crops already in DIR2 are skipped. Writes are atomic (temporary file, then rename).

Exit codes: 0 done; 1 bad input (message names it); 2 bad options; 130 interrupted (report written).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from ddakern.extras import PREPARE, require_at_start

require_at_start(PREPARE, "prepare", "train", __name__)  # one line, before any import that needs [train]

import numpy as np
from tqdm import tqdm

from ddakern.atomic import write_bytes
from ddakern.cli import prog
from ddakern.inference.detect import Detector, DetectorError, face_crop, largest_face, make_detector, parse_min_face
from ddakern.inference.images import ImageError, read_image

from .data.errors import DataError
from .data.scan import image_files

PREPARE_DETECTORS = ("haar", "yunet")
"""The built-in detectors prepare offers (predict's "none" is for images that are face crops already)."""


@dataclass
class PrepareReport:
    """What one pass did; saved as prepare_report.json (lists relative to the data root)."""

    images: int = 0
    written: int = 0
    existing: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def encode(image: np.ndarray, suffix: str) -> bytes:
    """Encoded bytes in the format of `suffix` (.jpg at quality 95; unknown suffixes as PNG)."""
    import cv2

    ext = suffix.lower() if suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff") else ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if ext in (".jpg", ".jpeg") else []
    ok, buf = cv2.imencode(ext, cv2.cvtColor(image, cv2.COLOR_RGB2BGR), params)
    if not ok:
        raise DataError(f"cannot encode a {ext} image")
    return buf.tobytes()


def crop_one(src: Path, dst: Path, detector: Detector, size: int, margin: float, align: bool) -> str:
    """'written', 'no_face' or 'unreadable' for one image."""
    try:
        image = read_image(src)  # as predict reads it (EXIF orientation, 16-bit, transparency)
    except ImageError:
        return "unreadable"
    face = largest_face(detector(image))
    if face is None:
        return "no_face"
    write_bytes(dst, encode(face_crop(image, face.box, margin, size, align), dst.suffix))
    return "written"


def prepare(
    root: Path,
    out: Path,
    *,
    detector: str | Detector = "haar",
    min_face: float | None = None,
    yunet_model: Path | None = None,
    size: int = 224,
    margin: float = 0.2,
    align: bool = True,
    workers: int = 2,
    progress: bool = True,
) -> PrepareReport:
    """Crop the largest face of every image under `root` into the same relative path under `out`.
    `detector`: a name of PREPARE_DETECTORS (with `min_face`, `yunet_model`: see make_detector) or a
    callable of the library's Detector type."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist")
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise DataError(f"{out}: the output folder must lie outside the data root {root}")
    if detector == "none":
        raise DetectorError("prepare needs a face detector (haar or yunet), not 'none'")
    detector = make_detector(detector, yunet_model=yunet_model, min_face=min_face)  # one error up front
    files = [Path(f) for f in image_files(root)]
    if not files:
        raise DataError(f"{root}: no images found")
    report = PrepareReport(images=len(files))
    todo = []
    for f in files:
        dst = out / f.relative_to(root)
        if dst.is_file():
            report.existing += 1
        else:
            todo.append((f, dst))
    bar = tqdm(total=len(todo), desc="face crops", unit="img", disable=not progress, file=sys.stderr)
    try:
        with ThreadPoolExecutor(max(1, workers)) as pool:  # OpenCV releases the GIL while detecting
            results = pool.map(lambda job: crop_one(*job, detector, size, margin, align), todo)
            for (src, _), outcome in zip(todo, results):
                rel = str(src.relative_to(root))
                if outcome == "written":
                    report.written += 1
                else:
                    getattr(report, outcome).append(rel)
                bar.update()
    finally:
        bar.close()
        write_report(out, report)
    return report


def write_report(out: Path, report: PrepareReport) -> None:
    """prepare_report.json (counts and lists) and no_face.txt (one relative path per line)."""
    data = dict(report.__dict__)
    write_bytes(out / "prepare_report.json", (json.dumps(data, indent=2) + "\n").encode())
    text = "".join(f"{p}\n" for p in sorted(report.no_face + report.unreadable))
    write_bytes(out / "no_face.txt", text.encode())


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog=prog(f"{__package__}.prepare", f"python -m {__package__}.prepare"), description=__doc__.split("\n")[0]
    )
    p.add_argument("--data-root", required=True, type=Path, help="folder of images (class folders)")
    p.add_argument("--out", required=True, type=Path, help="where the crops go (same relative paths)")
    p.add_argument("--size", type=int, default=224, help="crop side in pixels (0: keep the crop's resolution)")
    p.add_argument("--margin", type=float, default=0.2, help="margin around the face box per side (fraction)")
    p.add_argument("--no-align", dest="align", action="store_false", help="do not level the eye line")
    p.add_argument("--detector", default="haar", choices=PREPARE_DETECTORS, help="face detector (as predict's)")
    p.add_argument("--yunet-model", type=Path, help="YuNet ONNX file for --detector yunet")
    p.add_argument(
        "--min-face",
        help="smallest face: pixels (>= 1) or a fraction of the short side (< 1); "
        "default 0.1 of the short side, at most 160 px (as predict)",
    )
    p.add_argument("--workers", type=int, default=2, help="detection threads")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.size < 0 or args.margin < 0 or args.workers < 1:
        print("error: --size and --margin must be >= 0, --workers >= 1", file=sys.stderr)
        return 2
    try:
        min_face = None if args.min_face is None else parse_min_face(args.min_face)
    except ValueError as e:
        print(f"error: --min-face: {e}", file=sys.stderr)
        return 2
    try:
        options = dict(size=args.size, margin=args.margin, align=args.align, workers=args.workers)
        detection = dict(detector=args.detector, min_face=min_face, yunet_model=args.yunet_model)
        r = prepare(args.data_root, args.out, progress=args.progress, **options, **detection)
    except (DataError, DetectorError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted; crops written so far are kept in {args.out} (run again to continue)", file=sys.stderr)
        return 130
    print(
        f"{r.written} crops written, {r.existing} already there, {len(r.no_face)} without a face, "
        f"{len(r.unreadable)} unreadable; report: {args.out / 'prepare_report.json'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
