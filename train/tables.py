"""The paper's tables as grids of runs: which cells each table has and the train.run / train.fuse flags
of each cell (train.reproduce runs them over seeds; train.table_report writes them back as tables).

- main: ResNet-34/50 with and without DDA, ImageNet init (and VGGFace2 for the ResNet-50 hosts).
- ablation: DDA in no stage, stages 1-2, 1-3, 2-4, 3-4 and all, for ResNet-34 and ResNet-50.
- fusion: late, early, joint and fusion attention over the paper's model pairs (and each member alone).
- modern: the published recipe against its modern counterpart (`<recipe>-modern`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ddakern.models.weights import IMAGENET_FILES, VGGFACE2_FILES, hub_checkpoint_dir

TABLE_NAMES = ("main", "ablation", "fusion", "modern")
INITS = ("imagenet", "vggface2")


@dataclass(frozen=True)
class Cell:
    """One cell of a table: where it sits, what trains it, and what it needs."""

    key: str
    """Folder-safe id (run folders are `<key>-s<seed>`)."""
    row: str
    column: str
    flags: tuple[str, ...]
    """train.run flags (kind "run") or train.fuse's --method and its options (kind "fuse")."""
    kind: str = "run"
    model: str | None = None
    init: str | None = None
    """Pretrained weights the cell starts from: imagenet, vggface2 or None (from scratch)."""
    members: tuple[str, ...] = ()
    """kind "fuse": the keys of the two member cells, whose best.pt the fusion reads."""
    recipe: str | None = None
    """A recipe other than the sweep's (the modern table's second column)."""


@dataclass(frozen=True)
class Table:
    """A table's cells and its axes in the order the paper shows them."""

    name: str
    title: str
    rows: tuple[str, ...]
    columns: tuple[str, ...]
    cells: tuple[Cell, ...]


_NAMES = {
    "resnet18": "ResNet-18",
    "resnet34": "ResNet-34",
    "resnet50": "ResNet-50",
    "vgg11_bn": "VGG-11",
    "vgg13_bn": "VGG-13",
    "resnet34_dda": "ResNet-34 + DDA",
    "resnet50_dda": "ResNet-50 + DDA",
}
STAGES = {"none": (), "1-2": (1, 2), "1-3": (1, 2, 3), "2-4": (2, 3, 4), "3-4": (3, 4), "all": (1, 2, 3, 4)}
"""The ablation's stage settings (paper: none, 1,2; 1,2,3; 2,3,4; 3,4; all)."""
PAIRS = (
    (("resnet18", "imagenet"), ("resnet34", "imagenet")),
    (("vgg13_bn", "imagenet"), ("resnet34", "imagenet")),
    (("vgg11_bn", "imagenet"), ("resnet34", "imagenet")),
    (("resnet34", "imagenet"), ("resnet50_dda", "imagenet")),
    (("resnet50_dda", "imagenet"), ("resnet50_dda", "vggface2")),
)
"""The paper's fusion pairs (model 1 + model 2, each with its pretrained init)."""
FUSION_METHODS = {
    "late": "late fusion",
    "early": "early fusion",
    "joint": "joint fusion",
    "attention": "fusion attention",
}


def run_key(cell: str, seed: int) -> str:
    """A cell's run at one seed: its job key, its folder's name under the sweep folder, its key in runs.json."""
    return f"{cell}-s{seed}"


def _init(init: str | None, scratch: bool) -> str | None:
    return None if scratch else init


def _run_cell(key: str, row: str, column: str, model: str, init: str | None, *extra: str) -> Cell:
    flags = ("--model", model, "--pretrained", init or "none", *extra)
    return Cell(key, row, column, flags, model=model, init=init)


def main_table(recipe: str, scratch: bool) -> Table:
    """ResNet-34/50 with and without DDA from ImageNet, and the ResNet-50 hosts from VGGFace2."""
    models = ("resnet34", "resnet50", "resnet34_dda", "resnet50_dda")
    cells = []
    for model in models:
        inits = ("imagenet", "vggface2") if model.startswith("resnet50") else ("imagenet",)
        for init in inits if not scratch else ("imagenet",):
            column = "from scratch" if scratch else {"imagenet": "ImageNet", "vggface2": "VGGFace2"}[init]
            cells.append(_run_cell(f"{model}-{_init(init, scratch) or 'scratch'}", _NAMES[model], column, model,
                                   _init(init, scratch)))  # fmt: skip
    columns = ("from scratch",) if scratch else ("ImageNet", "VGGFace2")
    return Table("main", "ResNet-34/50 with and without DDA", tuple(_NAMES[m] for m in models), columns, tuple(cells))


