"""A bounded search of a LightGBM member's settings on the build's own CV.

No one setting wins on every data set: on some worlds the example model's shallow trees with 10 % of
the columns per tree beat deeper trees, on Numerai's real data far deeper trees do. A searched preset
entry (`MemberEntry.search` > 0) therefore tries hand-picked candidates first — the entry's own
settings, Numerai's example model and Numerai's deep recipe (depth 10, 1,024 leaves, 10 % columns,
10,000 rows per leaf on 2.7M rows), both at the entry's learning rate and trees, and the entry's own
with era boosting — then random draws
from `SPACE`, until `budget_s` seconds or `n_trials` trials, each scored by the member's own CV on the
build's folds (trees chosen at checkpoints, as for every member). The best `search` distinct trials
become members; their CV figures are the search's own, so they cost no second CV.

Plain random search rather than Optuna: a build has time for a dozen trials, where a model-based
sampler starts with random ones anyway (Optuna's TPE: 10) and has nothing yet to model.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data import EraFrame
from pipeline.evaluate import CVResult
from pipeline.features import FeaturePipeline
from pipeline.members.lgbm import LightGBMMember
from pipeline.metrics import summarize
from pipeline.weighting import EraWeighting

logger = logging.getLogger(__name__)

# Settings a trial draws from: tree shape (max_depth, num_leaves), columns per tree, rows per leaf as a
# share of the fit's rows, L2, row bagging, the era stride, and how the training eras are weighed
# (recency half-life, rolling window, era boosting: `pipeline.weighting`).
SPACE: dict[str, list[Any]] = {
    "shape": [(4, 15), (5, 31), (6, 64), (8, 255), (10, 1024)],
    "feature_fraction": [0.05, 0.1, 0.2, 0.3, 0.5],
    "leaf_share": [0.0001, 0.0005, 0.002, 0.004],
    "lambda_l2": [0.0, 1.0, 10.0],
    "bagging": [False, True],
    "era_stride": [1, 2, 4],
    "half_life": [None, 0.5, 0.25],
    "window": [None, 0.5],
    "boost": [None, 2.0],
}
# Numerai's deep recipe (example-scripts, late 2026): min_data_in_leaf 10,000 on ~2.7M training rows.
NUMERAI_DEEP = {"shape": (10, 1024), "feature_fraction": 0.1, "leaf_share": 0.004, "lambda_l2": 0.0, "bagging": False}
NUMERAI_EXAMPLE = {"shape": (5, 31), "feature_fraction": 0.1, "leaf_share": 0.0001, "lambda_l2": 0.0, "bagging": False}
NO_WEIGHTING = {"half_life": None, "window": None, "boost": None}
# Era boosting (Numerai's remedy for eras a model fits badly): the entry's own settings with the worst
# half of the eras weighing twice the others (`pipeline.weighting.EraBoost`).
ERA_BOOSTING = {"boost": 2.0}


@dataclass(frozen=True)
class Trial:
    """One point of the space: the LightGBM parameters it sets, its era stride and weighting."""

    settings: tuple[tuple[str, Any], ...]

    @classmethod
    def of(cls, settings: Mapping[str, Any]) -> Trial:
        return cls(tuple((name, settings[name]) for name in SPACE))

    def get(self, name: str) -> Any:
        return dict(self.settings)[name]

    def params(self, base: Mapping[str, Any], rows: int) -> dict[str, Any]:
        """LightGBM parameters: the entry's own (objective, learning rate, ...) with this trial's shape,
        columns, rows per leaf (at least 20), L2 and bagging."""
        depth, leaves = self.get("shape")
        params = dict(base) | {
            "max_depth": depth,
            "num_leaves": leaves,
            "feature_fraction": self.get("feature_fraction"),
            "min_data_in_leaf": max(20, round(self.get("leaf_share") * rows)),
            "lambda_l2": self.get("lambda_l2"),
        }
        for key in ("bagging_fraction", "bagging_freq"):
            params.pop(key, None)
        if self.get("bagging"):
            params |= {"bagging_fraction": 0.8, "bagging_freq": 1}
        return params

    def weighting(self, rounds: int) -> EraWeighting:
        """The trial's era weights; era boosting reweighs every fifth of the member's cap of `rounds` trees."""
        return EraWeighting(self.get("half_life"), self.get("window"), self.get("boost"), max(1, rounds // 5))

    def row(self) -> dict[str, Any]:
        depth, leaves = self.get("shape")
        return {"max_depth": depth, "num_leaves": leaves} | {k: v for k, v in self.settings if k != "shape"}


def entry_settings(params: Mapping[str, Any], era_stride: int, rows: int) -> dict[str, Any]:
    """The space's coordinates of an entry's own settings (nearest leaf share)."""
    shares = np.asarray(SPACE["leaf_share"])
    share = shares[int(np.argmin(np.abs(shares - params.get("min_data_in_leaf", 20) / max(1, rows))))]
    return {
        "shape": (params.get("max_depth", -1), params.get("num_leaves", 31)),
        "feature_fraction": params.get("feature_fraction", 1.0),
        "leaf_share": float(share),
        "lambda_l2": params.get("lambda_l2", 0.0),
        "bagging": params.get("bagging_freq", 0) > 0,
        "era_stride": era_stride,
    } | NO_WEIGHTING


def candidates(base: LightGBMMember, rows: int, seed: int, n_trials: int) -> list[Trial]:
    """The entry's own settings, Numerai's example and deep recipes, the entry's own with era boosting,
    then random draws of `SPACE`."""
    own = entry_settings(base.estimator.params, base.era_stride, rows)
    first = [
        own,
        NUMERAI_EXAMPLE | {"era_stride": 4} | NO_WEIGHTING,
        NUMERAI_DEEP | {"era_stride": 1} | NO_WEIGHTING,
        own | ERA_BOOSTING,
    ]
    trials = list(dict.fromkeys(Trial.of(s) for s in first))
    grid = [dict(zip(SPACE, values, strict=True)) for values in itertools.product(*SPACE.values())]
    order = np.random.default_rng([seed, 17]).permutation(len(grid))
    for index in order:
        if len(trials) >= n_trials:
            break
        trial = Trial.of(grid[index])
        if trial not in trials:
            trials.append(trial)
    return trials[:n_trials]


def fit_rows(frame: EraFrame, folds: list) -> int:
    """Training rows of the middle fold: what `leaf_share` is a share of."""
    return len(frame.select_eras(folds[len(folds) // 2][0]))


def trial_member(base: LightGBMMember, trial: Trial, number: int, rows: int) -> LightGBMMember:
    """Trial `number` as a member: `base` with the trial's settings (`rows`: what leaf shares are of)."""
    estimator = type(base.estimator)(
        trial.params(base.estimator.params, rows),
        base.estimator.num_boost_round,
        seed=base.estimator.seed + 1000 * number,
        num_threads=base.estimator.num_threads,
    )
    return replace(
        base,
        name=f"{base.name}_{number}",
        estimator=estimator,
        era_stride=trial.get("era_stride"),
        weighting=trial.weighting(base.estimator.num_boost_round),
        search=0,
    )


