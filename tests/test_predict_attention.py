"""DDA attention overlays: mask summaries from forward hooks, Grad-CAM, attach-ed torchvision models, PNG panels."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import ddakern
from ddakern.inference.attention import attention_maps, dda_blocks, grad_cam, last_stage, record_masks, summarise
from ddakern.models import create


def test_summaries_of_a_softmax_mask():
    logits = torch.randn(2, 8, 5, 5)
    m = torch.softmax(logits, 1)
    x = torch.randn(2, 8, 5, 5)
    focus, entropy = summarise(m, x, "focus"), summarise(m, x, "entropy")
    torch.testing.assert_close(focus + entropy, torch.ones(2, 5, 5))
    assert ((entropy > 0) & (entropy <= 1)).all()
    uniform = torch.full((1, 8, 2, 2), 1 / 8)
    torch.testing.assert_close(summarise(uniform, x[:1, :, :2, :2], "focus"), torch.zeros(1, 2, 2), atol=1e-6, rtol=0)
    torch.testing.assert_close(summarise(m, x, "gain"), (m * x.abs()).sum(1))
    expected = -(m[0, :, 0, 0] * m[0, :, 0, 0].log()).sum() / math.log(8)
    assert abs(float(entropy[0, 0, 0]) - float(expected)) < 1e-6


def test_hooks_see_every_stage_mask_and_leave_the_output_unchanged():
    model = create("resnet18_dda", dda_stages=(1, 2, 3, 4), width=32, spatial_width=32).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        with record_masks(model) as masks:
            during = model(x)
        after = model(x)
    torch.testing.assert_close(before, during)
    torch.testing.assert_close(before, after)  # hooks removed
    assert [tuple(m.shape) for m in masks.values()] == [(1, 16, 16), (1, 8, 8), (1, 4, 4), (1, 2, 2)]
    block = model.dda2  # the hook's map is the mask the block applies
    feats = {}
    handle = model.layer2.register_forward_hook(lambda mod, a, out: feats.setdefault("x", out))
    with torch.no_grad():
        model(x)
    handle.remove()
    direct = summarise(block.mask(feats["x"]), feats["x"])
    torch.testing.assert_close(masks["dda2"], direct)


def test_grad_cam_for_a_host_without_dda():
    model = create("resnet18").eval()
    x = torch.randn(1, 3, 64, 64)
    maps = attention_maps(model, x)
    assert [t.split(" (")[0] for t, _ in maps] == ["Grad-CAM, last stage"]
    cam = maps[0][1]
    assert cam.shape == (2, 2) and (cam >= 0).all() and cam.max() > 0
    # Grad-CAM of another class differs: the map depends on the target
    other = grad_cam(model, x, last_stage(model), class_index=int(model(x).argmin()))
    assert not np.allclose(other.numpy(), cam)


def test_attached_torchvision_resnet_gets_dda_panels():
    torchvision = pytest.importorskip("torchvision")
    tv = torchvision.models.resnet18(weights=None, num_classes=7)
    ddakern.attach(tv, stages=(3, 4), width=32, spatial_width=32)
    tv.eval()
    assert [n for n, _ in dda_blocks(tv)] == ["dda3", "dda4"]
    titles = [t for t, _ in attention_maps(tv, torch.randn(1, 3, 64, 64))]
    assert titles == ["DDA stage 3 focus (4x4)", "DDA stage 4 focus (2x2)", "Grad-CAM, last stage (2x2)"]


def test_attention_pngs_through_predict(tmp_path, capfd):
    """`ddakern predict --attention`, its `main` in-process (tests/inprocess.py)."""
    pytest.importorskip("cv2")
    pytest.importorskip("skimage")
    from inprocess import run_main
    from predict_helpers import astronaut, write_checkpoint

    from ddakern.cli import main

    ckpt = write_checkpoint(tmp_path / "best.pt", dda_stages=(2, 4), image_size=64, width=32)
    Image.fromarray(astronaut()).save(tmp_path / "a.png")
    out = tmp_path / "out"
    argv = ["predict", str(ckpt), str(tmp_path / "a.png"), "--out", str(out), "--attention", "--no-progress"]
    code, _, err = run_main(main, argv, capfd)
    assert code == 0, err
    (png,) = (out / "attention").glob("*.png")
    assert png.name == "a_face0.png"
    panel = np.asarray(Image.open(png).convert("RGB"))
    assert panel.shape[1] > 2.5 * panel.shape[0]  # a row of panels: face, two DDA stages, Grad-CAM, bars
    assert panel.std() > 20