def ablation_table(recipe: str, scratch: bool) -> Table:
    """DDA in no stage (the plain host) and in stages 1-2, 1-3, 2-4, 3-4 and all, for ResNet-34 and -50."""
    cells = []
    for host in ("resnet34", "resnet50"):
        for setting, stages in STAGES.items():
            model = f"{host}_dda" if stages else host
            extra = ("--dda-stages", ",".join(map(str, stages))) if stages else ()
            init = _init("imagenet", scratch)
            cells.append(_run_cell(f"{host}-dda-{setting}", setting, _NAMES[host], model, init, *extra))
    return Table("ablation", "DDA-stage ablation", tuple(STAGES), ("ResNet-34", "ResNet-50"), tuple(cells))


def fusion_table(recipe: str, scratch: bool) -> Table:
    """Each pair's members (trained once, shared between pairs) and the four fusion methods over them."""
    members: dict[str, Cell] = {}
    cells: list[Cell] = []
    columns = []
    for pair in PAIRS:
        keys = []
        for model, init in pair:
            init = _init(init, scratch)
            key = f"member-{model}-{init or 'scratch'}"
            keys.append(key)
            if key not in members:
                members[key] = _run_cell(key, "", "", model, init)
        if keys[0] == keys[1]:
            continue  # from scratch the two ResNet-50 + DDA members are the same model: no pair
        column = " + ".join(_NAMES[m] + (" (VGGFace2)" if i == "vggface2" and not scratch else "") for m, i in pair)
        columns.append(column)
        for k, key in enumerate(keys):
            m = members[key]
            cells.append(Cell(f"{key}-as-{len(columns)}-{k}", f"model {k + 1} alone", column, (), "member",
                              m.model, m.init, (key,)))  # fmt: skip
        for method in FUSION_METHODS:
            pair_key = f"fuse-{method}-{'+'.join(k.removeprefix('member-') for k in keys)}"
            cells.append(Cell(pair_key, FUSION_METHODS[method], column, ("--method", method), "fuse",
                              members=tuple(keys)))  # fmt: skip
    rows = ("model 1 alone", "model 2 alone", *FUSION_METHODS.values())
    return Table("fusion", "Fusion of two trained models", rows, tuple(columns), (*members.values(), *cells))


def modern_table(recipe: str, scratch: bool) -> Table:
    """The recipe as published against `<recipe>-modern` (each with its own default model)."""
    init = None if scratch else ("imagenet" if recipe != "synthetic" else None)
    cells = (
        Cell("published", "published recipe", recipe, ("--pretrained", init or "none"), init=init),
        Cell("modern", "modern recipe", recipe, ("--pretrained", init or "none"), init=init, recipe=f"{recipe}-modern"),
    )
    return Table("modern", f"{recipe} against {recipe}-modern", ("published recipe", "modern recipe"), (recipe,), cells)


BUILDERS: dict[str, Callable[[str, bool], Table]] = {
    "main": main_table,
    "ablation": ablation_table,
    "fusion": fusion_table,
    "modern": modern_table,
}


def build_table(name: str, recipe: str, *, scratch: bool = False) -> Table:
    """Table `name` for runs of `recipe`; `scratch`: every model starts from random weights."""
    return BUILDERS[name](recipe, scratch)


def missing_weights(model: str, init: str | None) -> str | None:
    """Why `model` cannot start from `init` on this machine (the file that is not in torch.hub's cache),
    or None when it can (or starts from scratch)."""
    if init is None:
        return None
    where = hub_checkpoint_dir()
    if init == "vggface2":
        if any((where / f).is_file() for f in VGGFACE2_FILES):
            return None
        return f"no VGGFace2 weights file ({' or '.join(VGGFACE2_FILES[::2])}) in {where}"
    host = model.removesuffix("_dda")
    need = [IMAGENET_FILES[host]] + ([IMAGENET_FILES["resnet18"]] if model.endswith("_dda") else [])
    absent = [f for f in need if not (where / f).is_file()]
    return f"no ImageNet weights file {', '.join(absent)} in {where}" if absent else None
