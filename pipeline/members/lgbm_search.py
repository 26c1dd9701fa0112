"""A bounded search of a LightGBM member's settings on the build's own CV.

No one setting wins on every data set: on some worlds the example model's shallow trees with 10 % of
the columns per tree beat deeper trees, on Numerai's real data far deeper trees do. A searched preset
entry (`MemberEntry.search` > 0) therefore tries hand-picked candidates first — the entry's own
settings, Numerai's example model and Numerai's deep recipe (depth 10, 1,024 leaves, 10 % columns,
10,000 rows per leaf on 2.7M rows), both at the entry's learning rate and trees, and the entry's own
with era boosting and at a quarter of its learning rate — then random draws from `SPACE`, until
`n_trials` trials (or `budget_s` seconds), each scored by the member's own CV on the build's folds
(trees chosen at checkpoints, as for every member).

The folds run as rounds of successive halving (Jamieson & Talwalkar 2016; Optuna's
SuccessiveHalvingPruner): every trial fits the oldest fold, the better half the next one, and so on,
never fewer than twice the trials kept, so a search of 16 trials over 3 folds trains about half of
what whole CVs would; each round's fits run side by side under `--jobs`. The best `search` trials
with a whole CV become members; their CV figures are the search's own, so they cost no second CV.

Plain random search rather than Optuna: a build has time for a dozen trials, where a model-based
sampler starts with random ones anyway (Optuna's TPE: 10) and has nothing yet to model.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from pipeline.data import EraFrame
from pipeline.evaluate import CVResult
from pipeline.features import FeaturePipeline
from pipeline.members.lgbm import LightGBMMember
from pipeline.metrics import summarize
from pipeline.parallel import Fitted, current
from pipeline.weighting import EraWeighting

logger = logging.getLogger(__name__)

# Settings a trial draws from: tree shape (max_depth, num_leaves), columns per tree, rows per leaf as a
# share of the fit's rows, L2, row bagging, the era stride, how the training eras are weighed
# (recency half-life, rolling window, era boosting: `pipeline.weighting`), and the learning rate as a
# share of the entry's (its cap on trees stays, so a slower rate costs the CV nothing more).
SPACE: dict[str, list[Any]] = {
    "rate": [1.0, 0.25],
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
# The entry's own settings at a quarter of its learning rate: smaller steps where the CV stops early
# (where the signal is weak, a fast rate fits the noise within the first few dozen trees).
SLOWER = {"rate": 0.25}


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
        """LightGBM parameters: the entry's own (objective, ...) with this trial's share of its learning
        rate, shape, columns, rows per leaf (at least 20), L2 and bagging."""
        depth, leaves = self.get("shape")
        params = dict(base) | {
            "learning_rate": base["learning_rate"] * self.get("rate"),
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
        "rate": 1.0,
        "shape": (params.get("max_depth", -1), params.get("num_leaves", 31)),
        "feature_fraction": params.get("feature_fraction", 1.0),
        "leaf_share": float(share),
        "lambda_l2": params.get("lambda_l2", 0.0),
        "bagging": params.get("bagging_freq", 0) > 0,
        "era_stride": era_stride,
    } | NO_WEIGHTING


def candidates(base: LightGBMMember, rows: int, seed: int, n_trials: int) -> list[Trial]:
    """The entry's own settings, Numerai's example and deep recipes, the entry's own with era boosting
    and at a slower rate, then random draws of `SPACE`."""
    own = entry_settings(base.estimator.params, base.era_stride, rows)
    first = [
        own,
        NUMERAI_EXAMPLE | {"rate": 1.0, "era_stride": 4} | NO_WEIGHTING,
        NUMERAI_DEEP | {"rate": 1.0, "era_stride": 1} | NO_WEIGHTING,
        own | ERA_BOOSTING,
        own | SLOWER,
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


def survivors(n_trials: int, keep: int, n_folds: int) -> list[int]:
    """How many trials fit each fold in successive halving: all on the first (oldest, cheapest) fold,
    then the better half of the previous fold's, never fewer than twice the trials kept."""
    counts = [n_trials]
    for _ in range(1, n_folds):
        counts.append(min(counts[-1], max(2 * keep, -(-counts[-1] // 2))))
    return counts


def search_work(n_trials: int, keep: int, fold_rows: list[int]) -> float:
    """The search's training rows over its rounds, in first folds' worth of rows."""
    counts = survivors(n_trials, keep, len(fold_rows))
    return sum(count * rows for count, rows in zip(counts, fold_rows, strict=True)) / fold_rows[0]


class Rounds:
    """The trials' CV plans, run fold by fold on the current runner: each round fits one fold of every
    trial still in, all at once, so that `--jobs` runs them side by side."""

    def __init__(self, members: list[LightGBMMember], frame: EraFrame, folds: list, target: str, pipelines: list):
        self.runner = current()
        self.plans = [member.cv_plan(frame, folds, target, pipelines) for member in members]
        self.caches = [p.cache if p.cache is not None else self.runner.cache(p.seed) for p in self.plans]
        self.fitted: list[list[Fitted]] = [[] for _ in members]

    def run(self, fold: int, trials: list[int], then: Callable[[], None] | None = None) -> None:
        """Fold `fold` of each of `trials`; a CV needs only the fits' scores, so their boosters go. The
        fits are submitted longest first by what the trial's earlier folds took (the first round in trial
        order), so that the round's last fits are short ones and no slot waits on a long one alone;
        `then` is called once they are submitted, before they are waited for."""
        order = sorted(trials, key=lambda k: -sum(f.seconds - f.bin_seconds for f in self.fitted[k]))
        handles = [(k, self.runner.submit_fit(self.plans[k].fits[fold], self.caches[k])) for k in order]
        if then is not None:
            then()
        for k, handle in handles:
            self.fitted[k].append(replace(handle.result(), booster=None))

    def result(self, k: int) -> CVResult:
        """Trial k's CV on the folds it has fitted."""
        return self.plans[k].finish(self.fitted[k])

    def release(self, k: int) -> None:
        """Let go of a pruned trial's out-of-fold scores (its seconds stay)."""
        self.fitted[k] = [replace(fitted, staged=None) for fitted in self.fitted[k]]

    def close(self) -> None:
        for plan, cache in zip(self.plans, self.caches, strict=True):
            if plan.cache is None:
                cache.clear()


def enter_trials(
    rounds: Rounds,
    n_trials: int,
    keep: int,
    budget_s: float,
    fold_rows: list[int],
    behind: Callable[[], None] | None = None,
) -> int:
    """Fit the first fold of trials until `n_trials`, or until the whole search (its later rounds at the
    first round's pace) would be expected to end past `budget_s` (the first `keep` always enter).
    Returns how many entered; without a budget they all run at once, and `behind` starts other work
    once they are submitted (with a budget it would slow the pace the trials are entered by)."""
    if budget_s == float("inf"):
        rounds.run(0, list(range(n_trials)), then=behind)
        return n_trials
    start, entered, batch = time.perf_counter(), 0, max(1, rounds.runner.jobs)
    while entered < n_trials:
        size = min(batch, n_trials - entered)
        pace = (time.perf_counter() - start) / max(1, entered)
        if entered >= keep and pace * search_work(entered + size, keep, fold_rows) > budget_s:
            break
        rounds.run(0, list(range(entered, entered + size)))
        entered += size
    return entered


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
    behind: Callable[[], None] | None = None,
) -> tuple[list[tuple[LightGBMMember, CVResult]], pd.DataFrame]:
    """Successive halving over the folds (`survivors`): every trial fits the first fold, the better half
    by their CV so far fit the next, until the last; return the best `keep` of those with a whole CV,
    and the table (the pruned trials with the CV of the folds they fitted). `behind`: work to start
    once the first round's fits are queued (`enter_trials`), so that a runner's slots take it up as
    that round's last fits leave them idle."""
    rows = fit_rows(frame, folds)
    trials = candidates(base, rows, seed, max(n_trials, keep))
    members = [trial_member(base, trial, number, rows) for number, trial in enumerate(trials)]
    rounds = Rounds(members, frame, folds, score_target, pipelines)
    fold_rows = [len(frame.select_eras(train)) for train, _ in folds]
    pruned: dict[int, CVResult] = {}
    try:
        entered = enter_trials(rounds, len(trials), keep, budget_s, fold_rows, behind)
        alive = list(range(entered))
        for fold, count in enumerate(survivors(entered, keep, len(folds))[1:], start=1):
            partial = {k: rounds.result(k) for k in alive}
            alive = sorted(alive, key=lambda k: -summarize(partial[k].per_era)["mean"])[:count]
            for k in set(partial) - set(alive):
                pruned[k] = partial[k]
                rounds.release(k)
            rounds.run(fold, sorted(alive))
        results = pruned | {k: rounds.result(k) for k in alive}
    finally:
        rounds.close()
    table = []
    for k in range(entered):
        summary = summarize(results[k].per_era)
        table.append(
            {"trial": k, **trials[k].row(), "num_boost_round": results[k].chosen["num_boost_round"]}
            | {"folds": len(rounds.fitted[k]), "cv_corr_mean": summary["mean"], "cv_sharpe": summary["sharpe"]}
            | {"seconds": sum(fitted.seconds for fitted in rounds.fitted[k])}
        )
        logger.info(
            "%s trial %d: %s, CV CORR %.4f on %d folds",
            base.name,
            k,
            trials[k].row(),
            summary["mean"],
            table[-1]["folds"],
        )
    order = sorted(alive, key=lambda k: -table[k]["cv_corr_mean"])[:keep]
    kept = [(members[k], results[k]) for k in order]
    for rank, (member, result) in enumerate(kept, start=1):
        member.name = result.name = f"{base.name}_{rank}" if keep > 1 else base.name
    frame_table = pd.DataFrame(table)
    frame_table["kept"] = frame_table["trial"].isin(order)
    return kept, frame_table.sort_values(["folds", "cv_corr_mean"], ascending=False, ignore_index=True)
