"""The torch networks: TSMixer-Ext, the MLP baseline and the feature pipeline's group mixers.

TSMixer-Ext reads feature-group tokens (`pipeline.models.tokens`) and an era context computed from
the current era's rows (see /work/shared/TSMIXER.md); the MLP baseline reads all features. Both end
in a main head (5-class cross-entropy or regression) and auxiliary heads, and are trained by
`pipeline.models.training`; `pipeline.runtime` runs their exported arrays in numpy. The group
mixers are small enough to be trained here, beside their network (`fit_group_mixer`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.data import EraFrame, release_pages

CLASS_VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)
NORM_EPS = 1e-5
CONTEXT_EPS = 1e-5
N_BINS = 5
# Group mixers: Adam's learning rate and eras per batch.
MIXER_LR = 3e-3
MIXER_ERAS_PER_BATCH = 4


def scale_features(x: torch.Tensor) -> torch.Tensor:
    """Bins 0..4 to -1..1, the same scaling as `pipeline.runtime`."""
    return (x.float() - 2.0) / 2.0


def feature_bins(x: torch.Tensor) -> torch.Tensor:
    """Scaled features back to their bins 0..4 (long), for the per-bin embeddings."""
    return torch.clamp(torch.round(x * 2.0 + 2.0), 0, N_BINS - 1).long()


def bin_one_hot(bins: torch.Tensor) -> torch.Tensor:
    """One-hot float [..., 5] of bins; the padding bin N_BINS maps to all zeros."""
    return F.one_hot(bins, N_BINS + 1)[..., :N_BINS].float()


def era_mean(values: torch.Tensor, row_era: torch.Tensor, n_eras: int) -> torch.Tensor:
    """Per-era means of [N, D] rows as [n_eras, D]; a one-hot matmul (deterministic on every device)."""
    onehot = F.one_hot(row_era, n_eras).to(values.dtype).T
    return (onehot @ values) / onehot.sum(1, keepdim=True)


class RMSNorm(nn.Module):
    """Scale each token's d channels to unit root-mean-square, with a learned gain and no centring.

    Unlike LayerNorm it keeps the sign and relative size of a token's channels (a cluster mean in
    one channel stays a cluster mean), which the squared-mean and interaction terms need."""

    def __init__(self, d: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + NORM_EPS) * self.weight


class ContiguousGrad(torch.autograd.Function):
    """The identity, whose backward hands on a contiguous copy of its gradient.

    Token mixing works on [N, d, G] and its output is added to the [N, G, d] residual, so its
    gradient arrives transposed; GELU's backward on such a strided gradient was 4x slower on CPU
    than on a contiguous one (18 % of a profiled fit, 6 % after), and the copy costs far less."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        return x.view_as(x)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        return grad.contiguous()


class MixerBlock(nn.Module):
    """Token mixing over the G axis, then feature mixing over channels conditioned on the era context.

    The context enters the first feature-mixing layer as that layer applied to the concatenation of
    each token and its era's context, computed as two products: the context part once per era, not
    once per token of every row."""

    def __init__(self, n_tokens: int, d: int, ff: int, context_dim: int, dropout: float):
        super().__init__()
        self.token_norm = RMSNorm(d)
        self.token_mix = nn.Linear(n_tokens, n_tokens)
        self.feature_norm = RMSNorm(d)
        self.ff1 = nn.Linear(d + context_dim, ff)
        self.ff2 = nn.Linear(ff, d)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, context: torch.Tensor | None, row_era: torch.Tensor) -> torch.Tensor:
        """`h` [N, G, d]; `context` [n_eras, context_dim] (or None); `row_era` each row's era number."""
        z = self.token_norm(h).transpose(1, 2)
        mixed = self.dropout(F.gelu(self.token_mix(z), approximate="tanh"))
        h = h + ContiguousGrad.apply(mixed).transpose(1, 2)
        d = h.shape[-1]
        pre = F.linear(self.feature_norm(h), self.ff1.weight[:, :d], self.ff1.bias)
        if context is not None:
            pre = pre + F.linear(context, self.ff1.weight[:, d:])[row_era, None, :]
        z = self.dropout(F.gelu(pre, approximate="tanh"))
        return h + self.dropout(self.ff2(z))


