"""Nothing silently wrong: EXIF orientation, 16-bit / float / other image modes, float arrays, threads,
the smallest face searched, very large photos, detection on a downscaled copy, overlapped batches."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image
from predict_helpers import astronaut, coffee, write_checkpoint

from ddakern.inference import HaarDetector, ImageError, Predictor, to_rgb
from ddakern.inference.detect import DETECT_FACE_PX, DetectorError, ObjectPool, min_face_px, parse_min_face
from ddakern.inference.images import read_image
from ddakern.inference.prefetch import StreamStats

cv2 = pytest.importorskip("cv2")
pytest.importorskip("skimage")

FACE = (222, 112, 96)  # the astronaut's face: centre x, y and box side in the 512 x 512 photo


@pytest.fixture(scope="module")
def predictor(tmp_path_factory) -> Predictor:
    path = write_checkpoint(tmp_path_factory.mktemp("ckpt") / "best.pt")
    return Predictor.from_checkpoint(path, device="cpu", batch_size=4, workers=2)


def assert_face_at(box, cx: float, cy: float, side: float, tol: float = 0.12) -> None:
    x0, y0, x1, y1 = box
    assert abs((x0 + x1) / 2 - cx) < tol * side and abs((y0 + y1) / 2 - cy) < tol * side, box
    assert abs((x1 - x0) - side) < 2 * tol * side, box


def test_exif_orientation_6_is_turned_upright(predictor, tmp_path):
    upright = astronaut()
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # a phone's sensor data: turned 90 degrees left
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = tmp_path / "phone.png"
    Image.fromarray(stored).save(path, exif=exif)
    np.testing.assert_array_equal(read_image(path), upright)
    with Image.open(path) as im:
        np.testing.assert_array_equal(to_rgb(im), upright)
    (face,) = predictor.predict(path).faces
    assert_face_at(face.box, *FACE)


def test_16_bit_png_is_scaled_not_clipped(predictor, tmp_path):
    gray8 = cv2.cvtColor(astronaut(), cv2.COLOR_RGB2GRAY)
    gray16 = gray8.astype(np.uint16) * 257  # full 16-bit range
    path = tmp_path / "gray16.png"
    assert cv2.imwrite(str(path), gray16)
    with Image.open(path) as im:
        assert im.mode.startswith("I")  # PIL's 16-bit mode, which convert("RGB") clips to white
    expected = np.repeat(gray8[..., None], 3, axis=-1)
    np.testing.assert_array_equal(read_image(path), expected)
    np.testing.assert_array_equal(to_rgb(gray16), expected)  # uint16 arrays: the same rule
    (face,) = predictor.predict(path).faces
    assert_face_at(face.box, *FACE)


def test_other_modes_decode_to_the_right_rgb(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    alpha = np.where(np.arange(16)[None, :] < 8, 255, 0).astype(np.uint8).repeat(16, 0)
    white_where_clear = np.where(alpha[..., None] == 255, rgb, 255)
    cases = {
        "RGBA": (Image.fromarray(np.dstack([rgb, alpha])), white_where_clear),
        "LA": (
            Image.fromarray(np.dstack([gray, alpha]), "LA"),
            np.where(alpha == 255, gray, 255)[..., None].repeat(3, -1),
        ),
        "P": (Image.fromarray(rgb).quantize(256), None),
        "CMYK": (Image.fromarray(rgb).convert("CMYK"), rgb),
        "I": (Image.fromarray(gray.astype(np.int32) * 257), gray[..., None].repeat(3, -1)),
        "F 0..1": (Image.fromarray(gray.astype(np.float32) / 255), gray[..., None].repeat(3, -1)),
        "F 0..255": (Image.fromarray(gray.astype(np.float32)), gray[..., None].repeat(3, -1)),
    }
    for name, (im, want) in cases.items():
        got = to_rgb(im)
        assert got.dtype == np.uint8 and got.shape == (16, 16, 3), name
        want = np.asarray(im.convert("RGB")) if want is None else want
        np.testing.assert_array_equal(got, want, err_msg=name)
    with pytest.raises(ImageError, match=r"float image with values 0\.\.300"):
        to_rgb(Image.fromarray(np.linspace(0, 300, 256, dtype=np.float32).reshape(16, 16)))
    with pytest.raises(ImageError, match="32-bit integer image"):
        to_rgb(Image.fromarray(np.full((4, 4), 70000, np.int32)))


@pytest.mark.parametrize("mode", ["RGB", "L"])
@pytest.mark.parametrize("progressive", [False, True])
def test_jpeg_fast_path_gives_pil_pixels_and_refuses_corrupt_data(tmp_path, mode, progressive):
    """JPEGs decode through simplejpeg (0.4x PIL's time): the pixels must be PIL's, exactly."""
    pytest.importorskip("simplejpeg")
    path = tmp_path / "photo.jpg"
    Image.fromarray(coffee()).convert(mode).save(path, quality=87, progressive=progressive)
    with Image.open(path) as im:
        want = np.asarray(im.convert("RGB"))
    np.testing.assert_array_equal(read_image(path), want)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut by a copy in progress
    with pytest.raises(ImageError, match=r"photo\.jpg: not a readable image"):
        read_image(path)


def test_float_arrays_are_0_to_1_or_refused():
    rgb = astronaut()
    unit = rgb.astype(np.float32) / 255.0
    np.testing.assert_array_equal(to_rgb(unit), rgb)
    np.testing.assert_array_equal(
        to_rgb(torch.from_numpy(unit).permute(2, 0, 1).to(torch.bfloat16).float()), to_rgb(unit)
    )
    np.testing.assert_array_equal(
        to_rgb(np.clip(unit + 1e-4, 0, 1.001)), to_rgb(np.clip(unit + 1e-4, 0, 1))
    )  # rounding
    for bad, shown in [(rgb.astype(np.float32), "0..255"), (np.full((8, 8), np.nan), "nan"), (-unit, "-1")]:
        with pytest.raises(ImageError, match="must lie in \\[0, 1\\].*divide 0..255 data by 255") as e:
            to_rgb(bad)
        assert shown in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ImageError, match="uint8.*uint16.*float"):
        to_rgb(rgb.astype(np.int64))


def test_predict_from_4_threads_equals_predict_alone(predictor):
    a = astronaut()
    images = [a, np.concatenate([a, a[:, ::-1]], axis=1), coffee(), cv2.resize(a, (384, 384))]
    alone = [predictor.predict(im) for im in images]
    assert [len(r.faces) for r in alone] == [1, 2, 0, 1]
    results: dict[tuple[int, int], object] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work(t: int) -> None:
        start.wait()
        try:
            for k in range(6):
                i = (t + k) % len(images)
                results[t, k] = (i, predictor.predict(images[i]))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(results) == 24
    for i, res in results.values():
        ref = alone[i]
        assert [f.box for f in res.faces] == [f.box for f in ref.faces]
        for f, g in zip(res.faces, ref.faces):
            np.testing.assert_allclose(list(f.probabilities.values()), list(g.probabilities.values()), atol=1e-6)
    # each call borrowed a cascade of its own; they were kept, not loaded again per call or per thread
    assert 1 <= predictor.detector.pool.made <= 4
    made = predictor.detector.pool.made
    list(predictor.predict_stream(images * 2))  # new worker threads: the pooled cascades serve them
    assert predictor.detector.pool.made == made


def test_object_pool_lends_each_object_to_one_caller_at_a_time():
    pool = ObjectPool(object)
    inside: set[int] = set()
    clash: list[int] = []
    lock = threading.Lock()
    start = threading.Barrier(6)

    def work() -> None:
        start.wait()
        for _ in range(200):
            with pool.borrow() as obj:
                with lock:
                    if id(obj) in inside:
                        clash.append(id(obj))
                    inside.add(id(obj))
                time.sleep(0.0001)  # hold it while the others run
                with lock:
                    inside.discard(id(obj))

    threads = [threading.Thread(target=work) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not clash and 1 <= pool.made <= 6
    with pool.borrow() as a, pool.borrow() as b:  # two at once in one thread: two objects
        assert a is not b


def test_min_face_is_honoured_in_pixels_and_fractions(tmp_path):
    assert min_face_px(None, 768, 1024) == pytest.approx(76.8) and min_face_px(None, 6000, 8000) == 160
    assert min_face_px(40, 768, 1024) == 40 and min_face_px(0.05, 768, 1024) == pytest.approx(38.4)
    a = astronaut()  # face box about 96 px, 19% of the short side
    assert len(HaarDetector(min_face=0.1)(a)) == 1
    assert HaarDetector(min_face=130)(a) == [] and HaarDetector(min_face=0.3)(a) == []
    small = cv2.resize(a, (256, 256), interpolation=cv2.INTER_AREA)  # face about 48 px: 19% again
    assert len(HaarDetector(min_face=40)(small)) == 1 and HaarDetector(min_face=64)(small) == []
    for bad in ("abc", "0", "-3", "nan"):
        with pytest.raises(ValueError, match="min face"):
            parse_min_face(bad)
    with pytest.raises(DetectorError, match="min face applies"):
        Predictor.from_checkpoint(write_checkpoint(tmp_path / "c.pt"), device="cpu", detector="none", min_face=40)


def test_a_512_px_face_in_an_8000_x_6000_photo_is_found():
    a = astronaut()
    face = a[FACE[1] - 96 : FACE[1] + 96, FACE[0] - 96 : FACE[0] + 96]  # the face and as much around it
    big = cv2.resize(face, (1024, 1024), interpolation=cv2.INTER_CUBIC)  # the face is now 512 px
    photo = np.full((6000, 8000, 3), 200, np.uint8)  # mostly blank, like sky or a wall
    photo[3000:4024, 5000:6024] = big
    det = HaarDetector()
    assert det.scale(6000, 8000) == pytest.approx(DETECT_FACE_PX / 160)  # searched from 160 px faces up
    (found,) = det(photo)
    assert_face_at(found.box, 5512, 3512, 512)


def test_boxes_found_on_the_downscaled_copy_map_back_to_full_resolution():
    a = astronaut()
    (small,) = HaarDetector()(a)  # 512 px: copy at 0.78
    big = cv2.resize(a, (1536, 1536), interpolation=cv2.INTER_CUBIC)
    det = HaarDetector()
    assert det.scale(1536, 1536) == pytest.approx(40 / 153.6)  # the cascade sees 400 x 400
    (large,) = det(big)
    np.testing.assert_allclose(large.box, np.asarray(small.box) * 3, atol=0.08 * 3 * (small.box[2] - small.box[0]))
    x0, y0, x1, y1 = large.box
    assert 0 <= x0 < x1 <= 1536 and 0 <= y0 < y1 <= 1536


def test_stream_batches_across_images_and_keeps_order(predictor, tmp_path):
    a = astronaut()
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    images = [a, coffee(), np.concatenate([a, a[:, ::-1]], axis=1), bad, cv2.resize(a, (384, 384)), a[:, ::-1]]
    stats = StreamStats()
    out = list(predictor.predict_stream(images, stats=stats))
    assert [p.item is im for (p, _), im in zip(out, images)] == [True] * 6
    assert out[3][0].error is not None and out[3][1] is None and "not a readable image" in str(out[3][0].error)
    good = [i for i in range(6) if i != 3]
    for i in good:
        ref = predictor.predict(images[i])
        res = out[i][1]
        assert [f.box for f in res.faces] == [f.box for f in ref.faces] and res.note == ref.note
        for f, g in zip(res.faces, ref.faces):
            np.testing.assert_allclose(list(f.probabilities.values()), list(g.probabilities.values()), atol=1e-5)
    assert stats.faces == 5 and stats.batch_sizes == [4, 1]  # 5 faces of 5 images in full batches of 4
    assert stats.images == 6 and stats.classify_s > 0 and stats.wait_s >= 0
    with pytest.raises(ImageError, match="bad.jpg"):
        predictor.predict_many([a, bad])
