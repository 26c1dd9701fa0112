"""Per-era scores with Numerai's own functions, and the summaries Numerai reports over eras.

The main target's CORR, FNC and BMC as reported are numerai-tools' own (FNC for all models of an era in
one call). Where a build scores thousands of candidates, dozens of targets or thousands of features
(CV curves over tree counts, blend weights, neutralization grids, the auxiliary targets, the feature
stability table, permutation importance, feature exposure) it uses the same arithmetic in numpy,
tested equal (`era_corr`, `era_contribution`, `max_feature_corr`). This module only groups rows by
era, aligns them, and summarizes the per-era series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
from numerai_tools.scoring import (
    correlation_contribution,
    feature_neutral_corr,
    numerai_corr,
    tie_broken_rank_correlation,
)
from scipy.special import ndtri
from scipy.stats import rankdata


def per_era(
    score: Callable[[pd.DataFrame], float],
    eras: np.ndarray,
    columns: dict[str, np.ndarray],
    required: tuple[str, ...] = ("target",),
) -> pd.Series:
    """Apply `score(frame)` to each era's rows, indexed by era (sorted). Rows where any `required`
    column is NaN are left out of their era, as Numerai scores only labelled rows."""
    frame = pd.DataFrame({k: np.asarray(v, dtype=np.float64) for k, v in columns.items()})
    frame["era"] = np.asarray(eras)
    present = [c for c in required if c in frame]
    if present:
        frame = frame[frame[present].notna().all(axis=1)]
    scores = {era: float(score(group)) for era, group in frame.groupby("era", sort=True)}
    return pd.Series(scores, dtype=np.float64).rename_axis("era")


def labelled_eras(targets: np.ndarray, eras: np.ndarray) -> Iterator[tuple[str, np.ndarray]]:
    """Each era (sorted) with the positions of its rows whose target is known."""
    labelled = ~np.isnan(targets)
    for era in np.unique(eras[labelled]):
        yield era, np.flatnonzero((eras == era) & labelled)


def tools_corr(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """numerai_corr itself of one era's predictions (rows x candidates)."""
    index = pd.RangeIndex(len(targets))
    return numerai_corr(
        pd.DataFrame(predictions, index=index), pd.Series(targets, index=index, name="target")
    ).to_numpy()


def per_era_corr(predictions: np.ndarray, targets: np.ndarray, eras: np.ndarray) -> pd.Series:
    """Numerai CORR (numerai_corr) of predictions against a target in each era."""
    predictions = np.asarray(predictions, dtype=np.float64)[:, None]
    targets = np.asarray(targets, dtype=np.float64)
    scores = {
        era: tools_corr(predictions[rows], targets[rows])[0] for era, rows in labelled_eras(targets, np.asarray(eras))
    }
    return pd.Series(scores, dtype=np.float64).rename_axis("era").rename("corr")


def per_era_corr_columns(predictions: np.ndarray, targets: np.ndarray, eras: np.ndarray) -> pd.DataFrame:
    """numerai_corr of every column of `predictions` (rows x candidates) in each era (eras x candidates),
    for the searches: `era_corr` per era (numerai_corr's arithmetic in numpy, tested equal), all
    candidates at once. An era where a candidate has NaN predictions goes through numerai_corr itself,
    which scores the rows every column has."""
    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    scores = {}
    for era, rows in labelled_eras(targets, np.asarray(eras)):
        score = tools_corr if np.isnan(predictions[rows]).any() else era_corr
        scores[era] = score(predictions[rows], targets[rows])
    return era_table(scores, predictions.shape[1])


def signed_power(x: np.ndarray, p: float = 1.5) -> np.ndarray:
    """numerai_tools.scoring.power: the sign kept."""
    return np.sign(x) * np.abs(x) ** p


