"""An independent, functional statement of the reference DDA forward (eval mode), read straight
from a state dict in the reference implementation's key layout.

It follows the reference code path for path (plain MaxPool2d(2), transposed convolutions
without output sizes, `fc.1` classifier), so it only works at sizes where the reference works
(e.g. 96 and 224). Tests compare ddakern's modules, loaded with `load_original_checkpoint`,
against it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

Tensor = torch.Tensor
SD = dict[str, Tensor]


def bn(sd: SD, p: str, x: Tensor) -> Tensor:
    return F.batch_norm(
        x,
        sd[f"{p}.running_mean"],
        sd[f"{p}.running_var"],
        sd[f"{p}.weight"],
        sd[f"{p}.bias"],
        False,
        0.0,
        1e-5,
    )


def conv(sd: SD, p: str, x: Tensor, stride: int = 1) -> Tensor:
    w = sd[f"{p}.weight"]
    return F.conv2d(x, w, stride=stride, padding=w.shape[-1] // 2)


def shortcut(sd: SD, p: str, x: Tensor, stride: int) -> Tensor:
    """The residual branch: x, or its 1x1 strided convolution + BN where the block has `downsample`."""
    if f"{p}.downsample.0.weight" not in sd:
        return x
    return bn(sd, f"{p}.downsample.1", F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride))


def basic_block(sd: SD, p: str, x: Tensor, stride: int) -> Tensor:
    out = F.relu(bn(sd, f"{p}.bn1", conv(sd, f"{p}.conv1", x, stride)))
    out = bn(sd, f"{p}.bn2", conv(sd, f"{p}.conv2", out))
    return F.relu(out + shortcut(sd, p, x, stride))


def bottleneck(sd: SD, p: str, x: Tensor, stride: int) -> Tensor:
    out = F.relu(bn(sd, f"{p}.bn1", conv(sd, f"{p}.conv1", x)))
    out = F.relu(bn(sd, f"{p}.bn2", conv(sd, f"{p}.conv2", out, stride)))
    out = bn(sd, f"{p}.bn3", conv(sd, f"{p}.conv3", out))
    return F.relu(out + shortcut(sd, p, x, stride))


def stage(sd: SD, p: str, x: Tensor, k: int) -> Tensor:
    i = 0
    block = bottleneck if f"{p}.0.conv3.weight" in sd else basic_block
    while f"{p}.{i}.conv1.weight" in sd:
        x = block(sd, f"{p}.{i}", x, 2 if (i == 0 and k > 1) else 1)
        i += 1
    return x


def conv_block(sd: SD, p: str, x: Tensor, stride: int) -> Tensor:
    return F.relu(bn(sd, f"{p}.batch_norm", conv(sd, f"{p}.conv1", x, stride)))


def arm(sd: SD, p: str, x: Tensor) -> Tensor:
    a = bn(sd, f"{p}.bn", F.conv2d(F.adaptive_avg_pool2d(x, 1), sd[f"{p}.conv.weight"]))
    return x * torch.softmax(a, 1)


def ffm(sd: SD, p: str, a: Tensor, b: Tensor) -> Tensor:
    f = conv_block(sd, f"{p}.conv_block", torch.cat((a, b), 1), 1)
    w = F.relu(bn(sd, f"{p}.bn1", F.conv2d(F.adaptive_avg_pool2d(f, 1), sd[f"{p}.conv1.weight"])))
    w = torch.softmax(bn(sd, f"{p}.bn2", F.conv2d(w, sd[f"{p}.conv2.weight"])), 1)
    return f + f * w


def up(sd: SD, p: str, x: Tensor, k3: bool = False) -> Tensor:
    def one(q: str, x: Tensor) -> Tensor:
        y = F.conv_transpose2d(x, sd[f"{q}.0.weight"], stride=2, padding=1 if k3 else 0)
        return F.relu(bn(sd, f"{q}.1", y))

    i = 0
    while f"{p}.uplayers.{i}.0.weight" in sd:
        x = one(f"{p}.uplayers.{i}", x)
        i += 1
    return one(f"{p}.upout", x)


def context(sd: SD, p: str, x: Tensor, entry: int) -> list[Tensor]:
    x = F.relu(bn(sd, f"{p}.bn", conv(sd, f"{p}.conv", x)))
    x = F.relu(bn(sd, f"{p}.bn2", conv(sd, f"{p}.conv2", x)))
    outs = []
    for k in range(entry, 5):
        x = stage(sd, f"{p}.layer{k}", x, k)
        outs.append(x)
    return outs


def dda_mask(sd: SD, k: int, x: Tensor) -> Tensor:
    p = f"DDA{k}"
    outs = context(sd, f"{p}.layers", x, k)
    if k == 4:
        pool = outs[-1]
        a = up(sd, f"{p}.up1", arm(sd, f"{p}.arm1", pool) * F.adaptive_avg_pool2d(pool, 1), k3=True)
        u = ffm(sd, f"{p}.ffm", x, a)
    else:
        p1, p2 = outs[-2], outs[-1]
        s = x
        for i in range(1, 5 - k):
            s = conv_block(sd, f"{p}.conv{i}", s, 2)
        a1 = arm(sd, f"{p}.arm1", p1)
        a2 = arm(sd, f"{p}.arm2", p2) * F.adaptive_avg_pool2d(p2, 1)
        if k == 1:
            a1 = F.max_pool2d(a1, 2)
        else:
            a2 = up(sd, f"{p}.up_arm2", a2, k3=True)
        u = up(sd, f"{p}.up2", ffm(sd, f"{p}.ffm", s, torch.cat((a1, a2), 1)))
    z = F.relu(bn(sd, f"{p}.bn", F.conv2d(u, sd[f"{p}.outconv.weight"])))
    return torch.softmax(z, 1)


def reference_forward(sd: SD, x: Tensor) -> Tensor:
    """Logits of the reference ResNet+DDA (all four stages) in eval mode."""
    x = F.relu(bn(sd, "bn1", F.conv2d(x, sd["conv1.weight"], stride=2, padding=3)))
    x = F.max_pool2d(x, 3, 2, 1)
    for k in range(1, 5):
        x = stage(sd, f"layer{k}", x, k)
        x = x * (1 + dda_mask(sd, k, x))
    x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    return F.linear(x, sd["fc.1.weight"], sd["fc.1.bias"])


def random_reference_state_dict(tsv_path: str, generator: torch.Generator) -> SD:
    """A state dict in the reference layout (every key of the TSV) with fresh random values."""
    sd: SD = {}
    for line in open(tsv_path):
        key, shape_text = line.rstrip("\n").split("\t")
        shape = tuple(int(s) for s in shape_text.strip("()").split(",") if s.strip())
        if key.endswith("num_batches_tracked"):
            sd[key] = torch.tensor(7)
        elif key.endswith("running_var"):
            sd[key] = torch.rand(shape, generator=generator) + 0.5
        elif key.endswith("running_mean"):
            sd[key] = torch.randn(shape, generator=generator) * 0.1
        elif key.endswith(".weight") and len(shape) == 1:
            sd[key] = 1 + 0.1 * torch.randn(shape, generator=generator)
        elif len(shape) >= 2:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            if ".up" in key:  # transposed conv weights are (in, out, k, k)
                fan_in = shape[0]
            sd[key] = torch.randn(shape, generator=generator) / fan_in**0.5
        else:
            sd[key] = 0.1 * torch.randn(shape, generator=generator)
    return sd
