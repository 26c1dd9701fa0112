"""The training side of the neural members: batches of whole eras, the loss, the loop, the weight
average and the replicas that share a step between processes.

One loop trains TSMixer-Ext and the MLP baseline alike (`train`): AdamW over whole eras, early
stopping on the validation per-era CORR, the moving average of the weights scored and kept.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import AveragedModel
from tqdm.auto import tqdm

from pipeline.data import EraFrame, release_pages
from pipeline.metrics import per_era_corr, summarize
from pipeline.models.networks import blend_prediction, era_mean, expected_value, scale_features

# Regression losses are taken on 4 * (prediction - target) so that they are of the order of the
# 5-class cross-entropy (the target's standard deviation is about 0.22).
REGRESSION_SCALE = 4.0


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


@dataclass(frozen=True)
class TrainSettings:
    """The estimator parameters that the loop, the loss and prediction read
    (`EraNetEstimator.train_settings`); plain values, so that they travel to spawned processes."""

    name: str
    head: str
    lr: float
    weight_decay: float
    ema_decay: float
    max_epochs: int
    patience: int
    eras_per_batch: int
    aux_loss_weight: float
    corr_weight: float
    aux_weight: float
    seed: int
    progress: bool


@dataclass
class TrainResult:
    """What a run found: the epoch kept, its validation CORR (-inf when nothing was validated) and
    one history row per epoch run."""

    best_epoch: int
    best_valid_corr: float
    history: pd.DataFrame


def era_loss(main: torch.Tensor, aux: torch.Tensor, batch: dict[str, Any], settings: TrainSettings) -> torch.Tensor:
    """Cross-entropy on the main target's 5 classes (or scaled squared error), plus the masked
    squared error of the auxiliary heads, minus `corr_weight` times the batch's mean era CORR.
    Rows and labels that are NaN contribute nothing."""
    y = batch["main"]
    known = ~torch.isnan(y)
    y0 = torch.nan_to_num(y, nan=0.5)
    if settings.head == "ce":
        classes = torch.clamp(torch.round(y0 * 4), 0, 4).long()
        per_row = F.cross_entropy(main, classes, reduction="none")
    else:
        per_row = (REGRESSION_SCALE * (main[:, 0] - y0)) ** 2
    loss = (per_row * known).sum() / known.sum().clamp(min=1)
    if aux.shape[1] > 0 and settings.aux_loss_weight > 0:
        labelled = ~torch.isnan(batch["aux"])
        sq = (REGRESSION_SCALE * (aux - torch.nan_to_num(batch["aux"]))) ** 2
        loss = loss + settings.aux_loss_weight * (sq * labelled).sum() / labelled.sum().clamp(min=1)
    if settings.corr_weight > 0:
        pred = expected_value(main, settings.head)
        loss = loss - settings.corr_weight * era_corr(pred[known], y[known], batch["row_era"][known], batch["n_eras"])
    return loss


def predict_batches(network: nn.Module, data: EraBatches, device: torch.device, settings: TrainSettings) -> np.ndarray:
    """The network's predictions for every era of `data`, `eras_per_batch` eras at a time (the era
    context sees each era whole), in the order of `data`'s eras."""
    network.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(data.eras), settings.eras_per_batch):
            batch = data.batch(range(start, min(start + settings.eras_per_batch, len(data.eras))), device)
            main, aux = network(batch["x"], batch["row_era"], batch["n_eras"])
            out.append(blend_prediction(main, aux, settings.head, settings.aux_weight).cpu().numpy())
    return np.concatenate(out)


def score_batches(network: nn.Module, data: EraBatches, device: torch.device, settings: TrainSettings) -> pd.Series:
    """Per-era CORR of the network's predictions with `data`'s main target."""
    pred = predict_batches(network, data, device, settings)
    rows = np.concatenate([np.arange(s.start, s.stop) for s in data.slices])
    eras = np.repeat(np.asarray(data.eras, dtype=object), [s.stop - s.start for s in data.slices])
    return per_era_corr(pred, data.main[rows], eras)


class Optimization:
    """AdamW with a linear warmup over the first epoch (Adam's early steps on one noisy era are
    otherwise large), then a per-step cosine decay to 5 % of `lr` at `max_epochs`; with `ema_decay`
    > 0, the bias-corrected moving average of each step's weights, which is what is scored and kept."""

    def __init__(self, network: nn.Module, settings: TrainSettings, steps_per_epoch: int):
        self.optimizer = torch.optim.AdamW(network.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
        total_steps = steps_per_epoch * settings.max_epochs
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: lr_factor(step, steps_per_epoch, total_steps)
        )
        self.averaged = (
            AveragedModel(network, multi_avg_fn=bias_corrected_ema(settings.ema_decay))
            if settings.ema_decay > 0
            else None
        )
        self.kept = self.averaged.module if self.averaged is not None else network

    def step(self, network: nn.Module) -> None:
        """One optimizer step on the gradients in `network`, then the schedule and the average."""
        self.optimizer.step()
        self.scheduler.step()
        if self.averaged is not None:
            self.averaged.update_parameters(network)


