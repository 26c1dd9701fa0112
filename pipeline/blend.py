"""Blend weights and neutralization, both chosen on out-of-fold per-era CORR.

The blend is a weighted average of per-era ranks, the same arithmetic the pickle runs
(`pipeline.runtime.ensemble_scores`), so the CV scores
exactly what ships.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from pipeline.metrics import per_era_corr, per_era_corr_columns, summarize
from pipeline.runtime import ensemble_scores, feature_projection, rank_within_groups

NEUTRALIZATION_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
# A proportion may cost at most this share of the best mean CORR for a better Sharpe.
MEAN_TOLERANCE = 0.02


def fit_weights(oof: np.ndarray, target: np.ndarray, eras: np.ndarray, steps: int = 10) -> np.ndarray:
    """Non-negative weights summing to 1 that maximize the mean per-era CORR of the rank blend:
    greedy ensemble selection with replacement (Caruana et al., 2004).

    Each of `steps` rounds picks once more the member whose extra pick raises the CORR most (the
    members' candidates scored in one numerai_corr call per era); weights are the picks' shares
    after the best round. That is `steps` x
    members candidates, where a grid on the simplex needs C(steps + members - 1, members - 1): 462
    for 7 members at steps of 1/5, 31 s on 110k out-of-fold rows. The rank average (equal weights)
    is kept unless a round beats it.
    """
    n = oof.shape[1]
    ranks = np.column_stack([rank_within_groups(column, eras) for column in np.asarray(oof, dtype=np.float64).T])
    best = np.full(n, 1.0 / n)
    best_mean = per_era_corr(ranks @ best, target, eras).mean()
    counts = np.zeros(n)
    for _ in range(steps if n > 1 else 0):
        candidates = (counts + np.eye(n)) / (counts.sum() + 1)
        means = per_era_corr_columns(ranks @ candidates.T, target, eras).mean().to_numpy()
        pick = int(np.argmax(means))
        counts[pick] += 1
        if means[pick] > best_mean:
            best, best_mean = candidates[pick], means[pick]
    return best


def cross_fold_blend(
    oof: np.ndarray,
    target: np.ndarray,
    eras: np.ndarray,
    fold_eras: Sequence[np.ndarray],
    features: np.ndarray | None = None,
    proportion: float = 0.0,
) -> tuple[pd.Series, list[np.ndarray]]:
    """Honest CV of the blend: each fold is scored with weights fitted on the other folds only,
    then neutralized by `proportion` against `features` (rows aligned with `oof`) as the pickle is.
    A CV of one fold has no other fold to fit on: it is scored with equal weights (the rank average),
    a choice that looked at nothing."""
    per_era, fold_weights = [], []
    for held_out in fold_eras:
        inside = np.isin(eras, held_out)
        if inside.all():
            weights = np.full(oof.shape[1], 1.0 / oof.shape[1])
        else:
            weights = fit_weights(oof[~inside], target[~inside], eras[~inside])
        fold_weights.append(weights)
        features_inside = None if features is None else features[inside]
        blended = ensemble_scores(oof[inside], weights, features_inside, eras[inside], proportion)
        per_era.append(per_era_corr(blended, target[inside], eras[inside]))
    return pd.concat(per_era).sort_index(), fold_weights


def choose_neutralization(
    blended: np.ndarray,
    features: np.ndarray,
    target: np.ndarray,
    eras: np.ndarray,
    grid: Sequence[float] = NEUTRALIZATION_GRID,
) -> tuple[float, pd.DataFrame]:
    """Neutralization proportion for the blend: the best Sharpe among proportions whose mean CORR
    is within `MEAN_TOLERANCE` of the best mean (Numerai pays on CORR, so Sharpe only breaks
    near-ties; a CV of one era has no Sharpe, and the best mean decides); returns it and the table of
    every proportion's figures."""
    ranks, projection = feature_projection(blended, features, eras)
    neutral = np.column_stack([ranks - p * projection for p in grid])
    per_era = per_era_corr_columns(neutral, target, eras)
    table = pd.DataFrame({p: summarize(per_era[k]) for k, p in enumerate(grid)}).T.rename_axis("proportion")
    good = table[table["mean"] >= table["mean"].max() - MEAN_TOLERANCE * abs(table["mean"].max())]
    if good["sharpe"].isna().all():
        return float(good["mean"].idxmax()), table
    return float(good["sharpe"].idxmax()), table