class TSMixerNet(nn.Module):
    """Group tokens -> mixer blocks -> projection G -> K targets -> main and auxiliary heads.

    Normalization is pre-branch RMSNorm only: a norm on the residual stream before the output
    projection would normalize away the scale of the mostly linear signal carried there.
    """

    def __init__(
        self,
        token_index: np.ndarray,
        n_features: int,
        d: int,
        n_block: int,
        ff: int,
        context_dim: int,
        era_context: bool,
        bin_embedding: bool,
        dropout: float,
        n_main: int,
        n_aux: int,
    ):
        super().__init__()
        n_tokens, width = token_index.shape
        self.n_features = n_features
        self.register_buffer("index", torch.as_tensor(token_index))
        mask = torch.as_tensor(token_index < n_features, dtype=torch.float32)
        bound = (1.0 / mask.sum(1).clamp(min=1).sqrt())[:, None, None]
        self.embed_w = nn.Parameter((torch.rand(n_tokens, width, d) * 2 - 1) * bound * mask[..., None])
        self.embed_b = nn.Parameter((torch.rand(n_tokens, d) * 2 - 1) * bound[:, :, 0])
        # Per-feature bin embeddings: a learned value per (feature, bin), summed into the group token,
        # so each feature's nonlinear shape over its 5 bins is learned before any mixing.
        self.bin_w = (
            nn.Parameter((torch.rand(n_tokens, width, N_BINS, d) * 2 - 1) * bound[..., None] * mask[..., None, None])
            if bin_embedding
            else None
        )
        self.context = nn.Linear(2 * n_tokens * d, context_dim) if era_context else None
        used_context = context_dim if era_context else 0
        self.blocks = nn.ModuleList(MixerBlock(n_tokens, d, ff, used_context, dropout) for _ in range(n_block))
        self.target_proj = nn.Linear(n_tokens, 1 + n_aux)
        self.main_head = nn.Linear(d, n_main)
        self.aux_w = nn.Parameter(torch.randn(n_aux, d) / math.sqrt(d))
        self.aux_b = nn.Parameter(torch.zeros(n_aux))

    def forward(self, x: torch.Tensor, row_era: torch.Tensor, n_eras: int) -> tuple[torch.Tensor, torch.Tensor]:
        padded = torch.cat([x, x.new_zeros(len(x), 1)], dim=1)
        tokens = torch.einsum("ngp,gpd->ngd", padded[:, self.index], self.embed_w) + self.embed_b
        if self.bin_w is not None:
            bins = torch.cat([feature_bins(x), x.new_full((len(x), 1), N_BINS, dtype=torch.long)], dim=1)
            tokens = tokens + torch.einsum("ngpb,gpbd->ngd", bin_one_hot(bins[:, self.index]), self.bin_w)
        context = None
        if self.context is not None:
            flat = tokens.reshape(len(x), -1)
            mean = era_mean(flat, row_era, n_eras)
            std = torch.sqrt(era_mean((flat - mean[row_era]) ** 2, row_era, n_eras) + CONTEXT_EPS)
            context = F.gelu(self.context(torch.cat([mean, std], dim=1)), approximate="tanh")
        h = tokens
        for block in self.blocks:
            h = block(h, context, row_era)
        out = self.target_proj(h.transpose(1, 2)).transpose(1, 2)
        return self.main_head(out[:, 0]), (out[:, 1:] * self.aux_w).sum(-1) + self.aux_b


