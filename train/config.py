"""Run configuration: the recipes' published defaults, TOML config files and CLI flags, merged.

Precedence (lowest to highest): recipe defaults (or, when resuming, the checkpoint's resolved config),
the `--config` TOML file, explicit command-line flags. Every option is one `Config` field; its flag,
TOML key, type, choices, help text and `--help` group all come from that field (plain argparse does
the parsing and type conversion; TOML values are checked against the same types).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import sys
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ddakern.cli import prog as cli_prog
from ddakern.normalization import NORMALIZATIONS

from . import recipes
from .data.layouts import LAYOUTS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - python 3.10
    import tomli as tomllib

__all__ = ["RECIPES", "Config", "ConfigError", "parse_cli", "resolve", "upgrade_keys"]


class ConfigError(ValueError):
    """A bad configuration value; the message is one line naming the option."""


RECIPE_TABLE = recipes.RECIPES
RECIPE_NAMES = tuple(RECIPE_TABLE)
LAYOUT_NAMES = tuple(LAYOUTS)
RECIPES: dict[str, dict[str, Any]] = {name: r.values for name, r in RECIPE_TABLE.items()}
"""Default options per recipe (the table in train.recipes, with sources); the rest from Config."""


def _stages(value: Any) -> tuple[int, ...]:
    """ "1,2,3,4", "3 4", "none" or a list of ints."""
    items = list(value) if isinstance(value, (list, tuple)) else str(value).replace(",", " ").split()
    if [str(v).lower() for v in items] == ["none"]:
        items = []
    try:
        out = tuple(sorted(int(v) for v in items if not isinstance(v, bool)))
    except ValueError:
        out = ()
        items = [None]
    if len(out) != len(items) or any(s not in (1, 2, 3, 4) for s in out) or len(set(out)) != len(out):
        raise ValueError(f"expected distinct stages in 1..4 such as 1,2,3,4 or 3,4, got {value!r}")
    return out


def _opt(default: Any, group: str, help: str, *, choices: Sequence[str] | None = None, aliases: Sequence[str] = ()):
    """A Config field with its --help group, help text, allowed values and extra (alias) flags."""
    meta = {"group": group, "help": help, "choices": choices, "aliases": tuple(aliases)}
    if isinstance(default, (list, tuple)):
        return field(default_factory=lambda: default, metadata=meta)
    return field(default=default, metadata=meta)


GROUPS = ("run", "model", "optimisation", "data", "evaluation", "system", "debug")
_AMP, _BACKENDS = ("none", "bf16", "fp16"), ("auto", "reference", "torch", "triton")


@dataclass
class Config:
    """Every setting of a run; `config.json` of a run folder is `dataclasses.asdict` of this."""

    recipe: str = _opt("synthetic", "run", "training recipe", choices=RECIPE_NAMES)
    data_root: str | None = _opt(None, "data", "data folder (real recipes; default $DDAKERN_DATA); synthetic: cache")
    out: str | None = _opt(None, "run", "run folder (default runs/<recipe>-<model>-<timestamp>)")
    resume: str | None = _opt(None, "run", "checkpoint to continue from, or 'auto' (latest last.pt)")
    overwrite: bool = _opt(False, "run", "replace the results already in --out (otherwise such a folder is refused)")
    model: str = _opt("resnet34_dda", "model", "model name from ddakern.models.list_models()")
    dda_stages: tuple[int, ...] = _opt((1, 2, 3, 4), "model", "DDA stages of *_dda models, e.g. 1,2,3,4 or 3,4")
    dda_width: int | None = _opt(None, "model", "DDA upsampler width (default 512/612)")
    dda_spatial_width: int | None = _opt(None, "model", "DDA spatial-path width (default 512)")
    dropout: float = _opt(0.4, "model", "dropout before the classifier")
    pretrained: str | None = _opt(None, "model", "none, imagenet, vggface2 or a state-dict file for the host")
    fused_ops: bool = _opt(
        False,
        "model",
        "route DDA gates through ddakern's fused ops (old name: --fused-kernels)",
        aliases=("--fused-kernels",),
    )
    ops_backend: str = _opt(
        "auto",
        "model",
        "fused-op backend, ddakern.use_ops_backend (old name: --kernels)",
        choices=_BACKENDS,
        aliases=("--kernels",),
    )
    recompute: str = _opt(
        "none", "model",
        "recompute activations in backward: none, dda (DDA branches; the host keeps only its convolution outputs)"
        " or all (everything but stage boundaries)",
        choices=("none", "dda", "all"),
    )  # fmt: skip
    memory_estimate: bool = _opt(True, "system", "print the step's memory estimate in the run header")
    check_every: int = _opt(16, "system", "steps between NaN/signal checks (a host-device sync); saves always check")
    amp: str = _opt("none", "system", "mixed precision", choices=_AMP)
    channels_last: bool = _opt(False, "system", "channels-last memory format")
    compile: bool = _opt(False, "system", "wrap the model in torch.compile")
    device: str = _opt("auto", "system", "auto, cpu, cuda or cuda:N")
    epochs: int = _opt(50, "optimisation", "maximum number of epochs")
    batch_size: int = _opt(48, "optimisation", "training batch size per process")
    image_size: int = _opt(224, "data", "input size S (S x S), >= 32")
    optimizer: str = _opt("radam", "optimisation", "optimiser", choices=("radam", "adam", "adamw", "sgd"))
    lr: float = _opt(1e-4, "optimisation", "learning rate")
    weight_decay: float = _opt(1e-3, "optimisation", "weight decay (coupled L2 except adamw)")
    momentum: float = _opt(0.9, "optimisation", "SGD momentum")
    scheduler: str = _opt(
        "plateau",
        "optimisation",
        "LR schedule, stepped once per epoch (cosine: timm's CosineLRScheduler with --warmup-epochs)",
        choices=("plateau", "exponential", "cosine", "none"),
    )
    warmup_epochs: int = _opt(0, "optimisation", "cosine: linear warm-up epochs from lr/100 (timm)")
    min_lr: float = _opt(0.0, "optimisation", "cosine: the learning rate at the end of the schedule")
    sam: str = _opt(
        "none",
        "optimisation",
        "sharpness-aware minimisation around the optimiser (pytorch-optimizer's SAM; "
        "asam: its adaptive variant); two forward/backward passes per update",
        choices=("none", "sam", "asam"),
    )
    sam_rho: float = _opt(0.05, "optimisation", "SAM/ASAM neighbourhood radius rho")
    label_smoothing: float = _opt(0.0, "optimisation", "label smoothing of the cross entropy (0: off)")
    ema: float | None = _opt(
        None,
        "optimisation",
        "keep an exponential moving average of the weights with this decay (timm's "
        "ModelEmaV3), evaluated and selectable beside the raw weights (none: off)",
    )
    accumulate: int = _opt(1, "optimisation", "gradient accumulation: batches per optimiser update")
    mixup: float = _opt(0.0, "data", "mixup alpha (timm's Mixup; 0: off)")
    cutmix: float = _opt(0.0, "data", "cutmix alpha (timm's Mixup; 0: off)")
    random_erasing: float = _opt(0.0, "data", "RandomErasing probability per training image (timm's, on the batch)")
    erasing_min_area: float = _opt(0.02, "data", "RandomErasing: smallest erased fraction of the image")
    erasing_max_area: float = _opt(0.33, "data", "RandomErasing: largest erased fraction of the image")
    plateau_factor: float = _opt(0.1, "optimisation", "ReduceLROnPlateau factor")
    plateau_patience: int = _opt(2, "optimisation", "ReduceLROnPlateau patience (epochs)")
    gamma: float = _opt(0.9, "optimisation", "ExponentialLR gamma")
    early_stop: int = _opt(10, "optimisation", "stop after this many epochs without improvement (0: never)")
    class_weighted: bool = _opt(False, "optimisation", "class-weighted cross entropy")
    augment: str = _opt(
        "fer2013", "data", "training augmentation recipe (also the TTA views)", choices=("fer2013", "rafdb", "none")
    )
    normalize: str = _opt("unit", "data", "input normalisation", choices=NORMALIZATIONS)
    seed: int = _opt(113, "run", "random seed")
    eval_batch_size: int | None = _opt(None, "evaluation", "evaluation batch size (images; default: batch size)")
    tta_augment: str | None = _opt(
        None, "evaluation", "recipe of the TTA views (default: --augment)", choices=("fer2013", "rafdb")
    )
    tta: bool = _opt(True, "evaluation", "also evaluate the test split with TTA")
    tta_views: int = _opt(20, "evaluation", "TTA views per image")
    loader: str = _opt(
        "auto", "data", "input pipeline (auto: DALI on CUDA, the faster one on CPU)", choices=("auto", "dali", "torch")
    )
    workers: int = _opt(2, "data", "PyTorch loader: worker processes (0 or 1: load in the main process)")
    dali_threads: int = _opt(2, "data", "DALI loader: CPU threads of each pipeline")
    threads: int | None = _opt(None, "system", "torch intra-op threads (default: torch's)")
    skip_bad: bool = _opt(
        False,
        "data",
        "skip and count malformed samples (rows, images; also files that go bad mid-run) instead of failing",
    )
    holdout: float | None = _opt(
        None,
        "data",
        "fraction of train held out for selection where a set has no validation split (default 0.1; 0: select "
        "on test, the community protocol)",
    )
    layout: str | None = _opt(None, "data", "data layout when several match (default: detected)", choices=LAYOUT_NAMES)
    classes: str | None = _opt(None, "data", "folders recipe: class folders in label order, e.g. angry,happy,sad")
    balanced: bool = _opt(False, "data", "class-balanced sampling of training batches (AffectNet)")
    sync_bn: bool = _opt(False, "system", "SyncBatchNorm across processes (torchrun)")
    synthetic_train: int = _opt(1400, "data", "synthetic recipe: training images")
    synthetic_val: int = _opt(280, "data", "synthetic recipe: validation images")
    synthetic_test: int = _opt(280, "data", "synthetic recipe: test images")
    progress: bool = _opt(True, "system", "tqdm progress bar on stderr")
    tensorboard: bool = _opt(True, "system", "TensorBoard event files in <out>/tb (when tensorboard is installed)")
    debug_nan_at_step: int | None = _opt(None, "debug", "make the loss NaN at this global step (1-based)")
    debug_wait_at_step: int | None = _opt(None, "debug", "after this global step print 'debug-wait STEP', wait")
    debug_seen: str | None = _opt(None, "debug", "each rank appends the ids of its training samples here")
    synthetic_difficulty: str = _opt(
        "easy",
        "data",
        "synthetic recipe: easy faces, or hard ones (pose, light, occlusion, clutter, 15%% label noise)",
        choices=("easy", "hard"),
    )

    @property
    def dataset(self) -> str:
        """The data-set reader the recipe uses (the recipe table's family: "synthetic" for the built-in sets)."""
        return RECIPE_TABLE[self.recipe].family

    @property
    def builtin(self) -> bool:
        """The recipe trains on the generated synthetic set (no --data-root needed)."""
        return RECIPE_TABLE[self.recipe].builtin

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
TYPES = typing.get_type_hints(Config)
_NOT_CONFIGURABLE_FROM_FILE = {"resume", "overwrite"}

RENAMED = {"fused_kernels": "fused_ops", "kernels": "ops_backend"}
"""Old option names (flags, TOML keys, configs saved in checkpoints) -> current ones."""
LEGACY_NUM_WORKERS = "num_workers"
"""Old `--num-workers N`: N DALI threads, or N PyTorch worker processes; maps to --workers and --dali-threads."""


PER_INVOCATION = {"resume", "device"}
"""Options a saved run's config does not pass on to a run built from it (a resume, a fusion of its model):
the resume source, and the device (a run saved on cuda:1 continues on the device chosen now); nor do the
debug_* switches."""


def inheritable(saved: dict[str, Any], also_not: frozenset[str] | set[str] = frozenset()) -> dict[str, Any]:
    """A saved run's config without its per-invocation options (PER_INVOCATION, debug_*) and `also_not`:
    the base a resumed run, or a fusion of saved members, is resolved on."""
    drop = PER_INVOCATION | also_not
    return {k: v for k, v in saved.items() if k not in drop and not k.startswith("debug_")}


def upgrade_keys(values: dict[str, Any]) -> dict[str, Any]:
    """Options under their current names (old checkpoints, TOML files and flags use the old ones)."""
    out = {RENAMED.get(k, k): v for k, v in values.items() if k != LEGACY_NUM_WORKERS}
    if LEGACY_NUM_WORKERS in values:
        n = values[LEGACY_NUM_WORKERS]
        out.setdefault("workers", n)  # the PyTorch loader ran in-process for n <= 1, as with --workers
        out.setdefault("dali_threads", max(1, n) if isinstance(n, int) and not isinstance(n, bool) else n)
    return out


def _converter(name: str) -> Callable[[Any], Any]:
    """The argparse `type=` of option `name`, from its annotation (None: 'none' or empty)."""
    hint = TYPES[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    optional = type(None) in typing.get_args(hint)
    base = _stages if typing.get_origin(hint) is tuple else (args[0] if optional else hint)

    def convert(value: Any) -> Any:
        if optional and (value is None or str(value).lower() in ("", "none")):
            return None
        try:
            return base(value)
        except ValueError as e:  # argparse shows an ArgumentTypeError's own message
            message = f"expected {_WORDING[base]}, got {value!r}" if base in _WORDING else str(e)
            raise argparse.ArgumentTypeError(message) from None

    return convert


_WORDING = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
_TOML_TYPES = {int: (int,), float: (int, float), str: (str,), bool: (bool,)}


def parse_value(name: str, value: Any, origin: str) -> Any:
    """Check a typed value (TOML, checkpoint) for option `name`; ConfigError starts with `origin`."""
    hint, choices = TYPES[name], FIELDS[name].metadata["choices"]
    base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
    want = base[0] if typing.get_origin(hint) is not tuple else tuple
    try:
        if want is tuple:
            return _stages(value)
        if value is None and type(None) in typing.get_args(hint):
            return None
        if isinstance(value, bool) and want is not bool or not isinstance(value, _TOML_TYPES[want]):
            raise ValueError(f"expected {_WORDING[want]}, got {value!r}")
        value = want(value)
        if choices is not None and value not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}, got {value!r}")
        return value
    except ValueError as e:
        raise ConfigError(f"{origin}: {e}") from None


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Options from a TOML file (flat keys, `-` or `_`, as the flag names), checked."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as e:
        raise ConfigError(f"--config {path}: cannot read ({e.strerror})") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"--config {path}: invalid TOML ({e})") from None
    keys = {k.replace("-", "_"): k for k in raw}
    values = upgrade_keys({k.replace("-", "_"): v for k, v in raw.items()})
    out: dict[str, Any] = {}
    for name, value in values.items():
        key = keys.get(name, name)
        if name in _NOT_CONFIGURABLE_FROM_FILE:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{path}: option {key!r} cannot be set from a file; pass {flag} on the command line")
        if name not in FIELDS:
            raise ConfigError(f"{path}: unknown option {key!r}")
        out[name] = parse_value(name, value, f"{path}: {key}")
    return out


