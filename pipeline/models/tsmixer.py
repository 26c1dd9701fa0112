"""TSMixer-Ext adapted to Numerai, and a plain multi-target MLP baseline: the training side.

Numerai gives a model only the current era's rows, so TSMixer's time axis becomes the axis of
feature-group tokens, and TSMixer-Ext's static features become an era context computed from the
current era's rows (see /work/shared/TSMIXER.md). Both networks share one training loop over whole
eras, with early stopping on the validation per-era CORR, and export to plain numpy arrays that
`pipeline.runtime` runs without torch.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel

from pipeline.cv import EraWalkForward, default_embargo
from pipeline.data import FEATURE_GROUPS, MAIN_TARGET, EraFrame, release_pages
from pipeline.features import cluster_labels
from pipeline.metrics import per_era_corr, summarize
from pipeline.runtime import token_index
from pipeline.tuning import random_search

CLASS_VALUES = (0.0, 0.25, 0.5, 0.75, 1.0)
HEADS = ("ce", "regression")
DEVICES = ("cpu", "cuda")
# Sets of features.json that are selections or releases, not groups.
NON_GROUP_SETS = frozenset({"small", "medium", "all", "sunshine", "rain", "midnight", "shadow"})
# Regression losses are taken on 4 * (prediction - target) so that they are of the order of the
# 5-class cross-entropy (the target's standard deviation is about 0.22).
REGRESSION_SCALE = 4.0
NORM_EPS = 1e-5
CONTEXT_EPS = 1e-5
# Rows of the fit eras used to measure feature correlations for the token clusters (every k-th row).
CLUSTER_ROWS = 60_000
N_BINS = 5


def token_groups(
    feature_names: Sequence[str], feature_sets: Mapping[str, Sequence[str]] | None = None, max_group_size: int = 32
) -> list[list[int]]:
    """Column indices of each token: named feature groups, large ones split into chunks.

    Each feature goes to the first group that lists it; features of no group are chunked together,
    so data without groups falls back to contiguous chunks of at most `max_group_size` features.
    """
    if max_group_size < 1:
        raise ValueError(f"max_group_size must be at least 1, got {max_group_size}")
    position = {name: i for i, name in enumerate(feature_names)}
    sets = dict(feature_sets or {})
    if any(name in sets for name in FEATURE_GROUPS):
        names = [name for name in FEATURE_GROUPS if name in sets]
    else:
        names = [name for name in sets if name not in NON_GROUP_SETS and not name.endswith("_features")]
    taken = np.zeros(len(feature_names), dtype=bool)
    groups: list[list[int]] = []
    for name in names:
        members = sorted({position[f] for f in sets[name] if f in position and not taken[position[f]]})
        if members:
            taken[members] = True
            groups.append(members)
    rest = np.flatnonzero(~taken).tolist()
    if rest:
        groups.append(rest)
    tokens: list[list[int]] = []
    for members in groups:
        n_chunks = math.ceil(len(members) / max_group_size)
        tokens.extend(chunk.tolist() for chunk in np.array_split(np.asarray(members), n_chunks))
    return tokens


def cluster_tokens(features: np.ndarray, groups: Sequence[Sequence[int]], token_size: int) -> list[list[int]]:
    """Tokens of correlated features: each group's columns clustered by average linkage on 1 - |corr|
    into ceil(size / token_size) clusters, clusters over 2 * token_size split into chunks.

    Numerai's features come in clusters of strongly correlated columns inside each group, in no
    particular column order; a token that lines up with a cluster can carry its mean (and nonlinear
    functions of it) in one channel. `features` are rows of the fit eras only.
    """
    if token_size < 1:
        raise ValueError(f"token_size must be at least 1, got {token_size}")
    tokens: list[list[int]] = []
    for members in map(np.asarray, groups):
        n_clusters = math.ceil(len(members) / token_size)
        if n_clusters > 1:
            labels = cluster_labels(features[:, members], n_clusters=n_clusters)
            clusters = [members[labels == label] for label in np.unique(labels)]
        else:
            clusters = [members]
        for cluster in clusters:
            n_chunks = math.ceil(len(cluster) / (2 * token_size))
            tokens.extend(chunk.tolist() for chunk in np.array_split(cluster, n_chunks))
    return tokens


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


def era_corr(pred: torch.Tensor, target: torch.Tensor, row_era: torch.Tensor, n_eras: int) -> torch.Tensor:
    """Mean over eras of the Pearson correlation of prediction and target (a differentiable CORR proxy)."""
    both = torch.stack([pred, target], dim=1)
    centred = both - era_mean(both, row_era, n_eras)[row_era]
    cov = era_mean(centred[:, :1] * centred[:, 1:], row_era, n_eras)[:, 0]
    var = era_mean(centred**2, row_era, n_eras)
    return (cov / torch.sqrt(var[:, 0] * var[:, 1] + 1e-12)).mean()


def bias_corrected_ema(decay: float) -> Any:
    """An `AveragedModel` update: the exponential moving average of the weights over the steps
    seen so far, bias-corrected as Adam corrects its moments, so that the first steps' weights (or
    a fine-tune's starting weights) do not dominate the average of a short run."""

    def update(averaged: Sequence[torch.Tensor], current: Sequence[torch.Tensor], n_averaged: torch.Tensor) -> None:
        weight = (1 - decay) / (1 - decay ** (float(n_averaged) + 1))
        for a, c in zip(averaged, current, strict=False):
            a.lerp_(c, weight)

    return update