def run_trial(
    base: LightGBMMember,
    trial: Trial,
    number: int,
    frame: EraFrame,
    folds: list,
    score_target: str,
    pipelines: list[FeaturePipeline],
    rows: int,
) -> tuple[LightGBMMember, CVResult]:
    member = trial_member(base, trial, number, rows)
    return member, member.cross_validate(frame, folds, score_target, pipelines)


def search(
    base: LightGBMMember,
    frame: EraFrame,
    folds: list,
    score_target: str,
    pipelines: list[FeaturePipeline],
    keep: int,
    n_trials: int,
    budget_s: float,
    seed: int,
) -> tuple[list[tuple[LightGBMMember, CVResult]], pd.DataFrame]:
    """Run trials until `n_trials` or `budget_s` (no trial starts that would be expected to end past it;
    the first `keep` always run); return the best `keep` members with their CV, and the table."""
    rows = fit_rows(frame, folds)
    trials = candidates(base, rows, seed, max(n_trials, keep))
    results, table, start = [], [], time.perf_counter()
    for number, trial in enumerate(trials):
        spent = time.perf_counter() - start
        if number >= keep and spent + spent / number > budget_s:
            break
        t0 = time.perf_counter()
        member, result = run_trial(base, trial, number, frame, folds, score_target, pipelines, rows)
        summary = summarize(result.per_era)
        results.append((member, result))
        table.append(
            {"trial": number, **trial.row(), "num_boost_round": result.chosen["num_boost_round"]}
            | {"cv_corr_mean": summary["mean"], "cv_sharpe": summary["sharpe"], "seconds": time.perf_counter() - t0}
        )
        seconds = table[-1]["seconds"]
        logger.info("%s trial %d: %s, CV CORR %.4f (%.0f s)", base.name, number, trial.row(), summary["mean"], seconds)
    order = np.argsort([-row["cv_corr_mean"] for row in table], kind="stable")[:keep]
    kept = [results[k] for k in order]
    for rank, (member, result) in enumerate(kept, start=1):
        member.name = result.name = f"{base.name}_{rank}" if keep > 1 else base.name
    frame_table = pd.DataFrame(table)
    frame_table["kept"] = [k in set(order.tolist()) for k in range(len(table))]
    return kept, frame_table.sort_values("cv_corr_mean", ascending=False, ignore_index=True)
