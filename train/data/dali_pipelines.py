"""DALI pipeline definitions (kept apart from the loop, as in NVIDIA's DALI ResNet-50 example).

Every set is fed through fn.external_source (JPEG bytes, or decoded arrays): the loader checks each file
first and names a bad one, which readers.file's decoder errors do not; and readers.file's own
shuffling (random_shuffle's sample buffer, or shuffle_after_epoch with shard rotation and padding)
repeats samples within a rank's epoch and overlaps ranks when shards are uneven (measured with DALI
2.4), while the engine needs an exact per-epoch permutation split into disjoint, equal rank shards.

The pipeline produces float32 3 x S x S images normalised by crop_mirror_normalize and int32 labels.
Ops run on the CPU when `device_id` is None, on the GPU ("mixed" decoder, `.gpu()` arrays) otherwise.
Only imported when DALI is requested, so the engine runs without DALI installed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from nvidia.dali import fn, pipeline_def, types

from .recipes import AugmentRecipe


def resize_to(images, image_size: int):
    """Bilinear resize to S x S (half-pixel centres, no antialiasing, as the PyTorch path), float output."""
    return fn.resize(
        images,
        size=[image_size, image_size],
        interp_type=types.INTERP_LINEAR,
        antialias=False,
        dtype=types.FLOAT,
    )


def branch_flip_rotate(images, recipe: AugmentRecipe):
    """Branch 1: horizontal flip with p_flip, then rotation uniform in +-degrees (same size, zero fill)."""
    images = fn.flip(images, horizontal=fn.random.coin_flip(probability=recipe.p_flip))
    angle = fn.random.uniform(range=[-recipe.degrees, recipe.degrees])
    return fn.rotate(images, angle=angle, keep_size=True, fill_value=0.0, interp_type=types.INTERP_LINEAR)


def branch_gray_scale(images, recipe: AugmentRecipe, image_size: int, color: bool):
    """Branch 2: optional grayscale (saturation 0), then zoom by uniform [1, max_scale] and centre crop."""
    if recipe.gray and color:
        images = fn.hsv(images, saturation=0.0, dtype=types.FLOAT)
    scale = fn.random.uniform(range=[1.0, recipe.max_scale])
    margin = (1.0 - 1.0 / scale) * 0.5  # the centre 1/scale of the image is stretched to full size
    return fn.resize(
        images,
        size=[image_size, image_size],
        roi_start=fn.stack(margin, margin),
        roi_end=fn.stack(1.0 - margin, 1.0 - margin),
        roi_relative=True,
        interp_type=types.INTERP_LINEAR,
        antialias=False,
        dtype=types.FLOAT,
    )


def augment(images, recipe: AugmentRecipe | None, image_size: int, color: bool, branch: int | None = None):
    """The recipe on S x S float images; `branch` 1/2 forces a branch (TTA), None draws it per sample."""
    if recipe is None:
        return images
    if branch == 1:
        return branch_flip_rotate(images, recipe)
    if branch == 2:
        return branch_gray_scale(images, recipe, image_size, color)
    if fn.random.coin_flip(probability=recipe.p_branch, dtype=types.BOOL):
        out = branch_flip_rotate(images, recipe)
    else:
        out = branch_gray_scale(images, recipe, image_size, color)
    return out


def finish(images, mean: Sequence[float], std: Sequence[float], color: bool):
    """Gray replicated to 3 channels, then (x - mean) / std in CHW float32."""
    if not color:
        images = fn.cat(images, images, images, axis=2)
    return fn.crop_mirror_normalize(images, mean=list(mean), std=list(std), output_layout="CHW", dtype=types.FLOAT)


def views_of(images, recipe, image_size: int, mean, std, color: bool, views: int) -> list:
    """One normalised output (views == 0) or `views` TTA views: the first ceil(V/2) branch 1, the rest 2."""
    if views == 0:
        return [finish(augment(images, recipe, image_size, color), mean, std, color)]
    first = (views + 1) // 2
    return [
        finish(augment(images, recipe, image_size, color, 1 if v < first else 2), mean, std, color)
        for v in range(views)
    ]


def decode(data, gpu: bool):
    """JPEG bytes to RGB uint8 HWC, on the GPU (nvJPEG, "mixed") or the CPU (libjpeg-turbo). On the GPU with
    libjpeg-turbo's "fancy" chroma upsampling, which nvJPEG leaves off by default: 4:2:0 colour JPEGs (the
    built-in set, most photo folders) would otherwise train on other pixels at colour edges than the CPU
    loaders and `predict` (which decodes with libjpeg-turbo) see."""
    if gpu:
        return fn.decoders.image(data, device="mixed", output_type=types.RGB, jpeg_fancy_upsampling=True)
    return fn.decoders.image(data, device="cpu", output_type=types.RGB)


@pipeline_def(enable_conditionals=True)
def source_pipeline(
    source: Iterable,
    *,
    encoded: bool,
    color: bool,
    image_size: int,
    recipe: AugmentRecipe | None,
    mean: Sequence[float],
    std: Sequence[float],
    views: int = 0,
    gpu: bool = False,
):
    """Batches from a Python iterable via fn.external_source (batch=True): encoded JPEG bytes (decoded
    here) or decoded uint8 HWC arrays. The iterable owns the sharding and the per-epoch shuffle."""
    data, label = fn.external_source(
        source=source,
        num_outputs=2,
        batch=True,
        cycle="raise",
        layout=["" if encoded else "HWC", ""],
        dtype=[types.UINT8, types.INT64],
    )
    if encoded:
        images = decode(data, gpu)
    else:
        images = data.gpu() if gpu else data
    images = resize_to(images, image_size)
    return (*views_of(images, recipe, image_size, mean, std, color, views), label)
