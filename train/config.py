"""Run configuration: the recipes' published defaults, TOML config files and CLI flags, merged.

Precedence (lowest to highest): recipe defaults (or, when resuming, the checkpoint's resolved config),
the `--config` TOML file, explicit command-line flags.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

DATASET_OF_RECIPE = {"fer2013": "fer2013", "ferplus": "ferplus", "rafdb": "rafdb", "synthetic": "fer2013"}
RECIPE_NAMES = ("fer2013", "ferplus", "rafdb", "synthetic")


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the option."""


_FER_RECIPE: dict[str, Any] = dict(
    model="resnet34_dda",
    optimizer="radam",
    lr=1e-4,
    weight_decay=1e-3,
    scheduler="plateau",
    plateau_factor=0.1,
    plateau_patience=2,
    epochs=50,
    early_stop=10,
    batch_size=48,
    image_size=224,
    seed=113,
    normalize="unit",
    augment="fer2013",
)
RECIPES: dict[str, dict[str, Any]] = {
    "fer2013": dict(_FER_RECIPE),
    "ferplus": dict(_FER_RECIPE),
    "rafdb": dict(
        model="resnet34_dda",
        optimizer="radam",
        lr=1e-4,
        weight_decay=1e-4,
        scheduler="exponential",
        gamma=0.9,
        epochs=60,
        early_stop=0,
        batch_size=48,
        image_size=224,
        seed=113,
        normalize="imagenet",
        augment="rafdb",
    ),
    # Tuned so that the default run (`python -m train.run --fused-kernels`) reaches >= 90% test
    # accuracy within 5 minutes on 2 CPU cores; see the README.
    "synthetic": dict(
        model="resnet18_dda",
        dda_stages=(4,),
        dda_width=64,
        dda_spatial_width=64,
        optimizer="adam",  # RAdam's variance warm-up is too slow for a 4-epoch budget
        lr=1e-3,
        weight_decay=1e-4,
        scheduler="exponential",
        gamma=0.6,
        epochs=4,
        early_stop=0,
        batch_size=32,
        image_size=64,
        seed=113,
        normalize="unit",
        augment="none",  # fresh samples instead of augmented repeats
        tta_augment="fer2013",
        synthetic_train=3150,
        synthetic_val=280,
        synthetic_test=280,
    ),
}
"""Published defaults per recipe (training-recipes.md); anything not listed comes from Config."""


def _choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        v = str(value)
        if v not in options:
            raise ValueError(f"expected one of {', '.join(options)}, got {value!r}")
        return v

    parse.__name__ = "choice"
    return parse


def _opt_choice(*options: str) -> Callable[[Any], str | None]:
    inner = _choice(*options)

    def parse(value: Any) -> str | None:
        return None if value is None or str(value).lower() in ("", "none") else inner(value)

    return parse


def _int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError(f"expected an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected an integer, got {value!r}") from None


def _float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"expected a number, got {value!r}")
    try:
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"expected a number, got {value!r}") from None


def _bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("1", "true", "yes", "on"):
        return True
    if str(value).lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false, got {value!r}")


def _opt_str(value: Any) -> str | None:
    if value is None or str(value).lower() in ("", "none"):
        return None
    return str(value)


def _opt_int(value: Any) -> int | None:
    return None if value is None or str(value).lower() in ("", "none") else _int(value)


def _stages(value: Any) -> tuple[int, ...]:
    """ "1,2,3,4", "3 4", "none" or a list of ints."""
    if isinstance(value, (list, tuple)):
        items = list(value)
    elif str(value).strip().lower() in ("", "none"):
        items = []
    else:
        items = str(value).replace(",", " ").split()
    out = tuple(sorted(_int(v) for v in items))
    if any(s not in (1, 2, 3, 4) for s in out) or len(set(out)) != len(out):
        raise ValueError(f"expected distinct stages in 1..4 such as 1,2,3,4 or 3,4, got {value!r}")
    return out


def _opt(kind: Callable[[Any], Any], help: str, flag: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"parse": kind, "help": help, "flag": flag, **extra}


