"""One checkpoint schema: the engine writes through the library's (ddakern.inference.checkpoint), so what
train.run saves passes the library's format check and reads back as the model's spec; train reads with
the library's safe loader (so it refuses code as test_predict_safe_loading pins for that loader)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from ddakern import atomic
from ddakern.inference.checkpoint import (
    FORMAT_VERSION,
    MODEL_KEYS,
    CheckpointError,
    build_from_spec,
    check_format,
    model_of,
    read_checkpoint,
    spec_of,
)
from train import checkpoint
from train.config import parse_cli, resolve
from train.engine import make_optimizer, make_scheduler


def _engine_checkpoint(tmp_path: Path) -> Path:
    """What Trainer.save writes (build_checkpoint, then the atomic torch.save) for a DDA config; the
    weights are a small real module's (the schema does not depend on their size; test_train_run
    rebuilds a whole run's checkpoint with model_of)."""
    argv = ["--model", "resnet18_dda", "--dda-stages", "4", "--dda-width", "16", "--dda-spatial-width", "16"]
    cfg = resolve(*parse_cli([*argv, "--image-size", "32"]))
    net = torch.nn.Linear(4, 3)
    optimizer, _ = make_optimizer(cfg, net.parameters())
    ckpt = checkpoint.build_checkpoint(
        state=checkpoint.State(epoch=1, best_metric=40.0, best_epoch=1),
        net=net,
        optimizer=optimizer,
        scheduler=make_scheduler(cfg, optimizer),
        scaler=torch.amp.GradScaler("cpu", enabled=False),
        rng=[checkpoint.rng_state()],
        world_size=1,
        config=cfg,
        class_names=("angry", "happy", "sad"),
    )
    path = tmp_path / "last.pt"
    atomic.torch_save(ckpt, path)
    return path


def test_engine_checkpoint_passes_the_library_format_check(tmp_path: Path) -> None:
    path = _engine_checkpoint(tmp_path)
    assert checkpoint.load is read_checkpoint  # train reads with the library's safe loader and check
    ckpt = read_checkpoint(path)
    assert check_format(ckpt, path) is ckpt and ckpt["format"] == FORMAT_VERSION and set(MODEL_KEYS) <= set(ckpt)
    spec = spec_of(ckpt, path)
    assert (spec.model_name, spec.class_names, spec.image_size, spec.normalize) == (
        "resnet18_dda",
        ("angry", "happy", "sad"),
        32,
        "unit",
    )
    assert spec.dda_stages == (4,) and spec.dda_options == {"width": 16, "spatial_width": 16}
    assert ckpt["num_classes"] == 3 and ckpt["epoch"] == 1 and ckpt["rng"][0]["numpy"][0] == "MT19937"
    del ckpt["image_size"]
    with pytest.raises(CheckpointError, match=r"last\.pt: checkpoint lacks image_size$"):
        check_format(ckpt, path)
    ckpt["format"] = FORMAT_VERSION + 1
    with pytest.raises(CheckpointError, match=r"last\.pt: not a train\.run / train\.fuse checkpoint \(format 1\)$"):
        check_format(ckpt, path)


def test_a_built_in_run_saved_as_fer2013_still_resumes_and_other_data_is_refused(tmp_path: Path) -> None:
    """Built-in runs saved before the built-in set was a layout recorded dataset "fer2013": they resume;
    a checkpoint of another data set is still refused in one line."""
    from train.run import configure

    path = _engine_checkpoint(tmp_path)
    ckpt = read_checkpoint(path)
    for saved, ok in (("fer2013", True), ("rafdb", False)):
        atomic.torch_save({**ckpt, "dataset": saved, "config": {**ckpt["config"], "recipe": "synthetic"}}, path)
        if ok:
            cfg, _ = configure(["--resume", str(path)])
            assert cfg.dataset == "synthetic" and cfg.resume == str(path)
        else:
            with pytest.raises(checkpoint.CheckpointError, match="trained on rafdb, this run reads synthetic"):
                configure(["--resume", str(path)])


def _small_dda_checkpoint(tmp_path: Path) -> dict:
    """A checkpoint dict whose weights are a real small resnet18_dda's (not the Linear stand-in above)."""
    ckpt = read_checkpoint(_engine_checkpoint(tmp_path))
    spec = spec_of(ckpt)
    torch.manual_seed(3)
    ckpt["model"] = build_from_spec(spec).state_dict()
    return ckpt


def test_model_of_loads_every_tensor_without_initialising_first(tmp_path: Path, monkeypatch) -> None:
    """model_of skips the random initialisation the weights replace (most of a build's time): what it
    returns holds exactly the checkpoint's tensors, whatever the random state, and draws no random number."""
    ckpt = _small_dda_checkpoint(tmp_path)
    torch.manual_seed(0)
    before = torch.get_rng_state()
    model, _ = model_of(ckpt)
    assert torch.equal(torch.get_rng_state(), before)  # nothing was initialised at random
    got = model.state_dict()
    assert got.keys() == ckpt["model"].keys()
    assert all(torch.equal(got[k], ckpt["model"][k]) for k in got)
    assert all(t.device.type == "cpu" for t in [*model.parameters(), *model.buffers()])
    x = torch.randn(2, 3, 32, 32)
    reference = build_from_spec(spec_of(ckpt))
    reference.load_state_dict(ckpt["model"])
    assert torch.equal(model(x), reference.eval()(x))


def test_model_of_builds_normally_when_the_weights_leave_a_tensor_unfilled(tmp_path: Path, monkeypatch) -> None:
    """A non-persistent buffer is not in a state dict: allocating it empty would leave it garbage, so such a
    model is built (initialised) normally before the weights are loaded."""
    import ddakern.inference.checkpoint as library

    ckpt = _small_dda_checkpoint(tmp_path)
    real = library.build_from_spec

    def with_constant(spec, *, fused_ops=False):
        model = real(spec, fused_ops=fused_ops)
        model.register_buffer("scale", torch.full((3,), 0.5), persistent=False)
        return model

    monkeypatch.setattr(library, "build_from_spec", with_constant)
    model, _ = model_of(ckpt)
    assert torch.equal(model.scale, torch.full((3,), 0.5))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in ckpt["model"].items())
