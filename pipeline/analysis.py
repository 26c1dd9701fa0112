"""Error analysis, feature importance and temporal feature patterns for the build report.

Everything that looks at features over time uses training eras only, so no statistic crosses from
validation into training decisions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from pipeline.data import EraFrame
from pipeline.metrics import (
    era_corr,
    per_era_benchmark_corr,
    per_era_bmc,
    per_era_corr,
    per_era_corr_columns,
    per_era_feature_exposure_columns,
    per_era_fnc_columns,
    summarize,
)

ROLLING_WINDOW = 20
# Gain of the feature pipeline's era-wise columns is reported under this group name.
ENGINEERED = "era-wise features"
WORST_ERAS = 10


def calibration(predictions: np.ndarray, targets: np.ndarray, eras: np.ndarray) -> dict[str, float]:
    """Mean target in each per-era prediction quintile (1 = lowest predictions)."""
    frame = pd.DataFrame({"p": predictions, "t": targets, "era": eras}).dropna()
    quintile = frame.groupby("era")["p"].rank(pct=True).mul(5).clip(upper=4.999).astype(int) + 1
    return {str(q): float(v) for q, v in frame.groupby(quintile)["t"].mean().items()}


def validation_figures(
    predictions: Mapping[str, np.ndarray],
    frame: EraFrame,
    rows: np.ndarray,
    target: str,
    benchmarks: pd.DataFrame | None = None,
) -> dict[str, dict]:
    """Every figure of each model (name -> its predictions on `rows`) on held-out rows: CORR on each
    target, FNC, exposure, BMC, calibration. CORR on the main target is numerai_corr itself; on each
    auxiliary target (dozens on Numerai's data) the same arithmetic in numpy (`per_era_corr_columns`,
    tested equal). FNC and exposure score all models of an era together: one least squares against the
    era's features serves every model."""
    eras = frame.eras[rows]
    features = frame.features[rows]
    main = frame.targets[target].to_numpy()[rows]
    names = list(predictions)
    stacked = np.column_stack([predictions[name] for name in names])
    fnc = per_era_fnc_columns(stacked, main, eras, features)
    exposure = per_era_feature_exposure_columns(stacked, eras, features)
    auxiliary = [aux for aux in frame.targets.columns if aux != target and frame.targets[aux].iloc[rows].notna().any()]
    aux_corr = {aux: per_era_corr_columns(stacked, frame.targets[aux].to_numpy()[rows], eras) for aux in auxiliary}
    bench = None if benchmarks is None or not len(benchmarks.columns) else benchmarks.iloc[rows, 0].to_numpy()
    figures = {}
    for k, name in enumerate(names):
        per_era = per_era_corr(stacked[:, k], main, eras)
        figures[name] = {
            "validation": summarize(per_era),
            "validation_per_era": per_era,
            "aux": {aux: summarize(aux_corr[aux][k]) for aux in auxiliary},
            "fnc": summarize(fnc[k]),
            "feature_exposure": summarize(exposure[k]),
            "calibration": calibration(stacked[:, k], main, eras),
            "worst_eras": [{"era": e, "corr": c} for e, c in per_era.nsmallest(WORST_ERAS).items()],
        }
        if bench is not None:
            figures[name]["benchmark"] = str(benchmarks.columns[0])
            figures[name]["bmc"] = summarize(per_era_bmc(stacked[:, k], main, bench, eras))
            figures[name]["benchmark_corr"] = summarize(per_era_benchmark_corr(stacked[:, k], bench, eras))
    return figures