def train_epoch(
    network: nn.Module,
    data: EraBatches,
    order: np.ndarray,
    device: torch.device,
    settings: TrainSettings,
    optimization: Optimization,
    replicas: Replicas,
) -> list[float]:
    """One pass over `data`'s eras in `order`, a step per `eras_per_batch` of them (this process's
    share under `replicas`); the losses of this process's batches."""
    network.train()
    losses = []
    for start in range(0, len(order), settings.eras_per_batch):
        positions = replicas.share(order[start : start + settings.eras_per_batch])
        optimization.optimizer.zero_grad(set_to_none=True)
        rows = 0
        if len(positions):
            batch = data.batch(positions, device)
            main, aux = network(batch["x"], batch["row_era"], batch["n_eras"])
            loss = era_loss(main, aux, batch, settings)
            loss.backward()
            losses.append(float(loss.detach()))
            rows = len(batch["main"])
        replicas.average_gradients(network, rows)
        optimization.step(network)
    return losses


@dataclass
class EarlyStopping:
    """The epoch with the best validation per-era CORR so far, a copy of its weights, and the history."""

    patience: int
    best_corr: float = -np.inf
    best_epoch: int = 0
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)

    def record(self, epoch: int, losses: list[float], per_era: pd.Series, kept: nn.Module) -> bool:
        """Note an epoch's validation scores (`kept`: the weights scored); whether to stop now."""
        corr = float(per_era.mean())
        self.history.append(
            {
                "epoch": epoch,
                "train_loss": float(np.mean(losses)),
                "valid_corr": corr,
                "valid_sharpe": summarize(per_era)["sharpe"],
            }
        )
        if corr > self.best_corr:
            self.best_corr, self.best_epoch, self.best_state = corr, epoch, copy.deepcopy(kept.state_dict())
            return False
        return epoch - self.best_epoch >= self.patience

    def record_unvalidated(self, epoch: int, losses: list[float]) -> None:
        """Note an epoch run without validation eras: the latest one is the one kept."""
        self.history.append({"epoch": epoch, "train_loss": float(np.mean(losses))})
        self.best_epoch = epoch


def train(
    network: nn.Module,
    settings: TrainSettings,
    train_data: EraBatches,
    valid_data: EraBatches | None,
    device: torch.device,
    replicas: Replicas | None = None,
) -> TrainResult:
    """Train `network` in place: AdamW over eras shuffled by a Generator seeded with `seed`, the
    schedule and weight average of `Optimization`, keeping the best epoch on `valid_data`'s per-era
    CORR and stopping after `patience` epochs without a better one. The weight average is what is
    scored and kept: on Numerai's noisy targets one step's weights carry the last few eras' noise.
    `replicas` shares each step's eras between processes (default: this process alone); only the
    leader scores and decides when to stop. Without `valid_data` every epoch runs and the last one
    is kept (fine-tuning on a few eras, where none can be spared to early-stop on)."""
    replicas = replicas or Replicas()
    rng = np.random.default_rng(settings.seed)
    optimization = Optimization(network, settings, math.ceil(len(train_data.eras) / settings.eras_per_batch))
    stopping = EarlyStopping(settings.patience)
    bar = tqdm(
        range(1, settings.max_epochs + 1),
        desc=settings.name,
        unit="epoch",
        disable=not settings.progress or not replicas.leader,
        leave=False,
    )
    for epoch in bar:
        order = rng.permutation(len(train_data.eras))
        losses = train_epoch(network, train_data, order, device, settings, optimization, replicas)
        stop = False
        if valid_data is None:
            stopping.record_unvalidated(epoch, losses)
        elif replicas.leader:
            per_era = score_batches(optimization.kept, valid_data, device, settings)
            stop = stopping.record(epoch, losses, per_era, optimization.kept)
            row = stopping.history[-1]
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", val_corr=f"{row['valid_corr']:.4f}")
        if replicas.agree(stop):
            break
    bar.close()
    if valid_data is None:
        stopping.best_state = optimization.kept.state_dict()
    if replicas.leader and stopping.best_state is not None:
        network.load_state_dict(stopping.best_state)
    network.eval()
    return TrainResult(stopping.best_epoch, stopping.best_corr, pd.DataFrame(stopping.history))