def lr_factor(step: int, warmup_steps: int, total_steps: int, floor: float = 0.05) -> float:
    """Multiplier of the learning rate at optimizer step `step`: linear warmup, then cosine to `floor`."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@dataclass
class EraBatches:
    """Whole eras of an EraFrame as row slices; rows are never copied until a batch is built."""

    features: np.ndarray
    slices: list[slice]
    eras: list[str]
    main: np.ndarray
    aux: np.ndarray

    @classmethod
    def from_frame(cls, frame: EraFrame, eras: Sequence[str], target: str, aux_targets: Sequence[str]) -> "EraBatches":
        by_era = frame.era_slices()
        eras = [e for e in eras if e in by_era]
        return cls(
            features=frame.features,
            slices=[by_era[e] for e in eras],
            eras=eras,
            main=frame.targets[target].to_numpy(dtype=np.float32),
            aux=frame.targets[list(aux_targets)].to_numpy(dtype=np.float32).reshape(len(frame), len(aux_targets)),
        )

    def batch(self, positions: Sequence[int], device: torch.device) -> dict[str, Any]:
        """Features, targets and per-row era numbers of the eras at `positions`."""
        picked = [self.slices[p] for p in positions]
        sizes = [s.stop - s.start for s in picked]

        def gather(values: np.ndarray) -> torch.Tensor:
            return torch.from_numpy(np.concatenate([values[s] for s in picked])).to(device)

        x = scale_features(gather(self.features))
        # A matrix on disk (--spill-dir) is streamed: only the batch's eras are resident.
        release_pages(self.features)
        return {
            "x": x,
            "main": gather(self.main),
            "aux": gather(self.aux),
            "row_era": torch.repeat_interleave(torch.arange(len(picked)), torch.tensor(sizes)).to(device),
            "n_eras": len(picked),
            "eras": np.repeat(np.asarray([self.eras[p] for p in positions], dtype=object), sizes),
        }


@contextlib.contextmanager
def torch_settings(threads: int, deterministic: bool, device: str) -> Iterator[None]:
    """Thread count and deterministic algorithms for one fit or predict, restored afterwards."""
    old_threads = torch.get_num_threads()
    old_deterministic = torch.are_deterministic_algorithms_enabled()
    if device == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_deterministic)


class Replicas:
    """How one training process shares each optimizer step with others: here, alone.

    `GlooReplicas` gives each rank a disjoint share of a step's eras, averages the gradients over
    ranks and broadcasts the leader's early-stopping decision.
    """

    leader = True

    def share(self, positions: np.ndarray) -> np.ndarray:
        """This process's eras of one step."""
        return positions

    def average_gradients(self, network: nn.Module, rows: int) -> None:
        """Make every process's gradients the row-weighted mean over processes (alone: unchanged)."""

    def agree(self, stop: bool) -> bool:
        """The leader's decision to stop training, known to every process."""
        return stop


