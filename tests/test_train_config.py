"""train.config: recipe defaults, TOML < flag precedence, and one-line errors for bad values."""

from __future__ import annotations

import pytest

from train.config import RECIPES, ConfigError, parse_cli, resolve
from train.run import main


def configure(argv: list[str]):
    cli, toml = parse_cli(argv)
    return resolve(cli, toml)


def test_published_recipe_defaults(tmp_path) -> None:
    fer = configure(["--recipe", "fer2013", "--data-root", str(tmp_path)])
    assert (fer.optimizer, fer.lr, fer.weight_decay, fer.scheduler) == ("radam", 1e-4, 1e-3, "plateau")
    assert (fer.plateau_factor, fer.plateau_patience, fer.epochs, fer.early_stop) == (0.1, 2, 50, 10)
    assert (fer.batch_size, fer.seed, fer.image_size, fer.normalize, fer.augment) == (48, 113, 224, "unit", "fer2013")
    assert fer.model == "resnet34_dda" and fer.dataset == "fer2013"
    raf = configure(["--recipe", "rafdb", "--data-root", str(tmp_path)])
    assert (raf.lr, raf.weight_decay, raf.scheduler, raf.gamma, raf.epochs) == (1e-4, 1e-4, "exponential", 0.9, 60)
    assert (raf.normalize, raf.augment, raf.early_stop, raf.batch_size) == ("imagenet", "rafdb", 0, 48)
    plus = configure(["--recipe", "ferplus", "--data-root", str(tmp_path)])
    assert plus.dataset == "ferplus" and plus.lr == fer.lr and plus.scheduler == "plateau"
    syn = configure([])
    assert syn.recipe == "synthetic" and syn.model == RECIPES["synthetic"]["model"]


def test_toml_overrides_recipe_and_flags_override_toml(tmp_path) -> None:
    toml = tmp_path / "run.toml"
    toml.write_text(
        'recipe = "rafdb"\ndata-root = "/data/raf"\nlr = 3e-4\nbatch_size = 32\ndda-stages = [3, 4]\namp = "bf16"\n'
        "channels_last = true\n",
        encoding="utf-8",
    )
    cfg = configure(["--config", str(toml), "--lr", "5e-4", "--no-channels-last"])
    assert cfg.recipe == "rafdb" and cfg.data_root == "/data/raf"
    assert cfg.lr == 5e-4  # flag beats file
    assert cfg.batch_size == 32 and cfg.dda_stages == (3, 4) and cfg.amp == "bf16"  # file beats recipe
    assert cfg.channels_last is False
    assert cfg.weight_decay == 1e-4 and cfg.scheduler == "exponential"  # untouched recipe values
    assert configure(["--config", str(toml), "--recipe", "fer2013"]).weight_decay == 1e-3


def test_plain_host_drops_the_synthetic_dda_options() -> None:
    cfg = configure(["--model", "resnet18"])
    assert cfg.dda_options == {}
    with pytest.raises(ConfigError, match="resnet18 has no DDA blocks"):
        configure(["--model", "resnet18", "--dda-width", "32"])


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--epochs", "0"], "error: --epochs: must be >= 1, got 0"),
        (["--lr", "fast"], "error: --lr: expected a number, got 'fast'"),
        (["--batch-size", "1.5"], "error: --batch-size: expected an integer, got '1.5'"),
        (["--amp", "fp8"], "error: --amp: expected one of none, bf16, fp16, got 'fp8'"),
        (["--model", "resnet7"], "error: --model: unknown model 'resnet7'"),
        (["--dda-stages", "0,5"], "error: --dda-stages: expected distinct stages in 1..4"),
        (["--image-size", "16"], "error: --image-size: must be >= 32, got 16"),
        (["--recipe", "fer2013"], "error: --recipe fer2013 needs --data-root"),
        (["--holdout", "1.5"], "error: --holdout: must be in [0, 1), got 1.5"),
        (["--device", "tpu"], "error: --device: expected auto, cpu, cuda or cuda:N, got 'tpu'"),
        (["--frobnicate"], "error: unrecognized arguments: --frobnicate"),
        (["--workers", "-1"], "error: --workers: must be >= 0, got -1"),
        (["--ops-backend", "cuda"], "error: --ops-backend: expected one of auto, reference, torch, triton, got 'cuda'"),
    ],
)
def test_bad_values_are_one_line_errors(argv, message, capsys, monkeypatch) -> None:
    monkeypatch.delenv("DDAKERN_DATA", raising=False)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(message), err
    assert "\n" not in err