def era_corr(predictions: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """numerai_corr of one era's predictions (rows x candidates), in numpy: tie-kept ranks, gaussianized
    and raised to the 1.5 power, Pearson-correlated with the centred target raised to the 1.5 power
    (NaN for a constant column, as numerai_corr gives)."""
    p = signed_power(gaussian_ranks(predictions))
    targets = np.asarray(targets, dtype=np.float64)
    t = signed_power(targets - targets.mean())
    p = p - p.mean(axis=0)
    t = t - t.mean()
    with np.errstate(invalid="ignore", divide="ignore"):
        return (t @ p) / (np.sqrt((p * p).sum(axis=0)) * np.sqrt(t @ t))


def gaussian_ranks(x: np.ndarray) -> np.ndarray:
    """Each column's tie-kept percentile rank, (rank - 0.5) / n, through the normal quantile function:
    numerai_tools' `gaussian(tie_kept_rank(x))`."""
    return ndtri((rankdata(x, method="average", axis=0) - 0.5) / len(x))


def era_contribution(predictions: np.ndarray, benchmark: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """correlation_contribution of one era's predictions (rows x candidates) to `benchmark`, in numpy:
    gaussianized ranks orthogonalized to the benchmark's, dotted with the centred target (in buckets of
    -2..2 when it lies in 0..1), over the rows."""
    p = gaussian_ranks(predictions)
    m = gaussian_ranks(benchmark[:, None])[:, 0]
    neutral = p - np.outer(m, (p.T @ m) / (m @ m))
    target = targets * 4 if ((targets >= 0) & (targets <= 1)).all() else targets
    return (target - target.mean()) @ neutral / len(target)


def per_era_bmc_columns(
    predictions: np.ndarray, targets: np.ndarray, benchmark: np.ndarray, eras: np.ndarray
) -> pd.DataFrame:
    """numerai_tools' correlation_contribution of every column of `predictions` (rows x candidates) to
    `benchmark` in each era (eras x candidates): BMC, or MMC when `benchmark` is the meta model. Rows
    where the target or the benchmark is NaN are left out. The blend's searches score thousands of
    candidates, so each era is `era_contribution`, the same arithmetic in numpy (tested equal)."""
    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    benchmark = np.asarray(benchmark, dtype=np.float64)
    eras = np.asarray(eras)
    known = ~np.isnan(targets) & ~np.isnan(benchmark)
    scores = {}
    for era in np.unique(eras[known]):
        rows = np.flatnonzero((eras == era) & known)
        scores[era] = era_contribution(predictions[rows], benchmark[rows], targets[rows])
    return era_table(scores, predictions.shape[1])


def per_era_fnc_columns(
    predictions: np.ndarray, targets: np.ndarray, eras: np.ndarray, features: np.ndarray
) -> pd.DataFrame:
    """numerai-tools' feature_neutral_corr of every column of `predictions` (rows x models) in each era
    (eras x models), neutralized to all given features. All models of an era go through one call: its
    least squares against the era's features (the costly part at 2,748 features) is fitted once for all
    of them, as numerai_tools' `neutralize` solves every column of its frame together."""
    predictions = np.asarray(predictions, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.float64)
    scores = {}
    for era, rows in labelled_eras(targets, np.asarray(eras)):
        index = pd.RangeIndex(len(rows))
        neutralizers = pd.DataFrame(features[rows].astype(np.float32), index=index)
        frame = pd.DataFrame(predictions[rows], index=index)
        scores[era] = feature_neutral_corr(
            frame, neutralizers, pd.Series(targets[rows], index=index, name="target")
        ).to_numpy()
    return era_table(scores, predictions.shape[1])


def max_feature_corr(predictions: np.ndarray, features: np.ndarray) -> np.ndarray:
    """numerai_tools' max_feature_correlation of one era's predictions (rows x models), in numpy: the
    largest absolute Pearson correlation of each column with any one non-constant feature column."""
    x = features[:, features.std(axis=0) > 0].astype(np.float64)
    x -= x.mean(axis=0)
    p = predictions - predictions.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (x.T @ p) / np.outer(np.sqrt((x * x).sum(axis=0)), np.sqrt((p * p).sum(axis=0)))
    return np.abs(corr).max(axis=0) if len(corr) else np.full(p.shape[1], np.nan)


def per_era_feature_exposure_columns(predictions: np.ndarray, eras: np.ndarray, features: np.ndarray) -> pd.DataFrame:
    """Feature exposure (max_feature_correlation) of every column of `predictions` in each era (eras x
    models), over every row: `max_feature_corr` (its arithmetic in numpy, tested equal), since
    numerai-tools' pandas apply over 2,748 feature columns per era and model dominates a full-size
    build's scoring."""
    predictions = np.asarray(predictions, dtype=np.float64)
    eras = np.asarray(eras)
    scores = {}
    for era in np.unique(eras):
        rows = np.flatnonzero(eras == era)
        scores[era] = max_feature_corr(predictions[rows], features[rows])
    return era_table(scores, predictions.shape[1])


def era_table(scores: dict[str, np.ndarray], columns: int) -> pd.DataFrame:
    """Per-era scores (era -> one value per column) as an eras x columns frame, sorted by era."""
    if not scores:
        return pd.DataFrame(columns=range(columns), dtype=np.float64).rename_axis("era")
    return pd.DataFrame.from_dict(scores, orient="index").sort_index().rename_axis("era")


def per_era_bmc(predictions: np.ndarray, targets: np.ndarray, benchmark: np.ndarray, eras: np.ndarray) -> pd.Series:
    """Contribution to a benchmark model's CORR (correlation_contribution), Numerai's BMC."""
    return per_era(
        lambda g: correlation_contribution(g[["prediction"]], g["benchmark"], g["target"]).iloc[0],
        eras,
        {"prediction": predictions, "target": targets, "benchmark": benchmark},
        required=("target", "benchmark"),
    ).rename("bmc")


def per_era_benchmark_corr(predictions: np.ndarray, benchmark: np.ndarray, eras: np.ndarray) -> pd.Series:
    """Rank correlation of the predictions with a benchmark model's predictions."""
    return per_era(
        lambda g: tie_broken_rank_correlation(g["benchmark"], g["prediction"]),
        eras,
        {"prediction": predictions, "benchmark": benchmark},
        required=("benchmark",),
    ).rename("benchmark_corr")


def paired_difference(a: pd.Series, b: pd.Series) -> tuple[float, float]:
    """Mean and standard error of the per-era difference a - b of two models scored on the same
    eras: the era-to-era swings they share cancel, so the test is much sharper than comparing means."""
    diff = (a - b).dropna()
    return float(diff.mean()), float(diff.std(ddof=1) / np.sqrt(len(diff)))


def max_drawdown(per_era_scores: pd.Series) -> float:
    """Largest fall of the cumulative per-era score from its running peak (a positive number)."""
    cumulative = per_era_scores.cumsum()
    return float((cumulative.cummax() - cumulative).max()) if len(cumulative) else float("nan")


def summarize(per_era_scores: pd.Series) -> dict[str, float]:
    """Mean, std, Sharpe (mean / std) and max drawdown of a per-era score, Numerai's summary figures."""
    mean = float(per_era_scores.mean())
    std = float(per_era_scores.std(ddof=0))
    return {
        "mean": mean,
        "std": std,
        "sharpe": mean / std if std > 0 else float("nan"),
        "max_drawdown": max_drawdown(per_era_scores),
        "eras": int(per_era_scores.count()),
    }
