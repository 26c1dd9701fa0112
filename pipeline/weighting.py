"""How a fit weighs its training eras: more weight on recent eras, or only the newest ones.

Numerai's signal drifts and changes sign over blocks of eras; a model trained on all of history with
equal weights learns its average. Recency weights (a half-life) and a rolling window (older eras get
weight 0) are settings a LightGBM member's search may take or leave on the CV (`pipeline.members.lgbm`).
Both are counted in the fit's own eras, so they mean the same in a CV fold, the holdout and the refit.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class EraWeighting:
    """`half_life`: an era `half_life` x (the fit's eras) older than the newest weighs half as much;
    `window`: only the newest `window` x (the fit's eras) eras weigh (the others 0). None: off."""

    half_life: float | None = None
    window: float | None = None

    def __post_init__(self) -> None:
        for name in ("half_life", "window"):
            value = getattr(self, name)
            if value is not None and not 0 < value <= 1:
                raise ValueError(f"{name} must be a share of the fit's eras in (0, 1], got {value}")

    @property
    def active(self) -> bool:
        return self.half_life is not None or self.window is not None

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
        """A map from each row's era to its weight in a fit on `eras`; None when nothing is weighted."""
        if not self.active:
            return None
        order = np.unique(np.asarray(eras, dtype=object))
        weights = self.era_weights(order)

        def weigh(row_eras: np.ndarray) -> np.ndarray:
            return weights[np.searchsorted(order, np.asarray(row_eras, dtype=object))]

        return weigh

    def describe(self) -> dict[str, float | None]:
        return {"half_life": self.half_life, "window": self.window}