def rolling_corr(per_era: pd.Series, window: int = ROLLING_WINDOW) -> pd.Series:
    """Rolling mean of per-era CORR: regimes in which a model works or fails."""
    return per_era.sort_index().rolling(window, min_periods=max(2, window // 2)).mean().dropna()


def gain_importance(booster_gain: dict[str, float], groups: dict[str, str], top: int = 30) -> dict:
    """Top features by LightGBM gain and each group's share of the total gain."""
    gain = pd.Series(booster_gain, dtype=np.float64)
    by_group = gain.groupby(gain.index.map(lambda name: groups.get(name, ENGINEERED))).sum()
    return {
        "gain": gain.nlargest(top).to_dict(),
        "gain_by_group": (by_group / max(by_group.sum(), 1e-12)).sort_values(ascending=False).to_dict(),
    }


# Permutation importance scores the ensemble once per feature group: on Numerai's validation data
# (hundreds of thousands of rows) every member's predictions that many times cost hours; a sample of
# this many rows, from every era, ranks groups as well.
PERMUTATION_ROWS = 100_000


def era_sample(rows: np.ndarray, eras: np.ndarray, cap: int = PERMUTATION_ROWS, seed: int = 0) -> np.ndarray:
    """At most about `cap` of `rows` (sorted), the same share of each era's and at least 100 of each,
    drawn with `seed`; all of them when there are no more than `cap`."""
    if len(rows) <= cap:
        return rows
    rng = np.random.default_rng([seed, 23])
    row_eras = eras[rows]
    share = cap / len(rows)
    picked = []
    for era in np.unique(row_eras):
        members = rows[row_eras == era]
        picked.append(rng.choice(members, size=min(len(members), max(100, round(share * len(members)))), replace=False))
    return np.sort(np.concatenate(picked))


def permutation_by_group(
    predict: Callable[[np.ndarray], np.ndarray],
    frame: EraFrame,
    rows: np.ndarray,
    target: str,
    groups: dict[str, str],
    seed: int = 0,
) -> dict[str, float]:
    """Drop in mean validation CORR when a group's features are shuffled together within each era.

    Works for any model given as `predict(int8 features) -> scores`, the neural net included. Scored
    by numerai_corr's arithmetic in numpy (`per_era_corr_columns`, tested equal).
    """
    rng = np.random.default_rng(seed)
    features = frame.features[rows]
    eras = frame.eras[rows]
    y = frame.targets[target].to_numpy()[rows]

    def mean_corr(x: np.ndarray) -> float:
        return float(per_era_corr_columns(predict(x)[:, None], y, eras)[0].mean())

    base = mean_corr(features)
    era_rows = [np.flatnonzero(eras == era) for era in np.unique(eras)]
    drops = {}
    names = np.asarray(frame.feature_names)
    for group in tqdm(sorted(set(groups.values())), desc="permutation importance", leave=False):
        cols = np.flatnonzero(np.isin(names, [f for f, g in groups.items() if g == group]))
        shuffled = features.copy()
        for idx in era_rows:
            shuffled[np.ix_(idx, cols)] = features[np.ix_(rng.permutation(idx), cols)]
        drops[group] = base - mean_corr(shuffled)
    return dict(sorted(drops.items(), key=lambda kv: -kv[1]))


def feature_era_corr(frame: EraFrame, rows: np.ndarray, target: str) -> pd.DataFrame:
    """numerai_corr of every feature with the target in each era (eras x features; NaN where a feature
    is constant in an era), by its arithmetic in numpy (`era_corr`, tested equal)."""
    y = frame.targets[target].to_numpy()
    table = {}
    for era in tqdm(np.unique(frame.eras[rows]), desc="feature CORR by era", leave=False):
        idx = frame.select_eras([era])
        idx = idx[~np.isnan(y[idx])]
        table[era] = era_corr(frame.features[idx], y[idx])
    return pd.DataFrame.from_dict(table, orient="index", columns=frame.feature_names)


def feature_stability(era_corr: pd.DataFrame, window: int = ROLLING_WINDOW, flag_share: float = 0.1) -> pd.DataFrame:
    """Per feature: mean, volatility, Sharpe of its per-era CORR, rolling-mean sign flips, and a flag.

    A feature is flagged when its rolling mean changes sign most often and its Sharpe is weakest:
    the `flag_share` of features ranked worst on (sign-flip rate - |Sharpe|).
    """
    mean = era_corr.mean()
    std = era_corr.std(ddof=0)
    rolling = era_corr.rolling(window, min_periods=window // 2).mean()
    signs = np.sign(rolling)
    flips = (signs.diff().abs() > 0).sum() / max(len(rolling) - 1, 1)
    table = pd.DataFrame({"mean": mean, "std": std, "sharpe": mean / std.replace(0, np.nan), "sign_flips": flips})
    table = table.fillna({"sharpe": 0.0, "mean": 0.0, "std": 0.0, "sign_flips": 0.0})
    badness = table["sign_flips"] - table["sharpe"].abs()
    table["flagged"] = badness.rank(ascending=False, method="first") <= max(1, int(flag_share * len(table)))
    table.index.name = "feature"
    return table


def fold_table(folds: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[dict]:
    """Readable summary of each fold's eras."""
    return [
        {
            "train_first": str(tr[0]),
            "train_last": str(tr[-1]),
            "train_eras": len(tr),
            "validation_first": str(va[0]),
            "validation_last": str(va[-1]),
            "validation_eras": len(va),
        }
        for tr, va in folds
    ]
