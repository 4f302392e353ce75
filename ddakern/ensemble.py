"""Two-model ensembles ("fusion" in the FER literature): late, early, joint and fusion attention.

Members are any models with `forward_features(x) -> N x F` and `num_features` (every registry
model), of different widths too. Every fusion module returns log-probabilities or logits
usable with cross entropy; `argmax` gives the prediction.
"""

from __future__ import annotations

import torch
from torch import nn

from ddakern.models.weights import CLASSIFIER_PREFIXES

METHODS = ("late", "early", "joint", "attention")


def freeze(model: nn.Module) -> nn.Module:
    """Stop gradients into `model` and keep its batch norms in eval mode (see FusionBase.train)."""
    for p in model.parameters():
        p.requires_grad_(False)
    model.eval()
    return model


class FusionBase(nn.Module):
    """Holds the two members; frozen members stay in eval mode whatever `train()` is called with."""

    def __init__(self, member1: nn.Module, member2: nn.Module, freeze_members: bool) -> None:
        super().__init__()
        self.member1 = member1
        self.member2 = member2
        self.freeze_members = freeze_members
        if freeze_members:
            freeze(member1)
            freeze(member2)
        else:  # trained through forward_features only: each member's own classifier gets no gradient, which
            # DDP's reducer takes for a missing one (an error at the second step under torchrun); kept as is
            for member in (member1, member2):
                for name, p in member.named_parameters():
                    if name.startswith(CLASSIFIER_PREFIXES):
                        p.requires_grad_(False)

    def train(self, mode: bool = True) -> FusionBase:
        super().train(mode)
        if self.freeze_members:
            self.member1.eval()
            self.member2.eval()
        return self

    def set_grad_checkpointing(self, mode: str | bool = True) -> None:
        """Recompute mode of both members (see ddakern.recompute); frozen members run without grad."""
        from ddakern.recompute import set_recompute

        set_recompute(self.member1, mode)
        set_recompute(self.member2, mode)

    def member_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_members):
            return self.member1.forward_features(x), self.member2.forward_features(x)


class LateFusion(FusionBase):
    """log(sum_i w_i softmax(member_i(x))): the mean of the members' softmax outputs by default,
    or learned weights (softmax over two scalars) with `learned_weights=True`."""

    def __init__(self, member1: nn.Module, member2: nn.Module, learned_weights: bool = False) -> None:
        super().__init__(member1, member2, freeze_members=True)
        self.weight_logits = nn.Parameter(torch.zeros(2), requires_grad=learned_weights)

    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p1 = torch.softmax(self.member1(x).float(), 1)
            p2 = torch.softmax(self.member2(x).float(), 1)
        w = torch.softmax(self.weight_logits, 0)
        return w[0] * p1 + w[1] * p2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.log(self.probabilities(x).clamp_min(1e-12))


class ConcatFusion(FusionBase):
    """Classifier on concat(features1, features2): early fusion (members frozen) or joint
    fusion (trained end to end)."""

    def __init__(
        self,
        member1: nn.Module,
        member2: nn.Module,
        num_classes: int,
        *,
        freeze_members: bool,
        dropout: float = 0.4,
    ) -> None:
        super().__init__(member1, member2, freeze_members)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(member1.num_features + member2.num_features, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1, f2 = self.member_features(x)
        return self.fc(self.dropout(torch.cat((f1.float(), f2.float()), 1)))


class LocalAttention(nn.Module):
    """Each token gated by a sigmoid of a 1-D convolution over its neighbouring tokens."""

    def __init__(self, dim: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.conv = nn.Conv1d(dim, dim, kernel_size, padding=kernel_size // 2, groups=dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # N x T x D
        h = self.norm(tokens)
        gate = torch.sigmoid(self.conv(h.transpose(1, 2)).transpose(1, 2))
        return tokens + self.proj(h * gate)


class FusionAttention(FusionBase):
    """Fusion attention: concat -> MLP back to the feature size -> average with the members'
    (projected) features -> self-attention block -> local-attention block -> FC layers.

    The fused vector of size `dim` is split into `tokens` tokens of `dim // tokens` for the two
    attention blocks. Defaults: dim 512, 8 tokens, 4 heads, hidden 512, frozen members.
    """

    def __init__(
        self,
        member1: nn.Module,
        member2: nn.Module,
        num_classes: int,
        *,
        dim: int = 512,
        tokens: int = 8,
        heads: int = 4,
        hidden: int = 512,
        dropout: float = 0.4,
        freeze_members: bool = True,
    ) -> None:
        super().__init__(member1, member2, freeze_members)
        if dim % tokens or (dim // tokens) % heads:
            raise ValueError(f"dim {dim} must split into {tokens} tokens divisible by {heads} heads")
        f1, f2 = member1.num_features, member2.num_features
        self.tokens = tokens
        self.mlp = nn.Sequential(nn.Linear(f1 + f2, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.proj1 = nn.Linear(f1, dim)
        self.proj2 = nn.Linear(f2, dim)
        self.self_attention = nn.TransformerEncoderLayer(
            dim // tokens,
            heads,
            dim_feedforward=2 * (dim // tokens),
            dropout=0.1,
            batch_first=True,
            norm_first=True,
        )
        self.local_attention = LocalAttention(dim // tokens)
        self.head = nn.Sequential(
            nn.LayerNorm(dim),
            nn.Linear(dim, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f1, f2 = (f.float() for f in self.member_features(x))
        fused = (self.mlp(torch.cat((f1, f2), 1)) + self.proj1(f1) + self.proj2(f2)) / 3
        t = fused.view(fused.shape[0], self.tokens, -1)
        t = self.local_attention(self.self_attention(t))
        return self.head(t.flatten(1))


def create_ensemble(
    method: str, member1: nn.Module, member2: nn.Module, num_classes: int, **options: object
) -> FusionBase:
    """Build a fusion module: "late", "early", "joint" or "attention" (see the classes' options)."""
    if method == "late":
        return LateFusion(member1, member2, **options)  # type: ignore[arg-type]
    if method == "early":
        return ConcatFusion(member1, member2, num_classes, freeze_members=True, **options)  # type: ignore[arg-type]
    if method == "joint":
        return ConcatFusion(member1, member2, num_classes, freeze_members=False, **options)  # type: ignore[arg-type]
    if method == "attention":
        return FusionAttention(member1, member2, num_classes, **options)  # type: ignore[arg-type]
    raise ValueError(f"unknown fusion method {method!r}; choose one of {', '.join(METHODS)}")


__all__ = [
    "METHODS",
    "ConcatFusion",
    "FusionAttention",
    "LateFusion",
    "LocalAttention",
    "create_ensemble",
    "freeze",
]