class GlooReplicas(Replicas):
    """Replicas over an initialized gloo process group: rank `rank` of `world` takes every
    `world`-th era of a step, gradients are averaged weighted by rows, and rank 0 (the leader)
    decides when to stop. Every rank must start from the same weights."""

    def __init__(self, rank: int, world: int):
        self.rank, self.world, self.leader = rank, world, rank == 0

    def share(self, positions: np.ndarray) -> np.ndarray:
        return positions[self.rank :: self.world]

    def average_gradients(self, network: nn.Module, rows: int) -> None:
        params = [p for p in network.parameters() if p.requires_grad]
        sizes = [p.numel() for p in params]
        flat = torch.cat(
            [p.grad.reshape(-1) * rows if p.grad is not None else torch.zeros(p.numel()) for p in params]
            + [torch.tensor([float(rows)]), torch.tensor([float(p.grad is not None) for p in params])]
        )
        dist.all_reduce(flat)
        total, seen = flat[sum(sizes)], flat[sum(sizes) + 1 :]
        for p, grad, used in zip(params, torch.split(flat[: sum(sizes)] / total, sizes), seen, strict=False):
            # A parameter no rank used keeps no gradient, as in one process (AdamW then skips it).
            p.grad = grad.reshape(p.shape).clone() if used > 0 else None

    def agree(self, stop: bool) -> bool:
        decision = torch.tensor([int(stop)])
        dist.broadcast(decision, src=0)
        return bool(decision.item())