@dataclass
class Config:
    """Every setting of a run; `config.json` of a run folder is `dataclasses.asdict` of this."""

    recipe: str = field(default="synthetic", metadata=_opt(_choice(*RECIPE_NAMES), "training recipe"))
    data_root: str | None = field(
        default=None,
        metadata=_opt(_opt_str, "data folder (real recipes; default $DDAKERN_DATA); synthetic: its cache folder"),
    )
    model: str = field(default="resnet34_dda", metadata=_opt(str, "model name from ddakern.models.list_models()"))
    dda_stages: tuple[int, ...] = field(
        default=(1, 2, 3, 4), metadata=_opt(_stages, "DDA stages of *_dda models, e.g. 1,2,3,4 or 3,4")
    )
    dda_width: int | None = field(default=None, metadata=_opt(_opt_int, "DDA upsampler width (default 512/612)"))
    dda_spatial_width: int | None = field(default=None, metadata=_opt(_opt_int, "DDA spatial-path width (default 512)"))
    dropout: float = field(default=0.4, metadata=_opt(_float, "dropout before the classifier"))
    pretrained: str | None = field(
        default=None, metadata=_opt(_opt_str, "none, imagenet, vggface2 or a state-dict file for the host")
    )
    fused_kernels: bool = field(default=False, metadata=_opt(_bool, "route DDA gates through ddakern's fused ops"))
    kernels: str = field(
        default="auto",
        metadata=_opt(_choice("auto", "reference", "torch", "triton"), "fused-op backend (ddakern.use_kernels)"),
    )
    amp: str = field(default="none", metadata=_opt(_choice("none", "bf16", "fp16"), "mixed precision"))
    channels_last: bool = field(default=False, metadata=_opt(_bool, "channels-last memory format"))
    compile: bool = field(default=False, metadata=_opt(_bool, "wrap the model in torch.compile"))
    device: str = field(default="auto", metadata=_opt(str, "auto, cpu, cuda or cuda:N"))
    epochs: int = field(default=50, metadata=_opt(_int, "maximum number of epochs"))
    batch_size: int = field(default=48, metadata=_opt(_int, "training batch size per process"))
    eval_batch_size: int | None = field(
        default=None, metadata=_opt(_opt_int, "evaluation batch size (images; default: batch size)")
    )
    image_size: int = field(default=224, metadata=_opt(_int, "input size S (S x S), >= 32"))
    optimizer: str = field(default="radam", metadata=_opt(_choice("radam", "adam", "adamw", "sgd"), "optimiser"))
    lr: float = field(default=1e-4, metadata=_opt(_float, "learning rate"))
    weight_decay: float = field(default=1e-3, metadata=_opt(_float, "weight decay (coupled L2 except adamw)"))
    momentum: float = field(default=0.9, metadata=_opt(_float, "SGD momentum"))
    scheduler: str = field(
        default="plateau",
        metadata=_opt(_choice("plateau", "exponential", "none"), "LR schedule, stepped once per epoch"),
    )
    plateau_factor: float = field(default=0.1, metadata=_opt(_float, "ReduceLROnPlateau factor"))
    plateau_patience: int = field(default=2, metadata=_opt(_int, "ReduceLROnPlateau patience (epochs)"))
    gamma: float = field(default=0.9, metadata=_opt(_float, "ExponentialLR gamma"))
    early_stop: int = field(
        default=10, metadata=_opt(_int, "stop after this many epochs without improvement (0: never)")
    )
    class_weighted: bool = field(default=False, metadata=_opt(_bool, "class-weighted cross entropy"))
    augment: str = field(
        default="fer2013",
        metadata=_opt(_choice("fer2013", "rafdb", "none"), "training augmentation recipe (also the TTA views)"),
    )
    normalize: str = field(default="unit", metadata=_opt(_choice("unit", "imagenet"), "input normalisation"))
    seed: int = field(default=113, metadata=_opt(_int, "random seed"))
    out: str | None = field(
        default=None, metadata=_opt(_opt_str, "run folder (default runs/<recipe>-<model>-<timestamp>)")
    )
    resume: str | None = field(
        default=None, metadata=_opt(_opt_str, "checkpoint to continue from, or 'auto' (latest last.pt)")
    )
    tta_augment: str | None = field(
        default=None,
        metadata=_opt(_opt_choice("fer2013", "rafdb"), "recipe of the TTA views (default: --augment)"),
    )
    tta: bool = field(default=True, metadata=_opt(_bool, "also evaluate the test split with TTA"))
    tta_views: int = field(default=20, metadata=_opt(_int, "TTA views per image"))
    loader: str = field(
        default="auto", metadata=_opt(_choice("auto", "dali", "torch"), "input pipeline (auto: DALI if installed)")
    )
    num_workers: int = field(
        default=2, metadata=_opt(_int, "loader threads (DALI) or worker processes (torch; <= 1: in-process)")
    )
    threads: int | None = field(default=None, metadata=_opt(_opt_int, "torch intra-op threads (default: torch's)"))
    skip_bad: bool = field(default=False, metadata=_opt(_bool, "skip malformed samples instead of failing"))
    holdout: float = field(
        default=0.0, metadata=_opt(_float, "RAF-DB: fraction of train held out for selection (honest protocol)")
    )
    sync_bn: bool = field(default=False, metadata=_opt(_bool, "SyncBatchNorm across processes (torchrun)"))
    synthetic_train: int = field(default=1400, metadata=_opt(_int, "synthetic recipe: training images"))
    synthetic_val: int = field(default=280, metadata=_opt(_int, "synthetic recipe: validation images"))
    synthetic_test: int = field(default=280, metadata=_opt(_int, "synthetic recipe: test images"))
    progress: bool = field(default=True, metadata=_opt(_bool, "tqdm progress bar on stderr"))
    debug_nan_at_step: int | None = field(
        default=None, metadata=_opt(_opt_int, "debug: make the loss NaN at this global step (1-based)")
    )
    debug_wait_at_step: int | None = field(
        default=None,
        metadata=_opt(_opt_int, "debug: after this global step print 'debug-wait STEP' and wait for a signal"),
    )
    debug_seen: str | None = field(
        default=None, metadata=_opt(_opt_str, "debug: each rank appends the ids of its training samples here")
    )

    @property
    def dataset(self) -> str:
        """The data-set reader the recipe uses (synthetic data is read back as FER2013)."""
        return DATASET_OF_RECIPE[self.recipe]

    @property
    def tta_views_recipe(self) -> str | None:
        """Augmentation recipe of the TTA views: --tta-augment, else --augment (None if neither)."""
        if self.tta_augment is not None:
            return self.tta_augment
        return None if self.augment == "none" else self.augment

    @property
    def dda_options(self) -> dict[str, int]:
        """Extra `ddakern.models.create` options for DDA blocks."""
        out = {}
        if self.dda_width is not None:
            out["width"] = self.dda_width
        if self.dda_spatial_width is not None:
            out["spatial_width"] = self.dda_spatial_width
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["dda_stages"] = list(self.dda_stages)
        return d


