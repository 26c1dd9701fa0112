"""LightGBM members: a booster over the feature pipeline's output (or the raw features), on one target
and era stride, optionally over a subset of the raw features. Their fits run on the build's runner
(`pipeline.parallel`: in this process, in worker processes, or on a Dask cluster)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import lightgbm as lgb
import numpy as np

from pipeline.binning import DatasetCache
from pipeline.data import EraFrame
from pipeline.evaluate import CVResult, cv_plan
from pipeline.features import RAW_FEATURES, FeaturePipeline
from pipeline.members.base import MEMBERS_DIR, EraParts, MemberContext, MemberEntry, RefreshSettings, Stage
from pipeline.models.lgbm import EXAMPLE_PARAMS, EXAMPLE_ROUNDS, LGBMModel
from pipeline.parallel import Fit, FitPlan, Fitted, run_plan
from pipeline.runtime import LightGBMState
from pipeline.weighting import EraWeighting

logger = logging.getLogger(__name__)


def features_without(
    set_names: Sequence[str], feature_sets: Mapping[str, Sequence[str]], features: Sequence[str]
) -> list[str] | None:
    """The build's `features` outside the named sets of features.json, in the build's order; None
    when a set is not there, or when that leaves none or all of them (then the member would be
    no member over a feature subset)."""
    if any(name not in feature_sets for name in set_names):
        return None
    left_out = {feature for name in set_names for feature in feature_sets[name]}
    subset = [feature for feature in features if feature not in left_out]
    return subset if 0 < len(subset) < len(features) else None


def scaled_trees(rounds: int, params: dict[str, Any], scale: float) -> tuple[int, dict[str, Any]]:
    """`scale` times the trees at 1 / `scale` times the learning rate: about the same model, its
    cost in trees scaled (`--tree-scale`, which `--time-budget` sets)."""
    if scale == 1:
        return rounds, params
    learning_rate = params.get("learning_rate", EXAMPLE_PARAMS["learning_rate"])
    return max(1, round(rounds * scale)), params | {"learning_rate": learning_rate / scale}


# The settings a report shows for each LightGBM member (a searched member's are its trial's).
SHOWN_PARAMS = ("learning_rate", "max_depth", "num_leaves", "feature_fraction", "min_data_in_leaf")


@dataclass
class LightGBMMember:
    """A LightGBM member: its estimator, the target column it learns, the eras it trains on and,
    for a member over a feature subset, the raw features it sees (`features`; None: all)."""

    kind: ClassVar[str] = "lightgbm"
    learns_aux_targets: ClassVar[bool] = False

    name: str
    estimator: LGBMModel
    train_target: str
    era_stride: int
    engineered: bool = True
    features: list[str] | None = None
    cv_trees: int | None = None
    bins: DatasetCache | None = None
    weighting: EraWeighting = EraWeighting()
    search: int = 0

    @classmethod
    def from_entry(cls, entry: MemberEntry, target: str, context: MemberContext, seed: int) -> LightGBMMember | None:
        subset = None
        if entry.without:
            subset = features_without(entry.without, context.feature_sets, context.frame.feature_names)
            if subset is None:
                logger.warning(
                    "member %s left out: it leaves out the feature sets %s, which features.json lacks or which "
                    "leave none or all of this build's %d features",
                    entry.name,
                    ", ".join(entry.without),
                    len(context.frame.feature_names),
                )
                return None
        rounds = entry.rounds or EXAMPLE_ROUNDS
        rounds = min(rounds, context.num_boost_round or rounds)
        rounds, params = scaled_trees(rounds, dict(entry.params), context.tree_scale)
        estimator = LGBMModel(params, rounds, seed=seed, num_threads=context.threads)
        stride = context.era_stride or entry.era_stride
        return cls(entry.name, estimator, target, stride, not entry.raw, subset, bins=context.bins, search=entry.search)

    @property
    def uses_pipeline(self) -> bool:
        return self.engineered

    def _pipeline(self, pipeline: FeaturePipeline) -> FeaturePipeline:
        """The fitted pipeline, its raw-features variant for a member that takes raw features
        (Numerai's example model, so that its figures are the example's), and the member's feature
        subset of its raw columns (those of them the pipeline was fitted on: --drop-unstable may
        have left some out)."""
        changes: dict[str, Any] = {} if self.engineered else dict(RAW_FEATURES)
        if self.features is not None:
            fitted = set(pipeline.raw_names_)
            changes["columns"] = [name for name in self.features if name in fitted]
        return pipeline.variant(**changes) if changes else pipeline

    def cross_validate(
        self, frame: EraFrame, folds: list, score_target: str, pipelines: list[FeaturePipeline]
    ) -> CVResult:
        """Out-of-fold CV that also fixes the member's number of trees to the CV's choice."""
        return run_plan(self.cv_plan(frame, folds, score_target, pipelines))

    def cv_plan(self, frame: EraFrame, folds: list, score_target: str, pipelines: list[FeaturePipeline]) -> FitPlan:
        """`cross_validate` as fits, one per fold, that the build runs with every other member's."""
        pipelines = [self._pipeline(p) for p in pipelines]
        plan = cv_plan(
            self.estimator,
            frame,
            self.train_target,
            folds,
            self.era_stride,
            self.name,
            score_target,
            pipelines,
            self.bins,
            self.weighting,
        )
        scored = plan.finish

        def finish(fitted: list[Fitted]) -> CVResult:
            result = scored(fitted)
            self.estimator.num_boost_round = self.cv_trees = result.chosen["num_boost_round"]
            return result

        plan.finish = finish
        return plan

    def fit(self, splits: list[EraFrame], pipeline: FeaturePipeline, stage: Stage) -> None:
        """Train on the member's era stride of each split, with the settings CV chose, on the
        features of `pipeline` (fitted on the same eras)."""
        run_plan(self.fit_plan(splits, pipeline, stage))

    def fit_plan(self, splits: list[EraFrame], pipeline: FeaturePipeline, stage: Stage) -> FitPlan:
        """`fit` as one fit that the build runs with every other member's; the member takes the fitted
        pipeline and booster when the plan finishes (until then it predicts as it did)."""
        pipeline = self._pipeline(pipeline)
        fit = Fit(
            f"{self.name} {stage}",
            pipeline,
            [(split, split.era_order) for split in splits],
            self.era_stride,
            self.train_target,
            pipeline.feature_names_,
            self.estimator.lgb_params(),
            self.estimator.num_boost_round,
            progress=True,
            weighting=self.weighting,
        )

        def finish(fitted: list[Fitted]) -> None:
            self.pipeline_, self.estimator.booster_ = pipeline, fitted[0].booster

        return FitPlan([fit], finish, self.bins, self.estimator.seed)

    def predict(self, features: np.ndarray, eras: np.ndarray | None) -> np.ndarray:
        return self.estimator.predict(self.pipeline_.matrix(features, eras))

    def export(self, weight: float) -> LightGBMState:
        return {
            "name": self.name,
            "kind": "lightgbm",
            "weight": float(weight),
            "model_text": self.estimator.model_text(),
            "transform": self.pipeline_.transform_,
        }

    def save(self, directory: Path) -> dict[str, Any]:
        path = Path(directory) / MEMBERS_DIR / f"{self.name}.txt"
        self.estimator.booster_.save_model(str(path))
        return {
            "file": str(path.relative_to(directory)),
            "params": self.estimator.params,
            "seed": int(self.estimator.seed),
            "trees": int(self.estimator.booster_.current_iteration()),
            "base_trees": int(self.cv_trees if self.cv_trees is not None else self.estimator.num_boost_round),
            "engineered": bool(self.engineered),
            "features": self.features,
            "weighting": self.weighting.describe(),
        }

    @classmethod
    def load(cls, entry: Mapping[str, Any], directory: Path, pipeline: FeaturePipeline, threads: int) -> LightGBMMember:
        estimator = LGBMModel(entry["params"], entry["trees"], seed=entry["seed"], num_threads=threads)
        estimator.booster_ = lgb.Booster(model_file=str(Path(directory) / entry["file"]))
        member = cls(
            entry["name"],
            estimator,
            entry["train_target"],
            entry["era_stride"],
            entry["engineered"],
            entry.get("features"),
            cv_trees=entry["base_trees"],
            weighting=EraWeighting(**entry.get("weighting", {})),
        )
        member.pipeline_ = member._pipeline(pipeline)
        return member

    def continue_training(self, parts: EraParts, settings: RefreshSettings) -> dict[str, Any]:
        """Add `settings.trees` times the CV's trees, fitted on the given eras of each frame, to the
        fitted booster, on the features of the member's own fitted pipeline. Every given era is used
        (the stride thins a long history; a refresh's few new eras are all the news there is); rows
        without the member's target (not resolved yet) are left out."""
        rounds = max(1, round(settings.trees * (self.cv_trees or self.estimator.num_boost_round)))
        xs, ys = zip(*(self.refresh_rows(frame, eras) for frame, eras in parts), strict=True)
        self.estimator.continue_training(np.concatenate(xs), np.concatenate(ys), rounds, self.model_feature_names())
        trees = self.estimator.num_boost_round
        return {"trees_added": rounds, "trees": trees, "done": f"+{rounds} trees ({trees} in all)"}

    def refresh_rows(self, frame: EraFrame, eras: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """The model-ready rows of `eras` whose target is resolved, and their target."""
        rows = frame.select_eras(eras)
        y = frame.targets[self.train_target].to_numpy()[rows]
        rows, y = rows[~np.isnan(y)], y[~np.isnan(y)]
        return self.pipeline_.matrix(frame.features[rows], frame.eras[rows]), y

    def model_feature_names(self) -> list[str]:
        """The booster's input columns, in order."""
        return self.pipeline_.feature_names_

    def untrained(self, threads: int, processes: int = 1) -> LightGBMMember:
        trees = self.cv_trees if self.cv_trees is not None else self.estimator.num_boost_round
        estimator = LGBMModel(dict(self.estimator.params), trees, seed=self.estimator.seed, num_threads=threads)
        return replace(self, estimator=estimator, cv_trees=trees, bins=None)

    def importance(self) -> dict[str, float]:
        gain = self.estimator.booster_.feature_importance("gain")
        return dict(zip(self.model_feature_names(), gain, strict=True))

    def chosen(self) -> dict[str, Any]:
        subset = {}
        if self.features is not None:
            subset = {"raw_features": f"{len(self.pipeline_.columns_)} of {len(self.pipeline_.raw_names_)}"}
        weighting = {"weighting": self.weighting.describe()} if self.weighting.active else {}
        shown = {k: self.estimator.params[k] for k in SHOWN_PARAMS if k in self.estimator.params}
        return {"target": self.train_target, "era_stride": self.era_stride} | shown | subset | weighting
