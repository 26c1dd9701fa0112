"""Out-of-fold scoring on forward-chained era folds: the CV that chooses settings in every build."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from pipeline.binning import DatasetCache
from pipeline.data import EraFrame
from pipeline.features import FeaturePipeline
from pipeline.metrics import per_era_corr_columns
from pipeline.models.lgbm import LGBMModel
from pipeline.parallel import Fit, FitPlan, Fitted, Prediction, run_plan
from pipeline.weighting import EraWeighting


@dataclass
class CVResult:
    """Out-of-fold figures of one model: per-era CORR at the chosen setting and the full curve."""

    name: str
    per_era: pd.Series
    oof: np.ndarray
    chosen: dict
    curve: pd.Series


def strided_rows(frame: EraFrame, eras: Sequence[str], stride: int) -> np.ndarray:
    """Rows of every `stride`-th era of `eras` (Numerai's example trains on every 4th era)."""
    if stride < 1:
        raise ValueError(f"era stride must be at least 1, got {stride}")
    return frame.select_eras(np.asarray(eras, dtype=object)[::stride])


def checkpoints(num_boost_round: int, count: int = 20) -> np.ndarray:
    """Tree counts at which the CV scores a booster, so one training run gives the whole curve."""
    return np.unique(np.linspace(num_boost_round / count, num_boost_round, count).round().astype(int).clip(1))


def cv_lgbm(member: LGBMModel, frame: EraFrame, target: str, folds: list, *options: Any, **keywords: Any) -> CVResult:
    """Train `member` on `target` in each fold and choose its number of trees by mean out-of-fold
    per-era CORR on `score_target` (the main target; defaults to `target`); the options are
    `cv_plan`'s. The folds run on the build's runner (`pipeline.parallel`: in this process, or in
    parallel)."""
    return run_plan(cv_plan(member, frame, target, folds, *options, **keywords))


def cv_plan(
    member: LGBMModel,
    frame: EraFrame,
    target: str,
    folds: list[tuple[np.ndarray, np.ndarray]],
    era_stride: int = 1,
    name: str = "lgbm",
    score_target: str | None = None,
    pipelines: Sequence[FeaturePipeline] | None = None,
    datasets: DatasetCache | None = None,
    weighting: EraWeighting | None = None,
) -> FitPlan:
    """`cv_lgbm`'s fits, one per fold, and what turns them into its `CVResult`.

    `pipelines` (one per fold, fitted on that fold's training eras) transform the features; None:
    the raw features. `datasets` holds the folds' binned rows for every fit of the build that reads
    the same view (None: binned for these fits alone). `weighting` weighs each fold's training eras."""
    steps = checkpoints(member.num_boost_round)
    fits = []
    for k, (train_eras, val_eras) in enumerate(folds):
        pipeline = None if pipelines is None else pipelines[k]
        fits.append(
            Fit(
                f"{name} fold {k + 1}",
                pipeline,
                [(frame, train_eras)],
                era_stride,
                target,
                frame.feature_names if pipeline is None else pipeline.feature_names_,
                member.lgb_params(),
                member.num_boost_round,
                Prediction(pipeline, frame, frame.select_eras(val_eras), steps),
                weighting=weighting,
            )
        )

    def finish(fitted: list[Fitted]) -> CVResult:
        """The CV of every fold, or of the first folds only when given their fits alone (the rounds
        of `pipeline.members.lgbm_search`)."""
        if not 0 < len(fitted) <= len(fits):
            raise ValueError(f"{name}: {len(fitted)} fitted folds for a CV of {len(fits)} folds")
        oof_by_step = np.full((len(steps), len(frame)), np.nan)
        for fit, result in zip(fits[: len(fitted)], fitted, strict=True):
            oof_by_step[:, fit.prediction.rows] = result.staged
        return chosen_trees(oof_by_step, frame, score_target or target, steps, name)

    return FitPlan(fits, finish, datasets, member.seed)


def chosen_trees(oof_by_step: np.ndarray, frame: EraFrame, score_target: str, steps: np.ndarray, name: str) -> CVResult:
    """The CV's result at the number of trees whose mean out-of-fold per-era CORR is the highest."""
    y_score = frame.targets[score_target].to_numpy()
    scored = ~np.isnan(oof_by_step[0])
    per_era_by_step = per_era_corr_columns(oof_by_step[:, scored].T, y_score[scored], frame.eras[scored])
    curve = pd.Series(
        per_era_by_step.mean().to_numpy(), index=pd.Index(steps, name="num_boost_round"), name="cv_corr_mean"
    )
    best = int(np.argmax(curve.to_numpy()))
    return CVResult(
        name=name,
        per_era=per_era_by_step[best].rename("corr"),
        oof=oof_by_step[best],
        chosen={"num_boost_round": int(steps[best])},
        curve=curve,
    )