def test_bad_resume_file_is_a_failed_run(capsys) -> None:
    """A missing or unreadable --resume checkpoint is exit code 1 (as documented), not a bad option."""
    assert main(["--resume", "/nonexistent/last.pt"]) == 1
    assert capsys.readouterr().err.strip() == "error: /nonexistent/last.pt: checkpoint not found"


def test_old_names_map_to_the_new_options(tmp_path) -> None:
    """--fused-kernels / --kernels / --num-workers (flags, TOML keys, checkpoint configs) still work."""
    cfg = configure(["--fused-kernels", "--kernels", "reference", "--num-workers", "0"])
    assert (cfg.fused_ops, cfg.ops_backend, cfg.workers, cfg.dali_threads) == (True, "reference", 0, 1)
    cfg = configure(["--fused-ops", "--ops-backend", "torch", "--workers", "3", "--dali-threads", "4"])
    assert (cfg.fused_ops, cfg.ops_backend, cfg.workers, cfg.dali_threads) == (True, "torch", 3, 4)
    toml = tmp_path / "old.toml"
    toml.write_text('fused-kernels = true\nkernels = "torch"\nnum_workers = 3\n', encoding="utf-8")
    cfg = configure(["--config", str(toml)])
    assert (cfg.fused_ops, cfg.ops_backend, cfg.workers, cfg.dali_threads) == (True, "torch", 3, 3)
    old = {**configure([]).to_dict(), "fused_kernels": True, "kernels": "triton", "num_workers": 2}
    for key in ("fused_ops", "ops_backend", "workers", "dali_threads"):
        del old[key]
    cfg = resolve({}, {}, base=old)
    assert (cfg.fused_ops, cfg.ops_backend, cfg.workers, cfg.dali_threads) == (True, "triton", 2, 2)


def test_recipes_share_their_published_values() -> None:
    assert RECIPES["ferplus"] == RECIPES["fer2013"]
    assert {k: RECIPES["rafdb"][k] for k in ("optimizer", "lr", "batch_size", "seed")} == {
        k: RECIPES["fer2013"][k] for k in ("optimizer", "lr", "batch_size", "seed")
    }


def test_bad_config_file_is_a_one_line_error(tmp_path, capsys) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 0.1\n", encoding="utf-8")
    assert main(["--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: unknown option 'learning_rate'"
    bad.write_text("lr = [0.1\n", encoding="utf-8")
    assert main(["--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: --config {bad}: invalid TOML") and "\n" not in err
    bad.write_text('epochs = "many"\n', encoding="utf-8")
    assert main(["--config", str(bad)]) == 2
    assert capsys.readouterr().err.strip() == f"error: {bad}: epochs: expected an integer, got 'many'"


def test_a_saved_config_passes_on_neither_its_device_nor_its_per_invocation_options() -> None:
    """The base of a resume (train.run) and of a fusion of saved members (train.fuse, which also drops its
    own keys): a run saved on cuda:1 continued there, and failed on a one-GPU machine."""
    from train import fuse
    from train.config import inheritable

    saved = {"device": "cuda:1", "resume": "auto", "debug_wait_at_step": 3, "lr": 0.1, "model": "resnet18_dda"}
    assert inheritable(saved) == {"lr": 0.1, "model": "resnet18_dda"}
    assert inheritable(saved, fuse._MEMBER_KEYS_NOT_INHERITED) == {"model": "resnet18_dda"}
