"""Predictor API and face detection on real photographs (skimage), every input kind, batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from predict_helpers import astronaut, coffee, write_checkpoint

from ddakern.inference import NO_FACE_NOTE, HaarDetector, Predictor, make_detector
from ddakern.inference.detect import DetectorError, crop, square_box

pytest.importorskip("cv2")
pytest.importorskip("skimage")


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    path = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")
    return Predictor.from_checkpoint(path, device="cpu", batch_size=4)


def test_haar_finds_the_astronauts_one_face_at_the_right_place():
    faces = HaarDetector()(astronaut())
    assert len(faces) == 1
    x0, y0, x1, y1 = faces[0].box
    # Eileen Collins' face: centre near (222, 112) in the 512 x 512 photo, about 95 px wide
    assert abs((x0 + x1) / 2 - 222) < 20 and abs((y0 + y1) / 2 - 112) < 20
    assert 70 < x1 - x0 < 130 and faces[0].score > 0


def test_no_face_in_coffee_gives_a_note(predictor):
    result = predictor.predict(coffee())
    assert result.faces == [] and result.note == NO_FACE_NOTE


def test_several_faces_per_image(predictor):
    two = np.concatenate([astronaut(), astronaut()[:, ::-1]], axis=1)
    result = predictor.predict(two)
    assert len(result.faces) == 2
    assert result.faces[0].box[0] < 512 <= result.faces[1].box[0]


def test_every_input_kind_gives_the_same_record(predictor, tmp_path):
    rgb = astronaut()
    path = tmp_path / "a.png"
    Image.fromarray(rgb).save(path)
    inputs = [
        (path, "rgb"),
        (Image.fromarray(rgb), "rgb"),
        (rgb, "rgb"),
        (np.ascontiguousarray(rgb[..., ::-1]), "bgr"),
        (rgb.astype(np.float32) / 255.0, "rgb"),
        (torch.from_numpy(rgb).permute(2, 0, 1), "rgb"),
    ]
    records = [predictor.predict(x, color=c).faces for x, c in inputs]
    ref = records[0]
    assert len(ref) == 1
    for faces in records[1:]:
        assert len(faces) == 1 and faces[0].box == ref[0].box
        assert faces[0].label == ref[0].label
        np.testing.assert_allclose(
            list(faces[0].probabilities.values()), list(ref[0].probabilities.values()), atol=1e-4
        )
    face = ref[0]
    assert set(face.probabilities) == set(predictor.class_names)
    assert abs(sum(face.probabilities.values()) - 1) < 1e-5
    assert face.label == max(face.probabilities, key=face.probabilities.get)
    assert set(face.to_dict()) == {"box", "score", "crop_box", "label", "probabilities"}


def test_batching_does_not_change_results(tmp_path):
    path = write_checkpoint(tmp_path / "c.pt")
    crops = [np.random.default_rng(i).integers(0, 256, (48 + i, 48 + i, 3), dtype=np.uint8) for i in range(7)]
    one = Predictor.from_checkpoint(path, device="cpu", batch_size=1, detector="none").classify(crops)
    many = Predictor.from_checkpoint(path, device="cpu", batch_size=32, detector="none").classify(crops)
    np.testing.assert_allclose(one, many, atol=1e-5)
    assert one.shape == (7, 7)


def test_detector_none_uses_the_whole_image(predictor, tmp_path):
    p = Predictor.from_checkpoint(write_checkpoint(tmp_path / "c.pt"), device="cpu", detector="none")
    gray = np.random.default_rng(0).integers(0, 256, (48, 48), dtype=np.uint8)  # FER2013-like crop
    (face,) = p.predict(gray).faces
    assert face.box == (0, 0, 48, 48) and face.score == 1.0


def test_square_crop_with_margin_pads_outside_the_image():
    box = square_box((0, 10, 40, 30), 0.25)
    assert box[2] - box[0] == box[3] - box[1] == 60
    rgb = np.arange(50 * 50 * 3, dtype=np.uint8).reshape(50, 50, 3)
    c = crop(rgb, box)
    assert c.shape == (60, 60, 3)
    assert (c[:, 0] == c[:, box[0] * -1]).all()  # left padding replicates column 0


def test_detector_errors_are_one_line(tmp_path):
    with pytest.raises(DetectorError, match="needs its ONNX file"):
        make_detector("yunet")
    with pytest.raises(DetectorError, match="YuNet ONNX file not found"):
        make_detector("yunet", yunet_model=tmp_path / "missing.onnx")
    with pytest.raises(DetectorError, match="unknown detector"):
        make_detector("mtcnn")


def test_fusion_checkpoint_rebuilds_from_its_members(tmp_path):
    """A train.fuse-style checkpoint: model_name fusion-<method>, members named by path (relative to a folder above)."""
    from ddakern.ensemble import create_ensemble
    from ddakern.inference import load_model
    from ddakern.serialization import torch_load

    (tmp_path / "runs" / "a").mkdir(parents=True)
    (tmp_path / "runs" / "b").mkdir()
    a = write_checkpoint(tmp_path / "runs" / "a" / "best.pt", image_size=48)
    b = write_checkpoint(tmp_path / "runs" / "b" / "best.pt", model_name="resnet18", dda_stages=(), image_size=48)
    members = [load_model(a)[0], load_model(b)[0]]
    fused = create_ensemble("early", *members, 7)
    ckpt = torch_load(a)
    ckpt.update(
        model=fused.state_dict(),
        model_name="fusion-early",
        fusion={"method": "early", "members": ["runs/a/best.pt", "runs/b/best.pt"], "options": {}},
    )
    (tmp_path / "runs" / "fused").mkdir()
    path = tmp_path / "runs" / "fused" / "best.pt"
    torch.save(ckpt, path)
    model, spec = load_model(path)
    x = torch.randn(2, 3, 48, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(x), fused.eval()(x))
    assert spec.model_name == "fusion-early" and [m.model_name for m in spec.members] == ["resnet18_dda", "resnet18"]
    result = Predictor.from_checkpoint(path, device="cpu").predict(astronaut())
    assert len(result.faces) == 1
