"""The vectorised AffectNet CSV reader against a plain per-line reference, on a few thousand generated rows
in the real format with every kind of odd row mixed in, read in tiny chunks so rows of both paths meet at
chunk boundaries: the same kept rows in the same order, the same problems (file and line), the same
dropped counts."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from layout_files import AFFECTNET_HEADER

from train.data import affectnet_csv
from train.data.affectnet_csv import parse_row, read_rows

ODD = [
    "{rel},134.0,2,300,300,{lm},1,0.1,0.2",  # float box: kept by the exact path
    "{rel},1,2,300,300,{lm}, 1 ,0.1,0.2",  # spaces around the expression
    '"{rel}",1,2,300,300,"{lm}",3,0.1,0.2',  # quoted fields
    " {rel} ,1,2,300,300,{lm},2,0.1,0.2",  # spaces around the path
    "{back},1,2,300,300,{lm},4,0.1,0.2",  # Windows separator
    "{rel},1,2,1234567890,300,{lm},5,0.1,0.2",  # ten digits
    "{rel},-1,2,300,300,{lm},1,0.1,0.2",  # negative box
    "{rel},1,2,0,300,{lm},1,0.1,0.2",  # empty box
    "{rel},1,2,300,300,{lm},11,0.1,0.2",  # expression out of range
    "{rel},1,2,300,300,{lm},x,0.1,0.2",  # expression not an integer
    "{rel},1,2,a,300,{lm},1,0.1,0.2",  # box not numeric
    "0/missing.jpg,1,2,300,300,{lm},1,0.1,0.2",  # no such image
    "{rel},1,2,300,{lm},1,0.1,0.2",  # a field short
    "{rel},1,2,300,300,{lm},1,0.1,0.2,9",  # a field too many
    "",  # blank line
    "{rel},1,2,300,300,{lm},9,0.1,0.2",  # non-emotion: dropped
    "{rel},1,2,300,300,{lm},,0.1,0.2",  # empty expression
]


def reference(path: Path, images: Path, num_classes: int, existing: set[str]):
    """The per-line reader: decode, split (csv for quoted lines), parse_row, look the image up."""
    rels, labels, boxes, bad, dropped = [], [], [], [], Counter()
    header = None
    for number, raw in enumerate(path.read_bytes().removeprefix(b"\xef\xbb\xbf").split(b"\n"), start=1):
        try:
            text = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError as e:
            bad.append(f"{path} line {number}: not UTF-8 text (byte 0x{raw[e.start]:02x})")
            continue
        if not text:
            continue
        row = text.split(",") if '"' not in text else next(csv.reader([text]))
        if header is None:
            header = [h.strip() for h in row]
            col = {c: header.index(c) for c in affectnet_csv.CSV_COLUMNS}
            continue
        try:
            if len(row) != len(header):
                raise ValueError(f"{len(row)} fields, the header has {len(header)}")
            rel, label, box = parse_row(row, col, num_classes)
            if rel not in existing:
                raise ValueError(f"image {images / rel} missing")
        except ValueError as e:
            bad.append(f"{path} line {number}: {e}")
            continue
        if label is None:
            dropped[int(row[col["expression"]])] += 1
            continue
        rels.append(rel), labels.append(label), boxes.append(box)
    return rels, labels, boxes, bad, dropped


def write_csv(path: Path, rows: int, seed: int, crlf: bool, bom: bool) -> set[str]:
    rng = np.random.default_rng(seed)
    existing = {f"{i % 13}/{i:08x}.jpg" for i in range(rows)}
    lines = [AFFECTNET_HEADER]
    for i in range(rows):
        rel = f"{i % 13}/{i:08x}.jpg"
        lm = ";".join(f"{v:.2f}" for v in rng.uniform(0, 500, 8))
        if rng.random() < 0.15:
            lines.append(ODD[int(rng.integers(len(ODD)))].format(rel=rel, back=rel.replace("/", "\\"), lm=lm))
        else:
            box = rng.integers(0, 400, 4) + [0, 0, 1, 1]
            lines.append(f"{rel},{','.join(map(str, box))},{lm},{rng.integers(0, 11)},0.5,-0.25")
    data = ("\r\n" if crlf else "\n").join(lines).encode()
    data = data.replace(b"/00000011.jpg", b"/0000\xe9011.jpg")  # a byte that is not UTF-8
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data)  # no final line end
    return existing


@pytest.mark.parametrize("crlf, bom, chunk", [(False, False, 1 << 12), (True, True, 1 << 10), (False, True, 1 << 24)])
@pytest.mark.parametrize("num_classes", [7, 8])
def test_fast_reader_matches_the_per_line_reader(tmp_path, monkeypatch, crlf, bom, chunk, num_classes) -> None:
    monkeypatch.setattr(affectnet_csv, "CHUNK", chunk)
    path, images = tmp_path / "training.csv", tmp_path / "Manually_Annotated_Images"
    existing = write_csv(path, 3000, seed=chunk + crlf, crlf=crlf, bom=bom)
    got = read_rows(path, images, num_classes, existing)
    rels, labels, boxes, bad, dropped = reference(path, images, num_classes, existing)
    assert got.rels == rels
    assert np.concatenate(got.labels).tolist() == labels
    assert np.concatenate(got.boxes).tolist() == boxes
    assert got.bad == bad and len(bad) > 100
    assert got.dropped == dropped
    assert any("not UTF-8" in b for b in bad) and any("missing" in b for b in bad)
    assert sum("\\" in r or " " in r for r in rels) == 0 and len(rels) > 1500
