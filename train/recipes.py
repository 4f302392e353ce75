"""The recipe table: each training recipe defined once -- the data-set family its layout detector searches,
its class count, its default options and, for the modern recipes, where each value comes from.

`train.config` takes its defaults from here, `train.data.run_data` its data-set family and class count.
Sources are the public repositories' own training scripts (facts in shared/spec/modern-recipes.md and
training-recipes.md); docs/recipes.md shows the same table for readers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["RECIPES", "Recipe"]


@dataclass(frozen=True)
class Recipe:
    """One recipe: `family` is the data-set reader (the checkpoint's "dataset"), `num_classes` its class
    count (0: from the class folders), `builtin` for the generated synthetic set (no --data-root),
    `values` the option defaults, `sources` option -> the repository file and line of reasoning behind it."""

    family: str
    num_classes: int
    values: dict[str, Any]
    builtin: bool = False
    sources: dict[str, str] = field(default_factory=dict)


DDA = "Harly-1506/Dual-Domain-Attention main_rafdb.py / main_fer2013.py"
POSTER = "Talented-Q/POSTER_V2 main.py"
DDAMFN_RAF = "SainingZhang/DDAMFN DDAMFN++/rafdb_train_sam_opt_ver2.0.py"
DDAMFN_AFF = "SainingZhang/DDAMFN DDAMFN++/affectnet_train_sam_opt_v2.0.py"

_PUBLISHED = dict(model="resnet34_dda", optimizer="radam", lr=1e-4, epochs=50, batch_size=48, image_size=224, seed=113)
_FER = dict(
    _PUBLISHED,
    weight_decay=1e-3,
    scheduler="plateau",
    plateau_factor=0.1,
    plateau_patience=2,
    early_stop=10,
    normalize="unit",
    augment="fer2013",
)
_RAFDB = dict(
    _PUBLISHED,
    weight_decay=1e-4,
    scheduler="exponential",
    gamma=0.9,
    epochs=60,
    early_stop=0,
    normalize="imagenet",
    augment="rafdb",
)
_AFFECTNET = dict(_RAFDB, epochs=40)
# Tuned so that the default run (`python -m train.run --fused-ops`) reaches >= 90% test accuracy within
# 5 minutes on 2 CPU cores; see the README.
_SYNTHETIC = dict(
    _PUBLISHED,
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
    normalize="unit",
    augment="none",  # fresh samples instead of augmented repeats
    tta_augment="fer2013",
    synthetic_train=3150,
    synthetic_val=280,
    synthetic_test=280,
)

# ---- the modern recipes: DDA's backbone, trained as the strongest public FER repositories train -------------
# What the top repositories share: SAM (rho 0.05, not adaptive) around plain Adam without weight decay, and
# RandomErasing after normalisation. None uses label smoothing, mixup, EMA or a cosine schedule: those stay
# off here (flags, to measure). Values a repository ties to its own backbone (POSTER++'s lr 3.5e-5 for
# IR-50 + ViT, 200 epochs) are not carried over to DDA's ResNet; the recipe keeps DDA's own then.
_SAM_ADAM = dict(optimizer="adam", sam="sam", sam_rho=0.05, weight_decay=0.0)
_SAM_ADAM_SOURCES = {
    "optimizer": f"{POSTER} (SAM(..., torch.optim.Adam, ...), --optimizer adam); {DDAMFN_RAF} (same)",
    "sam": f"{POSTER}: SAM(model.parameters(), base_optimizer, lr=args.lr, rho=0.05, adaptive=False); {DDAMFN_RAF}",
    "sam_rho": f"{POSTER} and {DDAMFN_RAF}: rho=0.05",
    "weight_decay": f"{POSTER} and {DDAMFN_RAF}: no weight_decay reaches SAM/Adam (0)",
}


def _erasing(p: float, area: tuple[float, float], why_p: str, why_area: str) -> tuple[dict[str, Any], dict[str, str]]:
    """RandomErasing(p, scale=area) after normalisation as recipe values, and their sources (one for both
    area bounds): the three options every modern recipe sets together."""
    values = dict(random_erasing=p, erasing_min_area=area[0], erasing_max_area=area[1])
    return values, {"random_erasing": why_p, "erasing_min_area": why_area, "erasing_max_area": why_area}


_ERASE, _ERASE_SOURCES = _erasing(
    0.5,
    (0.02, 0.25),
    f"{DDAMFN_RAF}: transforms.RandomErasing(scale=(0.02,0.25)) after Normalize (p 0.5)",
    f"{DDAMFN_RAF}: scale=(0.02, 0.25) (POSTER++ main.py: (0.02, 0.1))",
)
RAFDB_MODERN = dict(_RAFDB, **_SAM_ADAM, **_ERASE, lr=5e-4, batch_size=128, epochs=60, gamma=0.9)
RAFDB_MODERN_SOURCES = {
    **_SAM_ADAM_SOURCES,
    **_ERASE_SOURCES,
    "lr": f"{DDAMFN_RAF}: --lr 5e-4 (Adam inside SAM)",
    "batch_size": f"{DDAMFN_RAF}: --batch_size 128",
    "epochs": f"{DDAMFN_RAF}: --epochs 60 (DDA's own RAF-DB recipe: 60 too)",
    "scheduler": f"{DDAMFN_RAF}: ExponentialLR(optimizer, gamma=0.9), stepped once per epoch",
    "gamma": f"{DDAMFN_RAF}: gamma=0.9",
    "image_size": f"{POSTER}: Resize((224, 224)); DDA trains at 224 too",
    "augment": f"{DDA}: flip + rotation branches (DDAMFN++: flip, rotation 5, crop pad 8)",
}
_ERASE, _ERASE_SOURCES = _erasing(
    0.5,
    (0.02, 0.25),
    f"{DDAMFN_RAF}: transforms.RandomErasing(scale=(0.02,0.25)) (p 0.5)",
    f"{DDAMFN_RAF}: scale=(0.02, 0.25)",
)
FER2013_MODERN = dict(_FER, **_SAM_ADAM, **_ERASE)
FER2013_MODERN_SOURCES = {
    **_SAM_ADAM_SOURCES,
    **_ERASE_SOURCES,
    "lr": f"{DDA}: lr 1e-4, plateau schedule, batch 48, 50 epochs (no FER2013 script among the SAM repositories)",
}
_ERASE, _ERASE_SOURCES = _erasing(
    1.0,
    (0.05, 0.05),
    f"{POSTER}: transforms.RandomErasing(p=1, scale=(0.05, 0.05)) off RAF-DB; {DDAMFN_AFF} (same)",
    f"{POSTER} and {DDAMFN_AFF}: scale=(0.05, 0.05)",
)
AFFECTNET7_MODERN = dict(_AFFECTNET, **_SAM_ADAM, **_ERASE, gamma=0.98, balanced=True)
AFFECTNET7_MODERN_SOURCES = {
    **_SAM_ADAM_SOURCES,
    **_ERASE_SOURCES,
    "gamma": f"{POSTER}: ExponentialLR(optimizer, gamma=0.98); {DDAMFN_AFF}: gamma=0.98",
    "balanced": f"{POSTER}: sampler=ImbalancedDatasetSampler(train_dataset) for AffectNet-7; {DDAMFN_AFF} (same)",
    "lr": f"{DDA}: lr 1e-4 (POSTER++ 3.5e-5 / DDAMFN++ 1e-5 are for their pretrained face backbones)",
}
_ERASE, _ERASE_SOURCES = _erasing(
    0.5, (0.02, 0.25), f"{DDAMFN_RAF}: RandomErasing p 0.5, scale (0.02, 0.25)", f"{DDAMFN_RAF}: scale=(0.02, 0.25)"
)
SYNTHETIC_MODERN = dict(_SYNTHETIC, sam="sam", sam_rho=0.05, **_ERASE)
SYNTHETIC_MODERN_SOURCES = {
    **_ERASE_SOURCES,
    "sam": f"{POSTER} and {DDAMFN_RAF}: SAM, rho 0.05, around the recipe's Adam",
    "lr": "ddakern train/recipes.py _SYNTHETIC: the built-in recipe's (CPU-sized), so that only the methods differ",
}

RECIPES: dict[str, Recipe] = {
    "fer2013": Recipe("fer2013", 7, _FER, sources={"*": f"{DDA}; training-recipes.md"}),
    # FERPlus uses the FER2013 recipe on its relabelled images
    "ferplus": Recipe("ferplus", 8, _FER, sources={"*": f"{DDA} (FER2013 recipe)"}),
    "rafdb": Recipe("rafdb", 7, _RAFDB, sources={"*": f"{DDA}; training-recipes.md"}),
    # AffectNet: the RAF-DB recipe (RGB faces, ImageNet normalisation); the community protocol reports on the
    # validation set; --balanced for its class imbalance.
    "affectnet7": Recipe("affectnet", 7, _AFFECTNET),
    "affectnet8": Recipe("affectnet", 8, _AFFECTNET),
    "folders": Recipe("folders", 0, _RAFDB),  # any class-folder set: RGB photos, as RAF-DB
    # the synthetic set is written in FER2013's CSV format and read back as FER2013
    "synthetic": Recipe("synthetic", 7, _SYNTHETIC, builtin=True),
    "rafdb-modern": Recipe("rafdb", 7, RAFDB_MODERN, sources=RAFDB_MODERN_SOURCES),
    "fer2013-modern": Recipe("fer2013", 7, FER2013_MODERN, sources=FER2013_MODERN_SOURCES),
    "affectnet7-modern": Recipe("affectnet", 7, AFFECTNET7_MODERN, sources=AFFECTNET7_MODERN_SOURCES),
    "synthetic-modern": Recipe("synthetic", 7, SYNTHETIC_MODERN, builtin=True, sources=SYNTHETIC_MODERN_SOURCES),
}
"""Every recipe, each value written once; options a recipe leaves out take Config's defaults."""
