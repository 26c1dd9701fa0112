"""What the build chooses on (`--objective`), and the scores Numerai pays on, per era.

- "corr" (the default): numerai_corr against the main target, as every build did before.
- "bmc": correlation_contribution against a benchmark model's predictions (Numerai's BMC, the public
  stand-in for MMC that Numerai's own research code optimises), on the eras the benchmark covers.
- "payout": Numerai's payout score, `corr_multiplier * CORR + mmc_multiplier * MMC`, with BMC standing
  in for MMC (the meta model's predictions are not published for training eras), on the same eras.

The blend's functions (`pipeline.blend`) score against a bare target array (CORR) or a `ScoredTarget`
(the target with the benchmark and the objective); both index by rows alike, so the blend code is the
same for every objective and the default leaves its figures exactly as they were.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Union

import numpy as np
import pandas as pd

from pipeline.benchmarks import meta_model
from pipeline.data import DataError, EraFrame
from pipeline.metrics import per_era_bmc_columns, per_era_corr_columns, summarize

OBJECTIVES = ("corr", "bmc", "payout")
# Numerai's payout multipliers, from its documentation (numerai/docs, numerai-tournament/staking.md):
# "payout = stake * clip(payout_factor * (corr * 0.5 + mmc * 2), -0.05, 0.05)" for rounds from
# 2 January 2024; the revision of March 2026 keeps the formula and says the multipliers are set per
# round (numer.ai/round/latest shows them). Override with --corr-multiplier / --mmc-multiplier.
CORR_MULTIPLIER = 0.5
MMC_MULTIPLIER = 2.0


@dataclass(frozen=True)
class Objective:
    """The score the blend weights, member selection and neutralization are chosen on."""

    name: str = "corr"
    corr_multiplier: float = CORR_MULTIPLIER
    mmc_multiplier: float = MMC_MULTIPLIER

    def problems(self) -> list[str]:
        """Every setting that cannot work, naming the option."""
        problems = []
        if self.name not in OBJECTIVES:
            problems.append(f"--objective {self.name!r} is unknown; expected one of {', '.join(OBJECTIVES)}")
        for option, value in (("--corr-multiplier", self.corr_multiplier), ("--mmc-multiplier", self.mmc_multiplier)):
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"{option} must be a finite number of 0 or more, got {value}")
        if self.name == "payout" and self.corr_multiplier == 0 and self.mmc_multiplier == 0:
            problems.append("--objective payout needs --corr-multiplier or --mmc-multiplier above 0")
        return problems

    @property
    def needs_benchmark(self) -> bool:
        return self.name != "corr"

    def mix(self) -> str:
        """The payout mix in words."""
        return f"{self.corr_multiplier:g} x CORR + {self.mmc_multiplier:g} x BMC"

    def describe(self) -> str:
        if self.name == "payout":
            return f"payout ({self.mix()})"
        return {"corr": "CORR", "bmc": "BMC"}.get(self.name, self.name)


@dataclass(frozen=True)
class ScoredTarget:
    """The main target of some rows with a benchmark model's predictions on them (NaN where it has
    none) and the objective to score them on; rows are taken by indexing, as from a target array."""

    target: np.ndarray
    benchmark: np.ndarray
    objective: Objective

    def __getitem__(self, rows: Any) -> ScoredTarget:
        return replace(self, target=self.target[rows], benchmark=self.benchmark[rows])

    def __len__(self) -> int:
        return len(self.target)


Target = Union[np.ndarray, ScoredTarget]


def payout_scores(corr: pd.DataFrame, contribution: pd.DataFrame, objective: Objective) -> pd.DataFrame:
    """The payout score per era, on the eras both scores have."""
    eras = contribution.index.intersection(corr.index)
    return objective.corr_multiplier * corr.loc[eras] + objective.mmc_multiplier * contribution.loc[eras]


def score_columns(predictions: np.ndarray, target: Target, eras: np.ndarray) -> pd.DataFrame:
    """The objective of every column of `predictions` (rows x candidates) in each era (eras x
    candidates): numerai_corr for a bare target array; for a `ScoredTarget` with BMC or payout, only
    the eras where the benchmark covers rows (its other eras say nothing about BMC)."""
    if not isinstance(target, ScoredTarget) or target.objective.name == "corr":
        values = target.target if isinstance(target, ScoredTarget) else target
        return per_era_corr_columns(predictions, values, eras)
    predictions = np.asarray(predictions, dtype=np.float64)
    bmc = per_era_bmc_columns(predictions, target.target, target.benchmark, eras)
    if target.objective.name == "bmc":
        return bmc
    covered = np.isin(eras, bmc.index)
    corr = per_era_corr_columns(predictions[covered], target.target[covered], np.asarray(eras)[covered])
    return payout_scores(corr, bmc, target.objective)


def score_series(predictions: np.ndarray, target: Target, eras: np.ndarray) -> pd.Series:
    """`score_columns` of one column of predictions, as a series over eras."""
    return score_columns(np.asarray(predictions)[:, None], target, eras)[0].rename("score")


@dataclass(frozen=True)
class ScoredRows:
    """Rows a model is scored on for the report: their main target and eras, and where available a
    benchmark model's and the meta model's predictions on them (NaN where a file has none)."""

    target: np.ndarray
    eras: np.ndarray
    benchmark: np.ndarray | None = None
    meta_model: np.ndarray | None = None

    def figures(self, predictions: np.ndarray, objective: Objective) -> dict[str, Any]:
        """CORR, BMC, MMC and the payout mix of `predictions` on these rows (those it predicts: NaN
        elsewhere): each a summary over eras (`pipeline.metrics.summarize`), with the per-era series of
        the mix; BMC, payout and MMC only where their files cover rows."""
        predictions = np.asarray(predictions, dtype=np.float64)
        known = ~np.isnan(predictions)
        column, target, eras = predictions[known][:, None], self.target[known], self.eras[known]
        corr = per_era_corr_columns(column, target, eras)
        figures: dict[str, Any] = {"corr": summarize(corr[0])}
        benchmark = None if self.benchmark is None else self.benchmark[known]
        if benchmark is not None and not np.isnan(benchmark).all():
            bmc = per_era_bmc_columns(column, target, benchmark, eras)
            payout = payout_scores(corr, bmc, objective)[0]
            figures |= {"bmc": summarize(bmc[0]), "payout": summarize(payout), "payout_per_era": payout}
        meta_model = None if self.meta_model is None else self.meta_model[known]
        if meta_model is not None and not np.isnan(meta_model).all():
            figures["mmc"] = summarize(per_era_bmc_columns(column, target, meta_model, eras)[0])
        return figures | {"objective": objective.describe(), "payout_mix": objective.mix()}


def coverage_problem(benchmark: np.ndarray | None, eras: np.ndarray, fold_eras: list[np.ndarray]) -> str | None:
    """Why BMC cannot be the objective on these CV folds (no benchmark, or a fold with no covered era),
    or None."""
    if benchmark is None:
        return "no benchmark predictions for the training eras"
    covered = set(np.asarray(eras)[~np.isnan(benchmark)].tolist())
    for k, fold in enumerate(fold_eras):
        if not covered & set(np.asarray(fold).tolist()):
            return f"CV fold {k + 1} (eras {fold[0]}..{fold[-1]}) has no era the benchmark predictions cover"
    return None


def check_objective(objective: Objective, frame: EraFrame, fold_eras: list[np.ndarray]) -> None:
    """Fail before any training when the objective needs benchmark predictions the CV folds lack."""
    if not objective.needs_benchmark:
        return
    benchmark = None if frame.benchmark is None else frame.benchmark.to_numpy(dtype=np.float64)
    problem = coverage_problem(benchmark, frame.eras, fold_eras)
    if problem is not None:
        raise DataError(
            f"--objective {objective.name} scores the CV on BMC: {problem}; expected "
            f"train_benchmark_models.parquet and validation_benchmark_models.parquet in {frame.path.parent} "
            "covering the CV's scored eras (or --objective corr)"
        )


def objective_target(objective: Objective, frame: EraFrame, rows: np.ndarray, target: str) -> Target:
    """What the blend is chosen on for these rows of `frame`: the main target (CORR), or the target
    with the benchmark's predictions for BMC and the payout mix."""
    y = frame.targets[target].to_numpy()[rows]
    if not objective.needs_benchmark:
        return y
    return ScoredTarget(y, frame.benchmark.to_numpy(dtype=np.float64)[rows], objective)


