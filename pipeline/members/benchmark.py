"""A LightGBM member built on Numerai's benchmark model: it learns the target made relative to the
benchmark and reads the benchmark's prediction, so a pickle that ships it takes the live benchmark
models (`predict(live_features, live_benchmark_models)`).

- Label: example-scripts' `residual_to_benchmark` target transform, per era with an intercept:
  `target - proportion * (alpha_e * benchmark + beta_e)`, the least-squares fit of the target on the
  benchmark within era e. What is left is the part of the target the benchmark does not explain,
  which is what BMC (and, for a benchmark close to the meta model, MMC) pays for.
- Input (`benchmark_input`, default on): the benchmark's per-era rank as one more column after the
  feature pipeline's, so the trees can learn where the benchmark is wrong.
- Coverage: benchmark predictions exist only for some eras (on Numerai, training eras from 157 on,
  predicted walk-forward in chunks of 156 eras). The member trains only on covered rows and predicts
  (and is scored) only where the benchmark covers the rows; elsewhere its out-of-fold predictions are
  NaN, so the blend is fitted on the eras it covers (`pipeline.build.oof_matrix`). Its trees are chosen
  on its out-of-fold BMC, what it is trained for; its CV figures are CORR like every member's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np
import pandas as pd

from pipeline.binning import dataset_params
from pipeline.data import EraFrame
from pipeline.evaluate import CVResult, checkpoints
from pipeline.features import FeaturePipeline
from pipeline.members.base import Member, MemberContext, MemberEntry, Stage
from pipeline.members.lgbm import LightGBMMember
from pipeline.metrics import per_era_bmc_columns, per_era_corr_columns
from pipeline.models.lgbm import Int8RowSequence, TqdmCallback
from pipeline.runtime import BenchmarkLightGBMState, LightGBMState, benchmark_ranks, era_row_groups

logger = logging.getLogger(__name__)

# Member settings carried in a preset entry's params (the rest are LightGBM's).
PROPORTION_KEY = "residual_proportion"
INPUT_KEY = "benchmark_input"
# The name of the benchmark's rank among the booster's inputs.
BENCHMARK_FEATURE = "benchmark_rank"


def residual_to_benchmark(
    target: np.ndarray, benchmark: np.ndarray, eras: np.ndarray, proportion: float = 1.0
) -> np.ndarray:
    """The target less `proportion` times its per-era least-squares fit on the benchmark (slope and
    intercept), as example-scripts' `residual_to_benchmark`; NaN where either is NaN."""
    target = np.asarray(target, dtype=np.float64)
    benchmark = np.asarray(benchmark, dtype=np.float64)
    out = np.full(len(target), np.nan)
    known = ~np.isnan(target) & ~np.isnan(benchmark)
    for rows in era_row_groups(np.asarray(eras)[known], int(known.sum())):
        index = np.flatnonzero(known)[rows]
        y, b = target[index], benchmark[index]
        centred = b - b.mean()
        variance = float(centred @ centred)
        slope = float(centred @ (y - y.mean())) / variance if variance > 0 else 0.0
        out[index] = y - proportion * (y.mean() + slope * centred)
    return out


class WithBenchmark(lgb.Sequence):
    """Batches of a feature sequence with the benchmark's rank of the same rows appended."""

    def __init__(self, rows: Int8RowSequence, ranks: np.ndarray):
        self.inner, self.ranks = rows, np.asarray(ranks, dtype=np.float64)
        self.batch_size = rows.batch_size

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, idx: int | slice | np.ndarray) -> np.ndarray:
        block = self.inner[idx]
        if np.ndim(block) == 1:
            return np.append(block, self.ranks[idx])
        return np.hstack([block, self.ranks[idx][:, None].astype(block.dtype)])


