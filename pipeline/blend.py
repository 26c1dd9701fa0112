"""Blend weights and neutralization, both chosen on out-of-fold per-era CORR.

The blend is a weighted average of per-era ranks, the same arithmetic the pickle runs
(`pipeline.runtime.ensemble_scores`), so the CV scores
exactly what ships.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.metrics import per_era_corr, per_era_corr_columns, summarize
from pipeline.runtime import ensemble_scores, feature_projection, rank_within_groups

NEUTRALIZATION_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
# A proportion may cost at most this share of the best mean CORR for a better Sharpe.
MEAN_TOLERANCE = 0.02


def simplex_grid(n: int, steps: int) -> np.ndarray:
    """Every weight vector of `n` non-negative multiples of 1/steps that sum to 1."""
    if n == 1:
        return np.ones((1, 1))
    points = [np.array(c) for c in itertools.combinations(range(steps + n - 1), n - 1)]
    grid = [np.diff(np.concatenate([[-1], c, [steps + n - 1]])) - 1 for c in points]
    return np.asarray(grid, dtype=np.float64) / steps


def fit_weights(oof: np.ndarray, target: np.ndarray, eras: np.ndarray, steps: int | None = None) -> np.ndarray:
    """Non-negative weights summing to 1 that maximize the mean per-era CORR of the rank blend.

    Searches a grid on the simplex (all candidates scored in one numerai_corr call per era), so the
    answer is the rank average itself whenever no other mix does better on the CV.
    """
    n = oof.shape[1]
    steps = steps or (10 if n <= 4 else 5)
    grid = simplex_grid(n, steps)
    equal = np.full(n, 1.0 / n)
    candidates = np.vstack([equal, grid])
    ranks = np.column_stack([rank_within_groups(column, eras) for column in np.asarray(oof, dtype=np.float64).T])
    means = per_era_corr_columns(ranks @ candidates.T, target, eras).mean().to_numpy()
    return candidates[int(np.argmax(means))]


def cross_fold_blend(
    oof: np.ndarray,
    target: np.ndarray,
    eras: np.ndarray,
    fold_eras: Sequence[np.ndarray],
    features: np.ndarray | None = None,
    proportion: float = 0.0,
) -> tuple[pd.Series, list[np.ndarray]]:
    """Honest CV of the blend: each fold is scored with weights fitted on the other folds only,
    then neutralized by `proportion` against `features` (rows aligned with `oof`) as the pickle is."""
    per_era, fold_weights = [], []
    for held_out in fold_eras:
        inside = np.isin(eras, held_out)
        weights = fit_weights(oof[~inside], target[~inside], eras[~inside])
        fold_weights.append(weights)
        features_inside = None if features is None else features[inside]
        blended = ensemble_scores(oof[inside], weights, features_inside, eras[inside], proportion)
        per_era.append(per_era_corr(blended, target[inside], eras[inside]))
    return pd.concat(per_era).sort_index(), fold_weights


def choose_neutralization(
    blended: np.ndarray, features: np.ndarray, target: np.ndarray, eras: np.ndarray, grid: Sequence[float] = NEUTRALIZATION_GRID
) -> tuple[float, pd.DataFrame]:
    """Neutralization proportion for the blend: the best Sharpe among proportions whose mean CORR
    is within `MEAN_TOLERANCE` of the best mean (Numerai pays on CORR, so Sharpe only breaks
    near-ties); returns it and the table of every proportion's figures."""
    ranks, projection = feature_projection(blended, features, eras)
    neutral = np.column_stack([ranks - p * projection for p in grid])
    per_era = per_era_corr_columns(neutral, target, eras)
    table = pd.DataFrame({p: summarize(per_era[k]) for k, p in enumerate(grid)}).T.rename_axis("proportion")
    good = table[table["mean"] >= table["mean"].max() - MEAN_TOLERANCE * abs(table["mean"].max())]
    return float(good["sharpe"].idxmax()), table