class EraNetEstimator:
    """Shared by TSMixerExt and MLPBaseline: the era-batch training loop, prediction and export.

    Scikit-learn style: `__init__` only stores parameters; `fit` sets attributes ending in `_`.
    """

    kind = ""
    # Attributes chosen from the fit data that the network's shape depends on (saved in a checkpoint).
    fitted_inputs: tuple[str, ...] = ()

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters, so that `type(est)(**est.get_params())` is an unfitted copy."""
        names = [p for p in inspect.signature(type(self).__init__).parameters if p != "self"]
        return {name: getattr(self, name) for name in names}

    def set_params(self, **params: Any) -> "EraNetEstimator":
        valid = self.get_params()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {name!r}; expected one of {sorted(valid)}")
            setattr(self, name, value)
        return self

    def _build_network(self, frame: EraFrame, fit_eras: Sequence[str], n_main: int, n_aux: int) -> nn.Module:
        """The untrained network; `fit_eras` are the only eras a fitted input choice may look at."""
        return self._make_network(frame.features.shape[1], n_main, n_aux)

    def _make_network(self, n_features: int, n_main: int, n_aux: int) -> nn.Module:
        """The untrained network for inputs already chosen (`fitted_inputs`)."""
        raise NotImplementedError

    def _export_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def _check_params(self) -> None:
        if self.head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {self.head!r}")
        if self.device not in DEVICES:
            raise ValueError(f"device must be one of {DEVICES}, got {self.device!r}")
        if self.device == "cuda" and not torch.cuda.is_available():
            raise ValueError("device='cuda' was asked for but torch sees no CUDA device; use device='cpu'")
        for name in ("max_epochs", "patience", "eras_per_batch", "threads"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if not 0 <= self.aux_weight <= 1:
            raise ValueError(f"aux_weight must be in [0, 1], got {self.aux_weight}")
        if self.lr <= 0:
            raise ValueError(f"lr must be positive, got {self.lr}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must be in [0, 1), got {self.ema_decay}")

    def split_eras(self, frame: EraFrame, eras: Sequence[str], embargo: int) -> tuple[list[str], list[str]]:
        """(fit eras, early-stopping eras): the newest eras held out after an embargo counted on the
        frame's own era timeline, so it holds when `eras` is a sample such as every 4th era."""
        eras = sorted(eras)
        timeline = [e for e in frame.era_order if eras[0] <= e <= eras[-1]]
        n_valid = self.n_valid_eras or max(2, len(timeline) // 5)
        splitter = EraWalkForward(n_splits=1, embargo=embargo, validation_eras=n_valid, min_train_eras=1)
        fit_part, valid_part = splitter.era_folds(timeline)[-1]
        fit_set, valid_set = set(fit_part), set(valid_part)
        fit_eras = [e for e in eras if e in fit_set]
        valid_eras = [e for e in eras if e in valid_set]
        if not fit_eras or not valid_eras:
            raise ValueError(
                f"eras {eras[0]}..{eras[-1]} leave no fit or early-stopping era with n_valid_eras={n_valid} "
                f"and an embargo of {embargo}; pass more eras or set n_valid_eras"
            )
        return fit_eras, valid_eras

    def fit(
        self,
        frame: EraFrame,
        eras: Sequence[str] | None = None,
        *,
        target: str = MAIN_TARGET,
        aux_targets: Sequence[str] = (),
        valid_eras: Sequence[str] | None = None,
        processes: int = 1,
    ) -> "EraNetEstimator":
        """Train on whole eras of `frame` (all eras when None), early-stopping on validation CORR.

        Without `valid_eras`, the newest `n_valid_eras` eras of `eras` are held out after an embargo
        (`embargo`, or 8/16 eras from the targets' horizon). Auxiliary targets are outputs only.
        `processes` > 1 trains data-parallel over that many CPU processes (`pipeline.distributed`).
        """
        self._check_params()
        if processes < 1:
            raise ValueError(f"processes must be at least 1, got {processes}")
        if processes > 1 and self.device != "cpu":
            raise ValueError(
                f"training over {processes} processes uses torch.distributed's gloo backend on CPU; set device='cpu'"
            )
        aux_targets = list(aux_targets)
        missing = [t for t in [target, *aux_targets] if t not in frame.targets.columns]
        if missing:
            raise ValueError(f"target(s) {missing} are not in the frame; it has {list(frame.targets.columns)}")
        if target in aux_targets:
            raise ValueError(f"aux_targets must not repeat the main target {target!r}")
        eras = list(frame.era_order if eras is None else eras)
        if not eras:
            raise ValueError("eras is empty; pass at least one era of the frame")
        if valid_eras is None:
            embargo = default_embargo([target, *aux_targets]) if self.embargo is None else self.embargo
            fit_eras, valid_eras = self.split_eras(frame, eras, embargo)
        else:
            fit_eras, valid_eras = [e for e in eras if e not in set(valid_eras)], list(valid_eras)
        device = torch.device(self.device)
        train_data = EraBatches.from_frame(frame, fit_eras, target, aux_targets)
        valid_data = EraBatches.from_frame(frame, valid_eras, target, aux_targets)
        if not train_data.eras or not valid_data.eras:
            raise ValueError("no rows to fit or to early-stop on: the given eras are not in the frame")
        with torch_settings(self.threads, True, self.device):
            torch.manual_seed(self.seed)
            network = self._build_network(frame, fit_eras, 5 if self.head == "ce" else 1, len(aux_targets)).to(device)
            self.network_ = network
            self.feature_names_ = list(frame.feature_names)
            self.target_ = target
            self.aux_targets_ = aux_targets
            self.fit_eras_, self.valid_eras_ = fit_eras, list(valid_data.eras)
            if processes > 1:
                from pipeline.distributed import train_data_parallel

                train_data_parallel(self, train_data, valid_data, processes)
            else:
                self._train(network, train_data, valid_data, device)
        return self

    def _loss(self, main: torch.Tensor, aux: torch.Tensor, batch: dict[str, Any]) -> torch.Tensor:
        y = batch["main"]
        known = ~torch.isnan(y)
        y0 = torch.nan_to_num(y, nan=0.5)
        if self.head == "ce":
            classes = torch.clamp(torch.round(y0 * 4), 0, 4).long()
            per_row = F.cross_entropy(main, classes, reduction="none")
        else:
            per_row = (REGRESSION_SCALE * (main[:, 0] - y0)) ** 2
        loss = (per_row * known).sum() / known.sum().clamp(min=1)
        if aux.shape[1] > 0 and self.aux_loss_weight > 0:
            labelled = ~torch.isnan(batch["aux"])
            sq = (REGRESSION_SCALE * (aux - torch.nan_to_num(batch["aux"]))) ** 2
            loss = loss + self.aux_loss_weight * (sq * labelled).sum() / labelled.sum().clamp(min=1)
        if self.corr_weight > 0:
            pred = expected_value(main, self.head)
            loss = loss - self.corr_weight * era_corr(pred[known], y[known], batch["row_era"][known], batch["n_eras"])
        return loss

    def _train(
        self,
        network: nn.Module,
        train_data: EraBatches,
        valid_data: EraBatches | None,
        device: torch.device,
        replicas: Replicas | None = None,
        lr: float | None = None,
        max_epochs: int | None = None,
    ) -> None:
        """AdamW over eras shuffled by a seeded Generator, with a linear warmup over the first epoch
        (Adam's early steps on one noisy era are otherwise large) then a per-step cosine decay to 5 %
        of `lr` at `max_epochs`; keeps the best epoch. With `ema_decay` > 0 the weights scored and
        kept are the moving average of each step's weights (`torch.optim.swa_utils.AveragedModel`):
        on Numerai's noisy targets one step's weights carry the last few eras' noise. `replicas`
        shares each step's eras between processes (default: this process alone); only the leader
        scores and decides when to stop.
        Without `valid_data` every epoch runs and the last one is kept (fine-tuning on a few eras,
        where none can be spared to early-stop on); `lr` and `max_epochs` override the estimator's."""
        from tqdm.auto import tqdm

        replicas = replicas or Replicas()
        lr, max_epochs = lr or self.lr, max_epochs or self.max_epochs
        rng = np.random.default_rng(self.seed)
        optimizer = torch.optim.AdamW(network.parameters(), lr=lr, weight_decay=self.weight_decay)
        steps_per_epoch = math.ceil(len(train_data.eras) / self.eras_per_batch)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: lr_factor(step, steps_per_epoch, steps_per_epoch * max_epochs)
        )
        averaged = (
            AveragedModel(network, multi_avg_fn=bias_corrected_ema(self.ema_decay)) if self.ema_decay > 0 else None
        )
        kept = averaged.module if averaged is not None else network
        best_corr, best_state, best_epoch, history = -np.inf, None, 0, []
        bar = tqdm(
            range(1, max_epochs + 1),
            desc=type(self).__name__,
            unit="epoch",
            disable=not self.progress or not replicas.leader,
            leave=False,
        )
        for epoch in bar:
            network.train()
            order = rng.permutation(len(train_data.eras))
            losses = []
            for start in range(0, len(order), self.eras_per_batch):
                positions = replicas.share(order[start : start + self.eras_per_batch])
                optimizer.zero_grad(set_to_none=True)
                rows = 0
                if len(positions):
                    batch = train_data.batch(positions, device)
                    main, aux = network(batch["x"], batch["row_era"], batch["n_eras"])
                    loss = self._loss(main, aux, batch)
                    loss.backward()
                    losses.append(float(loss.detach()))
                    rows = len(batch["main"])
                replicas.average_gradients(network, rows)
                optimizer.step()
                scheduler.step()
                if averaged is not None:
                    averaged.update_parameters(network)
            stop = False
            if valid_data is None:
                history.append({"epoch": epoch, "train_loss": float(np.mean(losses))})
                best_epoch = epoch
            elif replicas.leader:
                per_era = self._score(kept, valid_data, device)
                corr = float(per_era.mean())
                history.append(
                    {
                        "epoch": epoch,
                        "train_loss": float(np.mean(losses)),
                        "valid_corr": corr,
                        "valid_sharpe": summarize(per_era)["sharpe"],
                    }
                )
                bar.set_postfix(loss=f"{history[-1]['train_loss']:.4f}", val_corr=f"{corr:.4f}")
                if corr > best_corr:
                    best_corr, best_epoch, best_state = corr, epoch, copy.deepcopy(kept.state_dict())
                else:
                    stop = epoch - best_epoch >= self.patience
            if replicas.agree(stop):
                break
        bar.close()
        if valid_data is None:
            best_state = kept.state_dict()
        if replicas.leader and best_state is not None:
            network.load_state_dict(best_state)
        network.eval()
        self.best_epoch_ = best_epoch
        self.best_valid_corr_ = best_corr
        self.history_ = pd.DataFrame(history)

    def _predict_batches(self, network: nn.Module, data: EraBatches, device: torch.device) -> np.ndarray:
        network.eval()
        out = []
        with torch.no_grad():
            for start in range(0, len(data.eras), self.eras_per_batch):
                batch = data.batch(range(start, min(start + self.eras_per_batch, len(data.eras))), device)
                main, aux = network(batch["x"], batch["row_era"], batch["n_eras"])
                out.append(blend_prediction(main, aux, self.head, self.aux_weight).cpu().numpy())
        return np.concatenate(out)

    def _score(self, network: nn.Module, data: EraBatches, device: torch.device) -> pd.Series:
        pred = self._predict_batches(network, data, device)
        rows = np.concatenate([np.arange(s.start, s.stop) for s in data.slices])
        eras = np.repeat(np.asarray(data.eras, dtype=object), [s.stop - s.start for s in data.slices])
        return per_era_corr(pred, data.main[rows], eras)

    def _check_fitted(self) -> None:
        if not hasattr(self, "network_"):
            raise ValueError(f"this {type(self).__name__} is not fitted yet; call fit first")

    def predict(self, features: np.ndarray, eras: np.ndarray | None = None) -> np.ndarray:
        """Predictions for int8 (or 0..4 float) feature rows; `eras` groups rows for the era
        context (None: all rows are one era, as in a live file)."""
        self._check_fitted()
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != len(self.feature_names_):
            raise ValueError(f"features must be [rows, {len(self.feature_names_)}], got shape {features.shape}")
        eras = np.zeros(len(features), dtype=np.int64) if eras is None else np.asarray(eras)
        if len(eras) != len(features):
            raise ValueError(f"eras has {len(eras)} entries for {len(features)} feature rows")
        uniques, inverse = np.unique(eras, return_inverse=True)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(uniques) + 1))
        data = EraBatches(
            features=features[order],
            slices=[slice(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=False)],
            eras=[str(u) for u in uniques],
            main=np.zeros(len(features), dtype=np.float32),
            aux=np.zeros((len(features), 0), dtype=np.float32),
        )
        with torch_settings(self.threads, True, self.device):
            pred = self._predict_batches(self.network_, data, next(self.network_.parameters()).device)
        out = np.empty(len(features), dtype=np.float32)
        out[order] = pred
        return out

    def export(self, name: str | None = None, weight: float = 1.0) -> dict[str, Any]:
        """A plain member dict for `pipeline.runtime`: float32 arrays and a config of plain Python."""
        self._check_fitted()
        arrays = {
            key: value.detach().cpu().numpy().astype(np.float32)
            for key, value in self.network_.state_dict().items()
            if key != "index"
        }
        config = {
            "head": self.head,
            "classes": list(CLASS_VALUES),
            "aux_weight": float(self.aux_weight),
            "n_aux": len(self.aux_targets_),
            "target": self.target_,
            "aux_targets": list(self.aux_targets_),
            "feature_names": list(self.feature_names_),
            "norm_eps": NORM_EPS,
            "context_eps": CONTEXT_EPS,
        } | self._export_config()
        return {
            "name": name or self.kind,
            "kind": self.kind,
            "weight": float(weight),
            "arrays": arrays,
            "config": config,
        }

    def checkpoint(self) -> dict[str, Any]:
        """Everything needed to rebuild the fitted network in torch and train it further (`torch.save`
        it; `from_checkpoint` reads it back): parameters, fitted inputs and the state_dict."""
        self._check_fitted()
        return {
            "kind": self.kind,
            "params": self.get_params(),
            "feature_names": list(self.feature_names_),
            "target": self.target_,
            "aux_targets": list(self.aux_targets_),
            "inputs": {name: getattr(self, name) for name in self.fitted_inputs},
            "state_dict": {key: value.detach().cpu() for key, value in self.network_.state_dict().items()},
        }

    @classmethod
    def from_checkpoint(cls, checkpoint: Mapping[str, Any]) -> "EraNetEstimator":
        """The fitted estimator a `checkpoint()` was taken of, ready to predict or to `fine_tune`."""
        if checkpoint["kind"] != cls.kind:
            raise ValueError(f"a {checkpoint['kind']!r} checkpoint cannot restore a {cls.kind!r} estimator")
        estimator = cls(**checkpoint["params"])
        estimator.feature_names_ = list(checkpoint["feature_names"])
        estimator.target_ = checkpoint["target"]
        estimator.aux_targets_ = list(checkpoint["aux_targets"])
        for name, value in checkpoint["inputs"].items():
            setattr(estimator, name, value)
        n_main = 5 if estimator.head == "ce" else 1
        network = estimator._make_network(len(estimator.feature_names_), n_main, len(estimator.aux_targets_))
        network.load_state_dict(checkpoint["state_dict"])
        estimator.network_ = network.to(torch.device(estimator.device)).eval()
        return estimator

    def fine_tune(self, frame: EraFrame, eras: Sequence[str], epochs: int, lr: float) -> "EraNetEstimator":
        """Train the fitted network further on whole `eras` of `frame`, from its current weights, for
        `epochs` epochs at learning rate `lr` (warmup and cosine decay as in `fit`), keeping the last
        epoch: a refresh's few new eras leave none to early-stop on."""
        self._check_fitted()
        if epochs < 1 or lr <= 0:
            raise ValueError(f"fine-tuning needs epochs >= 1 and lr > 0, got {epochs} and {lr}")
        train_data = EraBatches.from_frame(frame, eras, self.target_, self.aux_targets_)
        if not train_data.eras:
            raise ValueError("no rows to fine-tune on: the given eras are not in the frame")
        with torch_settings(self.threads, True, self.device):
            torch.manual_seed(self.seed)
            self._train(
                self.network_, train_data, None, next(self.network_.parameters()).device, lr=lr, max_epochs=epochs
            )
        return self


