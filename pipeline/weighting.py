"""How a fit weighs its training eras: more weight on recent eras, only the newest ones, or more on
the eras it fits worst.

Numerai's signal drifts and changes sign over blocks of eras; a model trained on all of history with
equal weights learns its average. Recency weights (a half-life), a rolling window (older eras get
weight 0) and era boosting (`EraBoost`) are settings a LightGBM member's search may take or leave on
the CV (`pipeline.members.lgbm_search`). All are counted in the fit's own eras, so they mean the same in
a CV fold, the holdout and the refit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import lightgbm as lgb
import numpy as np


@dataclass(frozen=True)
class EraWeighting:
    """`half_life`: an era `half_life` x (the fit's eras) older than the newest weighs half as much;
    `window`: only the newest `window` x (the fit's eras) eras weigh (the others 0); `boost`: era
    boosting, the worst half of the eras weighing `boost` times the others, chosen again every
    `boost_every` trees (`EraBoost`; counted in trees, so that a CV fit and a refit with fewer trees
    reweigh at the same trees). None: off."""

    half_life: float | None = None
    window: float | None = None
    boost: float | None = None
    boost_every: int = 50

    def __post_init__(self) -> None:
        for name in ("half_life", "window"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"{name} must be a share of the fit's eras in (0, 1], got {value}")
        if self.boost is not None and not self.boost > 1:
            raise ValueError(f"boost must be a weight above 1 for the worst eras, got {self.boost}")
        if self.boost_every < 1:
            raise ValueError(f"boost_every must be a number of trees of at least 1, got {self.boost_every}")

    @property
    def active(self) -> bool:
        return self.half_life is not None or self.window is not None or self.boost is not None

    def era_weights(self, eras: Sequence[str]) -> np.ndarray:
        """The weight of each of `eras` (sorted), newest last."""
        n = len(eras)
        age = np.arange(n - 1, -1, -1, dtype=np.float64)
        weights = np.ones(n)
        if self.half_life is not None:
            weights *= 0.5 ** (age / max(1.0, self.half_life * n))
        if self.window is not None:
            weights[age >= max(1, round(self.window * n))] = 0.0
        return weights

    def for_eras(self, eras: Sequence[str]) -> Callable[[np.ndarray], np.ndarray] | None:
        """A map from each row's era to its fixed weight in a fit on `eras` (era boosting's weights follow
        the fit: `EraBoost`); None when nothing is weighted."""
        if self.half_life is None and self.window is None:
            return None
        order = np.unique(np.asarray(eras, dtype=object))
        weights = self.era_weights(order)

        def weigh(row_eras: np.ndarray) -> np.ndarray:
            return weights[np.searchsorted(order, np.asarray(row_eras, dtype=object))]

        return weigh

    def describe(self) -> dict[str, float | None]:
        boost = {"boost": self.boost, "boost_every": self.boost_every} if self.boost is not None else {}
        return {"half_life": self.half_life, "window": self.window} | boost


class EraBoost:
    """Era boosting as a LightGBM objective: squared error in which, every `every` trees, the eras where
    the model's in-sample CORR (Pearson, per era) is below the median come to weigh `boost` times the
    others (weights rescaled to a mean of 1, times the rows' own fixed weights). Numerai's era boosting
    adds trees fitted on the worst eras only; as weights inside one training run it trains on the
    build's shared bins, in every runner, at the cost of a few numpy passes over the rows. The target is
    centred on its mean, since a custom objective starts every row at 0; the per-era ranks the pickle
    scores are unchanged by that shift."""

    def __init__(self, boost: float, row_eras: np.ndarray, every: int):
        self.boost = boost
        self.codes = np.unique(np.asarray(row_eras), return_inverse=True)[1]
        self.counts = np.bincount(self.codes).astype(np.float64)
        self.every = every
        self.era_weight = np.ones(len(self.counts))
        self.calls = 0
        # Set by the first call, from the dataset LightGBM trains on: labels, their centred values, the
        # rows' fixed weights (None: unweighted) and the rows' current weights.
        self.labels = self.centred = self.fixed = self.weights = None

    def era_pearson(self, predictions: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Each era's Pearson correlation of predictions with labels (0 where either is constant)."""

        def era_mean(values: np.ndarray) -> np.ndarray:
            return np.bincount(self.codes, weights=values, minlength=len(self.counts)) / self.counts

        p = predictions - era_mean(predictions)[self.codes]
        y = labels - era_mean(labels)[self.codes]
        spread = np.sqrt(era_mean(p * p) * era_mean(y * y))
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.nan_to_num(era_mean(p * y) / spread)

    def __call__(self, predictions: np.ndarray, dataset: lgb.Dataset) -> tuple[np.ndarray, np.ndarray]:
        if self.calls == 0:
            self.labels, self.fixed = dataset.get_label(), dataset.get_weight()
            self.centred = self.labels - np.average(self.labels, weights=self.fixed)
            self.weights = self.row_weights()
        elif self.calls % self.every == 0:
            corr = self.era_pearson(predictions, self.labels)
            weight = np.where(corr < np.median(corr), self.boost, 1.0)
            self.era_weight = weight * self.counts.sum() / (weight * self.counts).sum()
            self.weights = self.row_weights()
        self.calls += 1
        return self.weights * (predictions - self.centred), self.weights

    def row_weights(self) -> np.ndarray:
        """Each row's weight: its era's times its own fixed one."""
        weights = self.era_weight[self.codes]
        return weights if self.fixed is None else weights * self.fixed