class _ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are ConfigErrors (train.cli turns them into one line and exit code 2)."""

    def error(self, message: str):  # type: ignore[override]
        raise ConfigError(re.sub(r"^argument (--[\w-]+)(/--[\w-]+)*: ", r"\1: ", message))


EPILOG = (
    "Exit codes: 0 done; 1 run failed (non-finite loss, bad data, bad or missing checkpoint); 2 bad options; "
    "130/143 stopped by SIGINT/SIGTERM after saving last.pt (continue with --resume auto). "
    "Old flags still accepted: --fused-kernels (= --fused-ops), --kernels (= --ops-backend), "
    "--num-workers N / --loader-threads N (= --workers N --dali-threads N)."
)


def build_parser(prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    """The `python -m train.run` parser, grouped; options left out stay out of the namespace (SUPPRESS)."""
    run = f"{__package__}.run"  # train.run from a checkout, ddakern_train.run installed
    p = _ArgumentParser(
        prog=prog or cli_prog(run, f"python -m {run}"),
        description=description or "Train a ddakern model. Defaults come from --recipe, then --config, then flags.",
        argument_default=argparse.SUPPRESS,
        epilog=EPILOG,
    )
    groups = {g: p.add_argument_group(g) for g in GROUPS}
    groups["run"].add_argument("--config", help="TOML file of options (keys as the flag names)")
    for f in fields(Config):
        meta = f.metadata
        names = ["--" + f.name.replace("_", "-"), *meta["aliases"]]
        g = groups[meta["group"]]
        if TYPES[f.name] is bool:
            g.add_argument(*names, dest=f.name, action=argparse.BooleanOptionalAction, help=meta["help"])
        else:
            metavar = "{" + ",".join(meta["choices"]) + "}" if meta["choices"] else f.name.upper()
            g.add_argument(*names, dest=f.name, metavar=metavar, type=_converter(f.name), help=meta["help"])
    groups["data"].add_argument(
        "--num-workers",
        "--loader-threads",
        dest=LEGACY_NUM_WORKERS,
        type=int,
        metavar="N",
        help="old name: sets both --workers and --dali-threads",
    )
    return p


def _check_choices(values: dict[str, Any], origin: Callable[[str], str]) -> None:
    for name, value in values.items():
        choices = FIELDS[name].metadata["choices"] if name in FIELDS else None
        if choices is not None and value is not None and value not in choices:
            raise ConfigError(f"{origin(name)}: expected one of {', '.join(choices)}, got {value!r}")


def parse_cli(argv: Sequence[str], parser: argparse.ArgumentParser | None = None) -> tuple[dict, dict]:
    """(options given as flags, options from --config), each converted and checked."""
    ns = vars((parser or build_parser()).parse_args(list(argv)))
    config_path = ns.pop("config", None)
    cli = upgrade_keys(ns)
    _check_choices(cli, lambda n: "--" + n.replace("_", "-"))
    toml = load_toml(config_path) if config_path else {}
    return cli, toml


def resolve(cli: dict[str, Any], toml: dict[str, Any], base: dict[str, Any] | None = None) -> Config:
    """Merge: recipe defaults (or `base`, a checkpoint's config) < TOML < flags; then validate."""
    base = upgrade_keys(base) if base is not None else None
    recipe = cli.get("recipe", toml.get("recipe", (base or {}).get("recipe", "synthetic")))
    builtin = RECIPE_TABLE[recipe].builtin
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
    if values.get("data_root") is None and not builtin and os.environ.get("DDAKERN_DATA"):
        values["data_root"] = os.environ["DDAKERN_DATA"]
    cfg = Config(**values)
    validate(cfg)
    return cfg


def _need(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


_AT_LEAST = {
    "check_every": 1,
    "epochs": 1,
    "batch_size": 1,
    "image_size": 32,
    "plateau_patience": 0,
    "early_stop": 0,
    "tta_views": 1,
    "workers": 0,
    "dali_threads": 1,
    "synthetic_train": 1,
    "synthetic_val": 1,
    "synthetic_test": 1,
    "weight_decay": 0,
    "eval_batch_size": 1,
    "threads": 1,
    "debug_nan_at_step": 1,
    "debug_wait_at_step": 1,
    "warmup_epochs": 0,
    "min_lr": 0,
    "label_smoothing": 0,
    "accumulate": 1,
    "mixup": 0,
    "cutmix": 0,
    "random_erasing": 0,
}
"""Lower bounds of numeric options (None, where allowed, is not checked)."""


def validate(cfg: Config) -> None:
    """One-line ConfigErrors for values the run cannot use."""
    from ddakern.models import list_models

    _need(cfg.model in list_models(), f"--model: unknown model {cfg.model!r}; known: {', '.join(list_models())}")
    no_dda = f"--dda-width/--dda-spatial-width: {cfg.model} has no DDA blocks"
    _need(cfg.model.endswith("_dda") or not cfg.dda_options, no_dda)
    for name, low in _AT_LEAST.items():
        v = getattr(cfg, name)
        _need(v is None or v >= low, f"--{name.replace('_', '-')}: must be >= {low}, got {v}")
    _need(cfg.lr > 0, f"--lr: must be > 0, got {cfg.lr}")
    _need(0 <= cfg.dropout < 1, f"--dropout: must be in [0, 1), got {cfg.dropout}")
    _need(0 < cfg.plateau_factor < 1, f"--plateau-factor: must be in (0, 1), got {cfg.plateau_factor}")
    _need(0 < cfg.gamma <= 1, f"--gamma: must be in (0, 1], got {cfg.gamma}")
    _need(cfg.sam_rho > 0, f"--sam-rho: must be > 0, got {cfg.sam_rho}")
    _need(cfg.label_smoothing < 1, f"--label-smoothing: must be in [0, 1), got {cfg.label_smoothing}")
    _need(cfg.ema is None or 0 < cfg.ema < 1, f"--ema: the decay must be in (0, 1), got {cfg.ema}")
    _need(cfg.random_erasing <= 1, f"--random-erasing: a probability in [0, 1], got {cfg.random_erasing}")
    _need(
        0 < cfg.erasing_min_area <= cfg.erasing_max_area < 1,
        f"--erasing-min-area/--erasing-max-area: need 0 < min <= max < 1, got {cfg.erasing_min_area}, "
        f"{cfg.erasing_max_area}",
    )
    _need(
        cfg.warmup_epochs == 0 or cfg.scheduler == "cosine",
        f"--warmup-epochs: the warm-up belongs to --scheduler cosine, not {cfg.scheduler}",
    )
    _need(
        cfg.warmup_epochs < cfg.epochs or cfg.warmup_epochs == 0,
        f"--warmup-epochs: must be fewer than --epochs {cfg.epochs}, got {cfg.warmup_epochs}",
    )
    mixing = cfg.mixup > 0 or cfg.cutmix > 0
    _need(
        not mixing or cfg.batch_size % 2 == 0,
        f"--mixup/--cutmix: timm's Mixup pairs each batch with its reverse, so --batch-size must be even, "
        f"got {cfg.batch_size}",
    )
    _need(not (mixing and cfg.class_weighted), "--class-weighted: not available with --mixup/--cutmix (soft targets)")
    _need(cfg.holdout is None or 0 <= cfg.holdout < 1, f"--holdout: must be in [0, 1), got {cfg.holdout}")
    _need(
        not cfg.tta or cfg.tta_views_recipe is not None,
        "--tta needs --tta-augment or --augment set to fer2013 or rafdb (the recipe of its views)",
    )
    _need(
        cfg.device == "auto" or cfg.device == "cpu" or cfg.device.split(":")[0] == "cuda",
        f"--device: expected auto, cpu, cuda or cuda:N, got {cfg.device!r}",
    )
    _need(
        cfg.builtin or cfg.data_root is not None,
        f"--recipe {cfg.recipe} needs --data-root (or $DDAKERN_DATA) pointing at the data set",
    )