class MLPNet(nn.Module):
    """The baseline: Linear + GELU + dropout layers on all features, then the same two heads."""

    def __init__(self, n_features: int, hidden: Sequence[int], dropout: float, one_hot: bool, n_main: int, n_aux: int):
        super().__init__()
        self.one_hot = one_hot
        sizes = [n_features * (N_BINS if one_hot else 1), *hidden]
        self.layers = nn.ModuleList(nn.Linear(a, b) for a, b in zip(sizes[:-1], sizes[1:], strict=False))
        self.dropout = nn.Dropout(dropout)
        self.main_head = nn.Linear(sizes[-1], n_main)
        self.aux_head = nn.Linear(sizes[-1], n_aux) if n_aux else None

    def forward(self, x: torch.Tensor, row_era: torch.Tensor, n_eras: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.one_hot:
            x = bin_one_hot(feature_bins(x)).reshape(len(x), -1)
        for layer in self.layers:
            x = self.dropout(F.gelu(layer(x), approximate="tanh"))
        return self.main_head(x), self.aux_head(x) if self.aux_head is not None else x.new_zeros(len(x), 0)


def expected_value(main: torch.Tensor, head: str) -> torch.Tensor:
    """The main target's prediction: the mean of the class distribution, or the regression output."""
    if head == "ce":
        return torch.softmax(main, dim=1) @ main.new_tensor(CLASS_VALUES)
    return main[:, 0]


def blend_prediction(main: torch.Tensor, aux: torch.Tensor, head: str, aux_weight: float) -> torch.Tensor:
    """Main prediction, blended with the mean auxiliary prediction when `aux_weight` > 0."""
    pred = expected_value(main, head)
    if aux_weight > 0 and aux.shape[1] > 0:
        pred = (1 - aux_weight) * pred + aux_weight * aux.mean(1)
    return pred


class GroupMixerNet(nn.Module):
    """One small MLP per feature group, all groups in batched products: each reads only its own
    group's scaled features (a row of `runtime.token_index`; padding reads a zero column) and
    predicts every target."""

    def __init__(self, index: np.ndarray, hidden: int, n_targets: int):
        super().__init__()
        n_groups, width = index.shape
        self.flat_index = torch.as_tensor(index.ravel())
        self.w1 = nn.Parameter(torch.randn(n_groups, width, hidden) / np.sqrt(width))
        self.b1 = nn.Parameter(torch.zeros(n_groups, hidden))
        self.w2 = nn.Parameter(torch.randn(n_groups, hidden, n_targets) / np.sqrt(hidden))
        self.b2 = nn.Parameter(torch.zeros(n_groups, n_targets))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Outputs [groups, N, targets] for scaled feature rows `x` [N, features]."""
        n_groups, width, _ = self.w1.shape
        padded = torch.cat([x, torch.zeros(len(x), 1)], dim=1)
        grouped = padded[:, self.flat_index].reshape(len(x), n_groups, width).transpose(0, 1)
        hidden_units = F.gelu(torch.matmul(grouped, self.w1) + self.b1[:, None, :], approximate="tanh")
        return torch.matmul(hidden_units, self.w2) + self.b2[:, None, :]

    def arrays(self) -> dict[str, np.ndarray]:
        """The weights `runtime.group_mixer_outputs` reads: its feature is the main target's output."""
        return {
            "w1": self.w1.detach().numpy().copy(),
            "b1": self.b1.detach().numpy().copy(),
            "w2": self.w2.detach().numpy()[:, :, 0].copy(),
            "b2": self.b2.detach().numpy()[:, 0].copy(),
        }


def mixer_loss(out: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Squared error of every group's outputs [G, N, T] against the labels [N, T] centred on 0.5,
    averaged over groups and known labels (NaN labels are masked out)."""
    mask = ~torch.isnan(labels)
    error = (out - torch.nan_to_num(labels - 0.5)[None]) * mask[None]
    return error.square().sum() / (mask.sum() * out.shape[0])


def fit_group_mixer(
    blocks: list[tuple[EraFrame, np.ndarray]],
    targets: list[str],
    index: np.ndarray,
    hidden: int,
    epochs: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Train a `GroupMixerNet` with Adam on batches of whole eras (`blocks`: (frame, rows) of one
    era each) in a seeded order, each group predicting the main and auxiliary targets (masked where
    NaN) from its own group only, on one thread. Weights as arrays for `runtime.group_mixer_outputs`."""
    torch.manual_seed(seed)
    network = GroupMixerNet(index, hidden, len(targets))
    optimizer = torch.optim.Adam(network.parameters(), lr=MIXER_LR)
    order = np.random.default_rng(seed)
    labels_of = {id(frame): frame.targets[targets].to_numpy(np.float32) for frame, _ in blocks}
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for _ in range(epochs):
            for batch in np.array_split(order.permutation(len(blocks)), max(1, len(blocks) // MIXER_ERAS_PER_BATCH)):
                x = np.vstack([blocks[i][0].features[blocks[i][1]] for i in batch])
                for i in batch:
                    release_pages(blocks[i][0].features)
                y = np.vstack([labels_of[id(blocks[i][0])][blocks[i][1]] for i in batch])
                loss = mixer_loss(network(scale_features(torch.as_tensor(x))), torch.as_tensor(y))
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return network.arrays()