FIELDS = {f.name: f for f in fields(Config)}
_NOT_CONFIGURABLE_FROM_FILE = {"resume"}


def parse_value(name: str, value: Any, origin: str) -> Any:
    """Convert `value` for option `name`; ConfigError starts with `origin` (the flag, or file and key)."""
    try:
        return FIELDS[name].metadata["parse"](value)
    except ValueError as e:
        raise ConfigError(f"{origin}: {e}") from None


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Options from a TOML file (flat keys, `-` or `_`), converted and checked."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: invalid TOML ({e})") from None
    out: dict[str, Any] = {}
    for key, value in raw.items():
        name = key.replace("-", "_")
        if name not in FIELDS or name in _NOT_CONFIGURABLE_FROM_FILE:
            raise ConfigError(f"{path}: unknown option {key!r}")
        out[name] = parse_value(name, value, f"{path}: {key}")
    return out


class _ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are ConfigErrors (run.main turns them into one line and exit code 2)."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(message)


def build_parser() -> argparse.ArgumentParser:
    """The `python -m train.run` parser; options left out stay out of the namespace (SUPPRESS)."""
    p = _ArgumentParser(
        prog="python -m train.run",
        description="Train a ddakern model. Defaults come from --recipe, then --config, then flags.",
        argument_default=argparse.SUPPRESS,
        epilog="Exit codes: 0 done, 1 run failed (non-finite loss, bad data or checkpoint), 2 bad options, "
        "130/143 stopped by SIGINT/SIGTERM after saving last.pt (continue with --resume auto).",
    )
    p.add_argument("--config", help="TOML file of options (keys as the flag names)")
    for f in fields(Config):
        meta = f.metadata
        flag = meta.get("flag") or "--" + f.name.replace("_", "-")
        names = [flag]
        if f.name == "num_workers":
            names.append("--loader-threads")
        if meta["parse"] is _bool:
            p.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, help=meta["help"])
        else:
            p.add_argument(*names, dest=f.name, metavar=f.name.upper(), help=meta["help"])
    return p