@dataclass
class BenchmarkMember(LightGBMMember):
    """A LightGBM member on the target relative to the benchmark model `benchmark_name`, reading its
    per-era rank as an input when `as_input`. Its fits read the benchmark column, so its CV and fits
    run whole (not as `LightGBMMember`'s fit plans): here, or in a `--jobs` worker, never on Dask."""

    kind: ClassVar[str] = "lightgbm_benchmark"
    reads_benchmark: ClassVar[bool] = True
    cv_plan: ClassVar[None] = None
    fit_plan: ClassVar[None] = None

    benchmark_name: str = ""
    proportion: float = 1.0
    as_input: bool = True

    @classmethod
    def from_entry(cls, entry: MemberEntry, target: str, context: MemberContext, seed: int) -> BenchmarkMember | None:
        benchmark = context.frame.benchmark
        if benchmark is None or benchmark.isna().all():
            logger.warning(
                "member %s left out: it needs benchmark predictions for the training and validation eras "
                "(train_benchmark_models.parquet and validation_benchmark_models.parquet)",
                entry.name,
            )
            return None
        params = dict(entry.params)
        proportion, as_input = float(params.pop(PROPORTION_KEY, 1.0)), bool(params.pop(INPUT_KEY, True))
        base = LightGBMMember.from_entry(replace(entry, params=params), target, context, seed)
        if base is None:
            return None
        settings = {f.name: getattr(base, f.name) for f in fields(LightGBMMember)}
        return cls(**settings, benchmark_name=str(benchmark.name), proportion=proportion, as_input=as_input)

    @property
    def needs_benchmarks(self) -> bool:
        """Whether `predict` needs the benchmark's predictions of the rows (and the pickle takes them)."""
        return self.as_input

    def _benchmark(self, frame: EraFrame) -> np.ndarray:
        if frame.benchmark is None or frame.benchmark.name != self.benchmark_name:
            raise ValueError(
                f"member {self.name!r} needs the predictions of benchmark model {self.benchmark_name!r} for "
                f"{frame.path.name} (its *_benchmark_models.parquet file)"
            )
        return frame.benchmark.to_numpy(dtype=np.float64)

    def labels(self, frame: EraFrame) -> np.ndarray:
        """The member's label on every row of `frame`: the target relative to the benchmark (NaN where
        either is unknown)."""
        target = frame.targets[self.train_target].to_numpy()
        return residual_to_benchmark(target, self._benchmark(frame), frame.eras, self.proportion)

    def _training_rows(self, frame: EraFrame, eras: Sequence[str], labels: np.ndarray) -> np.ndarray:
        rows = frame.select_eras(np.asarray(eras, dtype=object)[:: self.era_stride])
        return rows[~np.isnan(labels[rows])]

    def _dataset(self, pipeline: FeaturePipeline, parts: list[tuple[EraFrame, np.ndarray, np.ndarray]]) -> lgb.Dataset:
        """A LightGBM Dataset over (frame, rows, labels) parts: the pipeline's rows in batches, plus the
        benchmark's rank."""
        sequences = []
        for frame, rows, _ in parts:
            inner = Int8RowSequence(pipeline.inputs(frame), rows)
            ranks = benchmark_ranks(self._benchmark(frame), frame.eras)[rows]
            sequences.append(WithBenchmark(inner, ranks) if self.as_input else inner)
        names = pipeline.feature_names_ + ([BENCHMARK_FEATURE] if self.as_input else [])
        return lgb.Dataset(
            sequences,
            label=np.concatenate([labels[rows] for _, rows, labels in parts]).astype(np.float32),
            feature_name=names,
            params=dataset_params(self.estimator.seed),
            free_raw_data=True,
        )

    def _matrix(
        self, pipeline: FeaturePipeline, features: np.ndarray, eras: np.ndarray | None, benchmark: np.ndarray | None
    ) -> np.ndarray:
        matrix = pipeline.matrix(features, eras)
        if not self.as_input:
            return matrix
        if benchmark is None:
            raise ValueError(f"member {self.name!r} needs the benchmark predictions of the rows it predicts")
        ranks = benchmark_ranks(benchmark, eras).astype(np.float32)
        return np.hstack([matrix, ranks[:, None]])

    def cross_validate(
        self, frame: EraFrame, folds: list, score_target: str, pipelines: list[FeaturePipeline]
    ) -> CVResult:
        """Out-of-fold predictions on the covered rows of each fold's scored eras; the trees are chosen
        by mean per-era BMC against the benchmark."""
        benchmark, labels = self._benchmark(frame), self.labels(frame)
        steps = checkpoints(self.estimator.num_boost_round)
        oof_by_step = np.full((len(steps), len(frame)), np.nan)
        for pipeline, (train_eras, val_eras) in zip(pipelines, folds, strict=True):
            rows = self._training_rows(frame, train_eras, labels)
            if not len(rows):
                logger.info("%s: no covered training era before %s; its eras are left unscored", self.name, val_eras[0])
                continue
            pipeline = self._pipeline(pipeline)
            self.estimator.fit_dataset(self._dataset(pipeline, [(frame, rows, labels)]))
            val_rows = frame.select_eras(val_eras)
            val_rows = val_rows[~np.isnan(benchmark[val_rows])]
            x = self._matrix(pipeline, frame.features[val_rows], frame.eras[val_rows], benchmark[val_rows])
            oof_by_step[:, val_rows] = self.estimator.staged_predict(x, steps)
        scored = ~np.isnan(oof_by_step[0])
        if not scored.any():
            raise ValueError(
                f"member {self.name!r}: benchmark model {self.benchmark_name!r} covers no CV fold's training and "
                "scored eras; leave the member out or give benchmark predictions for more eras"
            )
        y, eras = frame.targets[score_target].to_numpy()[scored], frame.eras[scored]
        bmc = per_era_bmc_columns(oof_by_step[:, scored].T, y, benchmark[scored], eras)
        curve = pd.Series(bmc.mean().to_numpy(), index=pd.Index(steps, name="num_boost_round"), name="cv_bmc_mean")
        best = int(np.argmax(curve.to_numpy()))
        corr = per_era_corr_columns(oof_by_step[best][scored][:, None], y, eras)[0].rename("corr")
        self.estimator.num_boost_round = self.cv_trees = int(steps[best])
        chosen = {"num_boost_round": int(steps[best]), "trees_chosen_on": "BMC"}
        return CVResult(name=self.name, per_era=corr, oof=oof_by_step[best], chosen=chosen, curve=curve)

    def fit(self, splits: list[EraFrame], pipeline: FeaturePipeline, stage: Stage) -> None:
        """Train on the covered rows of the member's era stride of each split."""
        pipeline = self.pipeline_ = self._pipeline(pipeline)
        parts = []
        for split in splits:
            labels = self.labels(split)
            parts.append((split, self._training_rows(split, split.era_order, labels), labels))
        callbacks = [TqdmCallback(self.estimator.num_boost_round, f"{self.name} {stage}")]
        self.estimator.fit_dataset(self._dataset(pipeline, parts), callbacks)

    def predict(self, features: np.ndarray, eras: np.ndarray | None, benchmark: np.ndarray | None = None) -> np.ndarray:
        """Raw scores of the rows; `benchmark`: the benchmark's predictions of the same rows."""
        return self.estimator.predict(self._matrix(self.pipeline_, features, eras, benchmark))

    def export(self, weight: float) -> BenchmarkLightGBMState | LightGBMState:
        state = super().export(weight)
        if not self.as_input:
            return state
        return {**state, "kind": "lightgbm_benchmark", "benchmark": self.benchmark_name}

    def save(self, directory: Path) -> dict[str, Any]:
        return super().save(directory) | {
            "benchmark": self.benchmark_name,
            PROPORTION_KEY: self.proportion,
            INPUT_KEY: self.as_input,
        }

    @classmethod
    def load(
        cls, entry: Mapping[str, Any], directory: Path, pipeline: FeaturePipeline, threads: int
    ) -> BenchmarkMember:
        member = super().load(entry, directory, pipeline, threads)
        member.benchmark_name = entry["benchmark"]
        member.proportion, member.as_input = float(entry[PROPORTION_KEY]), bool(entry[INPUT_KEY])
        return member

    def refresh_rows(self, frame: EraFrame, eras: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The covered rows of `eras` whose label is known, model-ready, and their label."""
        labels = self.labels(frame)
        rows = frame.select_eras(eras)
        rows = rows[~np.isnan(labels[rows])]
        benchmark = self._benchmark(frame)[rows]
        return self._matrix(self.pipeline_, frame.features[rows], frame.eras[rows], benchmark), labels[rows]

    def model_feature_names(self) -> list[str]:
        return self.pipeline_.feature_names_ + ([BENCHMARK_FEATURE] if self.as_input else [])

    def chosen(self) -> dict[str, Any]:
        return super().chosen() | {
            "benchmark": self.benchmark_name,
            "label": f"target relative to the benchmark (proportion {self.proportion:g})",
            "benchmark_input": self.as_input,
        }


def predict_rows(member: Member, frame: EraFrame, rows: np.ndarray, features: np.ndarray | None = None) -> np.ndarray:
    """`member.predict` on rows of `frame` (or on `features` standing for them, e.g. permuted); a member
    that reads the benchmark gets the benchmark's predictions of those rows."""
    x = frame.features[rows] if features is None else features
    if getattr(member, "needs_benchmarks", False):
        benchmark = None if frame.benchmark is None else frame.benchmark.to_numpy(dtype=np.float64)[rows]
        return member.predict(x, frame.eras[rows], benchmark)
    return member.predict(x, frame.eras[rows])