class TSMixerExt(EraNetEstimator):
    """TSMixer-Ext on feature-group tokens with an era context (the current era's token statistics).

    Tokens: with `cluster_tokens`, each named group's features clustered by their correlation on
    the fit eras into tokens of about `token_size` features (at most twice that); otherwise
    contiguous chunks of at most `token_size` features of each group. `bin_embedding` adds a learned
    vector per (feature, bin) to each token, on top of the linear projection of the scaled features.
    """

    kind = "tsmixer"
    fitted_inputs = ("tokens_",)

    def __init__(
        self,
        d: int = 32,
        n_block: int = 2,
        ff: int = 64,
        context_dim: int = 8,
        era_context: bool = True,
        bin_embedding: bool = False,
        token_size: int = 10,
        cluster_tokens: bool = True,
        feature_sets: Mapping[str, Sequence[str]] | None = None,
        dropout: float = 0.0,
        head: str = "ce",
        aux_loss_weight: float = 1.0,
        corr_weight: float = 0.0,
        aux_weight: float = 0.0,
        lr: float = 2e-2,
        weight_decay: float = 1e-4,
        ema_decay: float = 0.0,
        max_epochs: int = 30,
        patience: int = 5,
        eras_per_batch: int = 1,
        n_valid_eras: int | None = None,
        embargo: int | None = None,
        seed: int = 0,
        threads: int = 1,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.d = d
        self.n_block = n_block
        self.ff = ff
        self.context_dim = context_dim
        self.era_context = era_context
        self.bin_embedding = bin_embedding
        self.token_size = token_size
        self.cluster_tokens = cluster_tokens
        self.feature_sets = feature_sets
        self.dropout = dropout
        self.head = head
        self.aux_loss_weight = aux_loss_weight
        self.corr_weight = corr_weight
        self.aux_weight = aux_weight
        self.lr = lr
        self.weight_decay = weight_decay
        self.ema_decay = ema_decay
        self.max_epochs = max_epochs
        self.patience = patience
        self.eras_per_batch = eras_per_batch
        self.n_valid_eras = n_valid_eras
        self.embargo = embargo
        self.seed = seed
        self.threads = threads
        self.device = device
        self.progress = progress

    def _build_network(self, frame: EraFrame, fit_eras: Sequence[str], n_main: int, n_aux: int) -> nn.Module:
        for name in ("d", "n_block", "ff", "context_dim", "token_size"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        n_features = frame.features.shape[1]
        if self.cluster_tokens:
            groups = token_groups(frame.feature_names, self.feature_sets, n_features)
            rows = frame.select_eras(fit_eras)
            rows = rows[:: math.ceil(len(rows) / CLUSTER_ROWS)]
            self.tokens_ = cluster_tokens(frame.features[rows], groups, self.token_size)
            release_pages(frame.features)
        else:
            self.tokens_ = token_groups(frame.feature_names, self.feature_sets, self.token_size)
        return self._make_network(n_features, n_main, n_aux)

    def _make_network(self, n_features: int, n_main: int, n_aux: int) -> nn.Module:
        index = token_index(self.tokens_, n_features)
        return TSMixerNet(
            index,
            n_features,
            self.d,
            self.n_block,
            self.ff,
            self.context_dim,
            self.era_context,
            self.bin_embedding,
            self.dropout,
            n_main,
            n_aux,
        )

    def _export_config(self) -> dict[str, Any]:
        return {
            "architecture": "tsmixer",
            "tokens": [list(map(int, t)) for t in self.tokens_],
            "n_block": int(self.n_block),
            "era_context": bool(self.era_context),
            "bin_embedding": bool(self.bin_embedding),
        }


class MLPBaseline(EraNetEstimator):
    """A plain multi-target MLP on all features: the baseline TSMixer-Ext has to beat.

    `one_hot` feeds the 5-bin one-hot of each feature instead of its scaled value, so that the
    MLP gets the same per-bin input freedom as TSMixer-Ext's bin embeddings (a fairer ablation).
    """

    kind = "mlp"

    def __init__(
        self,
        hidden: Sequence[int] = (64, 64),
        one_hot: bool = False,
        dropout: float = 0.1,
        head: str = "ce",
        aux_loss_weight: float = 1.0,
        corr_weight: float = 0.0,
        aux_weight: float = 0.0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        ema_decay: float = 0.0,
        max_epochs: int = 30,
        patience: int = 5,
        eras_per_batch: int = 1,
        n_valid_eras: int | None = None,
        embargo: int | None = None,
        seed: int = 0,
        threads: int = 1,
        device: str = "cpu",
        progress: bool = True,
    ):
        self.hidden = hidden
        self.one_hot = one_hot
        self.dropout = dropout
        self.head = head
        self.aux_loss_weight = aux_loss_weight
        self.corr_weight = corr_weight
        self.aux_weight = aux_weight
        self.lr = lr
        self.weight_decay = weight_decay
        self.ema_decay = ema_decay
        self.max_epochs = max_epochs
        self.patience = patience
        self.eras_per_batch = eras_per_batch
        self.n_valid_eras = n_valid_eras
        self.embargo = embargo
        self.seed = seed
        self.threads = threads
        self.device = device
        self.progress = progress

    def _make_network(self, n_features: int, n_main: int, n_aux: int) -> nn.Module:
        hidden = [int(h) for h in self.hidden]
        if not hidden or min(hidden) < 1:
            raise ValueError(f"hidden must list at least one positive layer width, got {self.hidden}")
        return MLPNet(n_features, hidden, self.dropout, self.one_hot, n_main, n_aux)

    def _export_config(self) -> dict[str, Any]:
        return {"architecture": "mlp", "n_layers": len(self.hidden), "one_hot": bool(self.one_hot)}


def n_parameters(estimator: EraNetEstimator) -> int:
    """Trainable parameters of a fitted estimator (for comparing model sizes); the padding slots of
    TSMixer's token embeddings are not counted, as they stay zero."""
    estimator._check_fitted()
    network = estimator.network_
    total = sum(p.numel() for p in network.parameters())
    if isinstance(network, TSMixerNet):
        padded = int((network.index >= network.n_features).sum())
        total -= padded * network.embed_w.shape[-1] * (1 + (N_BINS if network.bin_w is not None else 0))
    return int(total)


DEFAULT_SPACE: dict[str, list[Any]] = {
    "n_block": [1, 2, 3],
    "d": [16, 32, 48],
    "ff": [32, 64, 128],
    "dropout": [0.0, 0.1, 0.2],
    "lr": [3e-3, 1e-2, 2e-2],
    "era_context": [True, False],
    "head": ["ce", "regression"],
}


def search(
    frame: EraFrame,
    *,
    space: Mapping[str, Sequence[Any]] | None = None,
    base_params: Mapping[str, Any] | None = None,
    estimator: type[EraNetEstimator] = TSMixerExt,
    n_trials: int = 8,
    budget_s: float | None = None,
    n_splits: int = 2,
    fold_eras: int | None = None,
    eras: Sequence[str] | None = None,
    target: str = MAIN_TARGET,
    aux_targets: Sequence[str] = (),
    embargo: int | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Random search (`pipeline.tuning.random_search`) over `space` within `n_trials` and `budget_s`
    seconds, scored by walk-forward CV on `eras` (default: all of the frame's).

    Each trial trains one model per EraWalkForward fold of `fold_eras` scored eras (default:
    len(eras) // (2 * n_splits + 2)), early-stopping inside the fold's training eras, and scores the
    fold's eras; the table holds the CV CORR mean and Sharpe over all scored eras, best first.
    `DEFAULT_SPACE` is the issue's list: blocks, width, feed-forward width, dropout, learning rate,
    era context and head (the token layout was settled by bench.tsmixer's ablations).
    """
    space = dict(DEFAULT_SPACE if space is None else space)
    valid = estimator().get_params()
    unknown = [k for k in [*space, *(base_params or {})] if k not in valid]
    if unknown:
        raise ValueError(f"unknown {estimator.__name__} parameter(s) {unknown} in space or base_params")
    eras = sorted(frame.era_order if eras is None else eras)
    embargo = default_embargo([target, *aux_targets]) if embargo is None else embargo
    fold_eras = fold_eras or max(1, len(eras) // (2 * n_splits + 2))
    folds = EraWalkForward(n_splits, embargo, validation_eras=fold_eras, min_train_eras=1).era_folds(eras)
    y = frame.targets[target].to_numpy()

    def evaluate(settings: dict[str, Any]) -> tuple[pd.Series, dict[str, Any]]:
        scores, epochs = [], []
        for fit_eras, val_eras in folds:
            model = estimator(**dict(base_params or {}) | settings).fit(
                frame, list(fit_eras), target=target, aux_targets=aux_targets
            )
            rows = frame.select_eras(val_eras)
            scores.append(
                per_era_corr(model.predict(frame.features[rows], frame.eras[rows]), y[rows], frame.eras[rows])
            )
            epochs.append(model.best_epoch_)
        return pd.concat(scores), {"best_epochs": epochs}

    return random_search(evaluate, space, n_trials, budget_s, seed)