def parse_cli(argv: Sequence[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(options given as flags, options from --config), each converted and checked."""
    ns = vars(build_parser().parse_args(list(argv)))
    config_path = ns.pop("config", None)
    cli = {k: (v if isinstance(v, bool) else parse_value(k, v, "--" + k.replace("_", "-"))) for k, v in ns.items()}
    toml = load_toml(config_path) if config_path else {}
    return cli, toml


def resolve(cli: dict[str, Any], toml: dict[str, Any], base: dict[str, Any] | None = None) -> Config:
    """Merge: recipe defaults (or `base`, a checkpoint's config) < TOML < flags; then validate."""
    recipe = cli.get("recipe", toml.get("recipe", (base or {}).get("recipe", "synthetic")))
    values: dict[str, Any] = {}
    if base is not None:
        values.update({k: parse_value(k, v, f"checkpoint config: {k}") for k, v in base.items() if k in FIELDS})
    else:
        values.update(RECIPES[recipe])
    values.update(toml)
    values.update(cli)
    values["recipe"] = recipe
    if not str(values.get("model", "")).endswith("_dda"):  # recipe DDA defaults do not apply to plain hosts
        for name in ("dda_width", "dda_spatial_width"):
            if name not in cli and name not in toml:
                values[name] = None
    if values.get("data_root") is None and recipe != "synthetic" and os.environ.get("DDAKERN_DATA"):
        values["data_root"] = os.environ["DDAKERN_DATA"]
    cfg = Config(**values)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    """One-line ConfigErrors for values the run cannot use."""
    from ddakern.models import list_models

    def need(ok: bool, message: str) -> None:
        if not ok:
            raise ConfigError(message)

    need(cfg.model in list_models(), f"--model: unknown model {cfg.model!r}; known: {', '.join(list_models())}")
    dda = cfg.model.endswith("_dda")
    need(dda or not cfg.dda_options, f"--dda-width/--dda-spatial-width: {cfg.model} has no DDA blocks")
    need(cfg.epochs >= 1, f"--epochs: must be >= 1, got {cfg.epochs}")
    need(cfg.batch_size >= 1, f"--batch-size: must be >= 1, got {cfg.batch_size}")
    need(cfg.eval_batch_size is None or cfg.eval_batch_size >= 1, "--eval-batch-size: must be >= 1")
    need(cfg.image_size >= 32, f"--image-size: must be >= 32, got {cfg.image_size}")
    need(cfg.lr > 0, f"--lr: must be > 0, got {cfg.lr}")
    need(cfg.weight_decay >= 0, f"--weight-decay: must be >= 0, got {cfg.weight_decay}")
    need(0 <= cfg.dropout < 1, f"--dropout: must be in [0, 1), got {cfg.dropout}")
    need(0 < cfg.plateau_factor < 1, f"--plateau-factor: must be in (0, 1), got {cfg.plateau_factor}")
    need(cfg.plateau_patience >= 0, f"--plateau-patience: must be >= 0, got {cfg.plateau_patience}")
    need(0 < cfg.gamma <= 1, f"--gamma: must be in (0, 1], got {cfg.gamma}")
    need(cfg.early_stop >= 0, f"--early-stop: must be >= 0, got {cfg.early_stop}")
    need(0 <= cfg.holdout < 1, f"--holdout: must be in [0, 1), got {cfg.holdout}")
    need(cfg.tta_views >= 1, f"--tta-views: must be >= 1, got {cfg.tta_views}")
    need(
        not cfg.tta or cfg.tta_views_recipe is not None,
        "--tta needs --tta-augment or --augment set to fer2013 or rafdb (the recipe of its views)",
    )
    need(cfg.num_workers >= 0, f"--num-workers: must be >= 0, got {cfg.num_workers}")
    need(cfg.threads is None or cfg.threads >= 1, f"--threads: must be >= 1, got {cfg.threads}")
    for name in ("synthetic_train", "synthetic_val", "synthetic_test"):
        need(getattr(cfg, name) >= 1, f"--{name.replace('_', '-')}: must be >= 1")
    need(
        cfg.device == "auto" or cfg.device == "cpu" or cfg.device.split(":")[0] == "cuda",
        f"--device: expected auto, cpu, cuda or cuda:N, got {cfg.device!r}",
    )
    need(
        cfg.recipe == "synthetic" or cfg.data_root is not None,
        f"--recipe {cfg.recipe} needs --data-root (or $DDAKERN_DATA) pointing at the data set",
    )
    for name in ("debug_nan_at_step", "debug_wait_at_step"):
        v = getattr(cfg, name)
        need(v is None or v >= 1, f"--{name.replace('_', '-')}: must be >= 1")