def scored_rows(frame: EraFrame, rows: np.ndarray, target: str, meta_model: np.ndarray | None) -> ScoredRows:
    """`ScoredRows` of these rows of `frame`; `meta_model`: the meta model's predictions of every row."""
    benchmark = None if frame.benchmark is None else frame.benchmark.to_numpy(dtype=np.float64)[rows]
    return ScoredRows(
        frame.targets[target].to_numpy()[rows],
        frame.eras[rows],
        benchmark,
        None if meta_model is None else meta_model[rows],
    )


def paid_rows(
    data_dir: Path, train: EraFrame, validation: EraFrame, rows: np.ndarray, target: str
) -> dict[str, ScoredRows]:
    """The rows every model's CORR, BMC, MMC and payout mix are reported on: every training row (a
    model's out-of-fold predictions say which it scored) and the scored validation `rows`."""
    return {
        "cv": scored_rows(train, np.arange(len(train)), target, meta_model(data_dir, train.ids)),
        "validation": scored_rows(validation, rows, target, meta_model(data_dir, validation.ids)),
    }


def numerai_figures(
    rows: dict[str, ScoredRows], objective: Objective, cv: np.ndarray, validation: np.ndarray
) -> dict[str, dict[str, Any]]:
    """A model's CORR, BMC, MMC and payout mix on the CV's rows (`cv`: its out-of-fold predictions of
    every training row, NaN where none) and on the validation's (`validation`)."""
    return {"cv": rows["cv"].figures(cv, objective), "validation": rows["validation"].figures(validation, objective)}
