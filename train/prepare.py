"""`python -m train.prepare --data-root DIR --out DIR2`: face crops of a class-folder set of photos.

Every image under DIR (any folder layout: class folders, train/test/<class>, ...) is searched for faces;
the largest one is cropped (square, with a margin, levelled by the eye line) and written to the same
relative path under DIR2, so DIR2 trains with `python -m train.run --recipe folders --data-root DIR2`.
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

from .data.errors import DataError
from .data.scan import image_files
from .face_detect import Detector, crop_face, detect_largest_face, load_detector


@dataclass
class PrepareReport:
    """What one pass did; saved as prepare_report.json (lists relative to the data root)."""

    images: int = 0
    written: int = 0
    existing: int = 0
    no_face: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


def read_rgb(path: Path) -> np.ndarray | None:
    """RGB uint8 image, or None when OpenCV cannot decode it."""
    import cv2

    data = np.fromfile(path, dtype=np.uint8)
    image = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    return None if image is None else cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


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
    image = read_rgb(src)
    if image is None:
        return "unreadable"
    box = detector(image)
    if box is None:
        return "no_face"
    write_bytes(dst, encode(crop_face(image, box, size, margin, align), dst.suffix))
    return "written"


def prepare(
    root: Path,
    out: Path,
    *,
    detector: Detector = detect_largest_face,
    size: int = 224,
    margin: float = 0.2,
    align: bool = True,
    workers: int = 2,
    progress: bool = True,
) -> PrepareReport:
    """Crop the largest face of every image under `root` into the same relative path under `out`."""
    root, out = Path(root), Path(out)
    if not root.is_dir():
        raise DataError(f"{root}: data folder does not exist")
    if out.resolve() == root.resolve() or root.resolve() in out.resolve().parents:
        raise DataError(f"{out}: the output folder must lie outside the data root {root}")
    if detector is detect_largest_face:
        load_detector()
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
    p.add_argument("--workers", type=int, default=2, help="detection threads")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.size < 0 or args.margin < 0 or args.workers < 1:
        print("error: --size and --margin must be >= 0, --workers >= 1", file=sys.stderr)
        return 2
    try:
        options = dict(size=args.size, margin=args.margin, align=args.align, workers=args.workers)
        r = prepare(args.data_root, args.out, progress=args.progress, **options)
    except (DataError, RuntimeError) as e:
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
