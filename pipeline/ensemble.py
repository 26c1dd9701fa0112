"""The members a build trains, by preset: LightGBM over parameters and targets.

A member trains on its own target (the main one or an auxiliary one: labels only, never inputs)
and is always scored and chosen on the main target.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pipeline.cv import default_embargo
from pipeline.data import EraFrame
from pipeline.evaluate import CVResult, cv_lgbm, strided_rows
from pipeline.features import RAW_FEATURES, FeaturePipeline, spread_rows
from pipeline.metrics import per_era_corr, per_era_corr_columns
from pipeline.models.lgbm import EXAMPLE_PARAMS, EXAMPLE_ROUNDS, LGBMMember, TqdmCallback
from pipeline.runtime import scaled_bins
from pipeline.tuning import best_settings, random_search

if TYPE_CHECKING:
    from pipeline.distributed import DaskLGBMTrainer

logger = logging.getLogger(__name__)

# Deeper trees that see more features per tree, with row bagging: the interactions across feature
# groups that the example's 10 % column sample rarely puts into one tree.
DEEP_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.01,
    "max_depth": 6,
    "num_leaves": 64,
    "feature_fraction": 0.3,
    "min_data_in_leaf": 200,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
}
# Numerai's published "standard large" settings: 20,000 trees at learning rate 0.001.
LARGE_PARAMS: dict[str, Any] = EXAMPLE_PARAMS | {"learning_rate": 0.001, "max_depth": 6, "num_leaves": 64}


def faster(params: dict[str, Any], factor: float) -> dict[str, Any]:
    """The same model with a `factor` times larger learning rate (and so ~factor times fewer trees)."""
    return params | {"learning_rate": params["learning_rate"] * factor}


# Neural members: whole eras per batch, early stopping on the newest 40 training eras (embargoed),
# auxiliary 20-day targets as extra outputs, the kept weights a moving average over steps. Settings
# from bench/tsmixer.py, chosen on train eras except the average: it was about even on train-era
# early stopping and adopted on validation eras, where it lifted the MLP's rank correlation with the
# default world's truth from 0.438 to 0.466 (CORR 0.0494 to 0.0523).
NEURAL_TRAINING: dict[str, Any] = {
    "lr": 3e-3,
    "max_epochs": 12,
    "patience": 3,
    "eras_per_batch": 2,
    "n_valid_eras": 40,
    "ema_decay": 0.99,
}
MLP_MEMBER = {
    "name": "mlp",
    "kind": "mlp",
    "params": NEURAL_TRAINING | {"hidden": (64, 64)},
    "target": "main",
    "era_stride": 1,
}
TSMIXER_MEMBER = {
    "name": "tsmixer_ext",
    "kind": "tsmixer",
    # Settings of bench.tsmixer, chosen on its train-era early-stopping CORR: correlation-cluster
    # tokens of ~10 features, a higher learning rate than the MLP's, dropout 0.1, and the era-wise
    # correlation term in the loss, with which it peaks after 4-5 epochs (so 8, not 12).
    "params": NEURAL_TRAINING
    | {
        "d": 32,
        "n_block": 2,
        "ff": 64,
        "context_dim": 8,
        "token_size": 10,
        "era_context": True,
        "bin_embedding": False,
        "dropout": 0.1,
        "lr": 2e-2,
        "corr_weight": 1.0,
        "max_epochs": 8,
    },
    "target": "main",
    "era_stride": 1,
}
NEURAL_KINDS = ("tsmixer", "mlp")

# Each member: name, LightGBM parameters, the most trees CV may choose, its training target ("main",
# or "aux_20" / "aux_60": the auxiliary target of that horizon whose ridge model best predicts the main target,
# see `best_aux_target`), and
# the era stride it trains on (Numerai's example takes every 4th era; others may take every era).
# Members see the feature pipeline's output, except those marked "raw" (the example model itself);
# a member "without" named feature sets sees the other raw features (and all era-wise ones).
EXAMPLE_MEMBER = {
    "name": "lgbm_example",
    "params": EXAMPLE_PARAMS,
    "rounds": EXAMPLE_ROUNDS,
    "target": "main",
    "era_stride": 4,
    "raw": True,
}
# Members over seeds: every member trains with the build's seed plus its position in the preset, so
# "lgbm_deep_2" is the deep member on another seed (other row bags and column samples). On the seed-1
# world two such models, rank-averaged, scored 9 % more than either alone.
# Members over feature subsets: the deep member on one half of Numerai's feature groups, the other
# half's named sets of features.json left out (features in no group stay in both). The halves are
# about equal in size on v5.2. On the seed-2 world (a design world, not a benchmark's) each half
# scored about what a second seed of the deep member did (0.0489 and 0.0468 against 0.0481) on fewer
# features, and rank-averaged with the deep member both halves scored 0.0537, its second seed 0.0518.
GROUP_HALVES = (
    ("constitution", "agility", "strength", "dexterity"),
    ("charisma", "wisdom", "serenity", "intelligence"),
)


def group_half_member(name: str, params: dict[str, Any], rounds: int, kept: int) -> dict[str, Any]:
    """A deep member (`name`) on the feature groups of `GROUP_HALVES[kept]`, the other half left out."""
    return {
        "name": name,
        "params": params,
        "rounds": rounds,
        "target": "main",
        "era_stride": 1,
        "without": GROUP_HALVES[1 - kept],
    }


PRESETS: dict[str, list[dict[str, Any]]] = {
    "example": [EXAMPLE_MEMBER],
    "demo": [
        EXAMPLE_MEMBER,
        {"name": "lgbm_deep", "params": faster(DEEP_PARAMS, 5), "rounds": 400, "target": "main", "era_stride": 1},
        {"name": "lgbm_deep_2", "params": faster(DEEP_PARAMS, 5), "rounds": 400, "target": "main", "era_stride": 1},
        group_half_member("lgbm_deep_a", faster(DEEP_PARAMS, 5), 400, 0),
        group_half_member("lgbm_deep_b", faster(DEEP_PARAMS, 5), 400, 1),
        {"name": "lgbm_aux20", "params": faster(EXAMPLE_PARAMS, 5), "rounds": 400, "target": "aux_20", "era_stride": 4},
        MLP_MEMBER,
    ],
    "standard": [
        EXAMPLE_MEMBER,
        {"name": "lgbm_deep", "params": DEEP_PARAMS, "rounds": 2000, "target": "main", "era_stride": 1},
        {"name": "lgbm_deep_2", "params": DEEP_PARAMS, "rounds": 2000, "target": "main", "era_stride": 1},
        group_half_member("lgbm_deep_a", DEEP_PARAMS, 2000, 0),
        group_half_member("lgbm_deep_b", DEEP_PARAMS, 2000, 1),
        {"name": "lgbm_aux20", "params": EXAMPLE_PARAMS, "rounds": EXAMPLE_ROUNDS, "target": "aux_20", "era_stride": 2},
        {"name": "lgbm_aux60", "params": EXAMPLE_PARAMS, "rounds": EXAMPLE_ROUNDS, "target": "aux_60", "era_stride": 2},
        MLP_MEMBER,
        TSMIXER_MEMBER,
    ],
    "large": [
        EXAMPLE_MEMBER,
        {"name": "lgbm_large", "params": LARGE_PARAMS, "rounds": 20_000, "target": "main", "era_stride": 4},
        {"name": "lgbm_deep", "params": DEEP_PARAMS, "rounds": 4000, "target": "main", "era_stride": 1},
        {"name": "lgbm_deep_2", "params": DEEP_PARAMS, "rounds": 4000, "target": "main", "era_stride": 1},
        group_half_member("lgbm_deep_a", DEEP_PARAMS, 4000, 0),
        group_half_member("lgbm_deep_b", DEEP_PARAMS, 4000, 1),
        {"name": "lgbm_aux20", "params": DEEP_PARAMS, "rounds": 4000, "target": "aux_20", "era_stride": 2},
        {"name": "lgbm_aux60", "params": DEEP_PARAMS, "rounds": 4000, "target": "aux_60", "era_stride": 2},
        MLP_MEMBER,
        TSMIXER_MEMBER,
    ],
}
# Choosing an auxiliary target: rows per ridge fit and per scoring window, and the ridge penalty
# (per row, on features scaled to -1..1).
AUX_CHOICE_ROWS = 200_000
AUX_CHOICE_RIDGE = 0.1
# A quick model for ablations, where only the difference between two variants matters.
PROBE = {"params": faster(EXAMPLE_PARAMS, 5), "rounds": 300, "era_stride": 4}


@dataclass
class LGBMSpec:
    """A LightGBM member: its estimator, the target column it learns, the eras it trains on and,
    for a member over a feature subset, the raw features it sees (`features`; None: all).
    With a `trainer`, `fit` trains on a Dask cluster (CV stays in this process)."""

    name: str
    estimator: LGBMMember
    train_target: str
    era_stride: int
    engineered: bool = True
    features: list[str] | None = None
    trainer: DaskLGBMTrainer | None = None

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
        pipelines = [self._pipeline(p) for p in pipelines]
        result = cv_lgbm(
            self.estimator, frame, self.train_target, folds, self.era_stride, self.name, score_target, pipelines
        )
        self.estimator.num_boost_round = result.chosen["num_boost_round"]
        return result

    def fit(self, splits: list[EraFrame], pipeline: FeaturePipeline, stage: str) -> None:
        """Train on the member's era stride of each split, with the settings CV chose, on the
        features of `pipeline` (fitted on the same eras); on the Dask cluster when one is set
        (raw features: the workers read parquet themselves, see `build`)."""
        pipeline = self.pipeline_ = self._pipeline(pipeline)
        if self.trainer is not None:
            self.estimator.booster_ = self.trainer.fit_member(
                self.estimator, splits, self.era_stride, pipeline.columns_, self.train_target
            )
            return
        self.estimator.fit_parts(
            [
                (
                    pipeline.inputs(s),
                    s.targets[self.train_target].to_numpy(),
                    strided_rows(s, s.era_order, self.era_stride),
                )
                for s in splits
            ],
            feature_names=pipeline.feature_names_,
            callbacks=[TqdmCallback(self.estimator.num_boost_round, f"{self.name} {stage}")],
        )

    def continue_fit(self, parts: Sequence[tuple[EraFrame, Sequence[str]]], rounds: int) -> None:
        """Add `rounds` trees fitted on the given eras of each frame to the fitted booster, on the
        features of the member's own fitted pipeline. Every given era is used (the stride thins a
        long history; a refresh's few new eras are all the news there is); rows without the
        member's target (not resolved yet) are left out."""
        xs, ys = [], []
        for frame, eras in parts:
            rows = frame.select_eras(eras)
            y = frame.targets[self.train_target].to_numpy()[rows]
            rows, y = rows[~np.isnan(y)], y[~np.isnan(y)]
            xs.append(self.pipeline_.matrix(frame.features[rows], frame.eras[rows]))
            ys.append(y)
        self.estimator.continue_training(np.concatenate(xs), np.concatenate(ys), rounds, self.pipeline_.feature_names_)

    def predict(self, features: np.ndarray, eras: np.ndarray) -> np.ndarray:
        return self.estimator.predict(self.pipeline_.matrix(features, eras))

    def export(self, weight: float) -> dict:
        return {
            "name": self.name,
            "kind": "lightgbm",
            "model_text": self.estimator.model_text(),
            "transform": self.pipeline_.transform_,
            "weight": float(weight),
        }

    def gain(self) -> dict[str, float]:
        return dict(
            zip(self.pipeline_.feature_names_, self.estimator.booster_.feature_importance("gain"), strict=False)
        )


@dataclass
class NeuralSpec:
    """A neural member (TSMixer-Ext or the MLP): trains on whole eras, early-stops on its own
    embargoed newest training eras, and learns auxiliary targets as extra outputs."""

    name: str
    estimator: Any
    train_target: str
    aux_targets: list[str]
    era_stride: int
    n_valid_eras: int = 40
    embargo: int | None = None
    processes: int = 1

    def _fit(self, frame: EraFrame, eras: np.ndarray) -> None:
        """Fit on `eras`, early-stopping on at most a quarter of them (small data keeps eras to fit on),
        over `processes` CPU processes."""
        eras = list(eras[:: self.era_stride])
        n_valid = min(self.n_valid_eras, max(2, len(eras) // 4))
        self.estimator.set_params(n_valid_eras=n_valid, embargo=self.embargo)
        self.estimator.fit(
            frame, eras=eras, target=self.train_target, aux_targets=self.aux_targets, processes=self.processes
        )

    def cross_validate(
        self, frame: EraFrame, folds: list, score_target: str, pipelines: list[FeaturePipeline]
    ) -> CVResult:
        y = frame.targets[score_target].to_numpy()
        oof = np.full(len(frame), np.nan)
        epochs = []
        for train_eras, val_eras in folds:
            self._fit(frame, np.asarray(train_eras))
            rows = frame.select_eras(val_eras)
            oof[rows] = self.estimator.predict(frame.features[rows], frame.eras[rows])
            epochs.append(int(self.estimator.best_epoch_))
        scored = ~np.isnan(oof)
        per_era = per_era_corr(oof[scored], y[scored], frame.eras[scored])
        return CVResult(self.name, per_era, oof, {"best_epochs": epochs}, pd.Series(dtype=np.float64))

    def tune(
        self,
        frame: EraFrame,
        folds: list,
        score_target: str,
        space: Mapping[str, Sequence[Any]],
        n_trials: int,
        budget_s: float,
        seed: int = 0,
    ) -> pd.DataFrame:
        """Random search over `space` (`pipeline.tuning`), each trial scored by this member's own CV
        on `folds`; trial 0 is the member's current settings. Sets the estimator to the best trial's
        settings and returns the table of trials."""
        params = self.estimator.get_params()

        def evaluate(settings: dict[str, Any]) -> tuple[pd.Series, dict[str, Any]]:
            trial = replace(self, estimator=type(self.estimator)(**params | settings))
            result = trial.cross_validate(frame, folds, score_target, [])
            return result.per_era, result.chosen

        table = random_search(evaluate, space, n_trials, budget_s, seed, first=params)
        self.estimator.set_params(**best_settings(table, space))
        return table

    def fit(self, splits: list[EraFrame], pipeline: FeaturePipeline, stage: str) -> None:
        """Raw features: the neural members learn their own representation of each group."""
        frame = splits[0] if len(splits) == 1 else concat_frames(splits, [self.train_target, *self.aux_targets])
        self._fit(frame, frame.era_order)

    def continue_fit(self, parts: Sequence[tuple[EraFrame, Sequence[str]]], epochs: int, lr: float) -> None:
        """Fine-tune the fitted network from its weights on the given eras of each frame for `epochs`
        epochs at learning rate `lr`, without early stopping (see `EraNetEstimator.fine_tune`)."""
        frames = [subset_frame(frame, eras) for frame, eras in parts if len(eras)]
        frame = frames[0] if len(frames) == 1 else concat_frames(frames, [self.train_target, *self.aux_targets])
        self.estimator.fine_tune(frame, frame.era_order, epochs, lr)

    def predict(self, features: np.ndarray, eras: np.ndarray) -> np.ndarray:
        return self.estimator.predict(features, eras)

    def export(self, weight: float) -> dict:
        return self.estimator.export(self.name, float(weight))

    def gain(self) -> None:
        return None


MemberSpec = LGBMSpec | NeuralSpec


def concat_frames(frames: list[EraFrame], targets: list[str]) -> EraFrame:
    """Rows of several splits in one frame (a copy of their int8 features), for models that need one."""
    return EraFrame(
        path=frames[0].path,
        ids=np.concatenate([f.ids for f in frames]),
        eras=np.concatenate([f.eras for f in frames]),
        features=np.concatenate([f.features for f in frames]),
        feature_names=frames[0].feature_names,
        targets=pd.concat([f.targets[targets] for f in frames]),
    )


def subset_frame(frame: EraFrame, eras: Sequence[str]) -> EraFrame:
    """The rows of `eras` only (a copy of their int8 features), or the frame itself when it has no other era."""
    if set(frame.era_order) <= set(eras):
        return frame
    rows = frame.select_eras(eras)
    return EraFrame(
        frame.path,
        frame.ids[rows],
        frame.eras[rows],
        frame.features[rows],
        frame.feature_names,
        frame.targets.iloc[rows],
        0,
        frame.data_type,
    )


def aux_targets(frame: EraFrame, main: str, horizon: str = "_20") -> list[str]:
    """Auxiliary targets of a horizon, leaving out the main target and its copies (target_ender_20)."""
    return [
        c
        for c in frame.targets.columns
        if c != main and c.endswith(horizon) and not frame.targets[c].equals(frame.targets[main])
    ]


def best_aux_target(frame: EraFrame, main: str, horizon: str = "_20") -> str | None:
    """The auxiliary target of a horizon whose own model best predicts the main target on later eras.

    Chosen on signal: a ridge fit to each candidate on the oldest third of the training eras, scored
    by per-era CORR with the main target on the eras from an embargo after them up to the middle.
    (The most correlated candidate tends to be the one sharing the main target's noise.) Every CV
    fold trains on those eras, so the choice uses nothing a fold scores; with too few eras for both
    windows, the most correlated candidate is taken.
    """
    candidates = aux_targets(frame, main, horizon)
    if len(candidates) < 2:
        return candidates[0] if candidates else None
    eras = frame.era_order
    fit_eras = eras[: len(eras) // 3]
    score_eras = eras[len(fit_eras) + default_embargo(candidates) : len(eras) // 2]
    if len(fit_eras) < 2 or len(score_eras) < 2:
        return str(frame.targets[candidates].corrwith(frame.targets[main]).idxmax())
    fit_rows = spread_rows(frame.select_eras(fit_eras), AUX_CHOICE_ROWS)
    labels = np.nan_to_num(frame.targets[candidates].to_numpy(np.float32) - 0.5)
    gram = AUX_CHOICE_RIDGE * len(fit_rows) * np.eye(len(frame.feature_names))
    moments = np.zeros((len(frame.feature_names), len(candidates)))
    for chunk in np.array_split(fit_rows, max(1, len(fit_rows) // 20_000)):
        x = scaled_bins(frame.features[chunk])
        gram += x.T @ x
        moments += x.T @ labels[chunk]
    weights = np.linalg.solve(gram, moments).astype(np.float32)
    score_rows = spread_rows(frame.select_eras(score_eras), AUX_CHOICE_ROWS)
    predictions = scaled_bins(frame.features[score_rows]) @ weights
    scores = per_era_corr_columns(
        predictions, frame.targets[main].to_numpy()[score_rows], frame.eras[score_rows]
    ).mean()
    return candidates[int(np.argmax(scores.to_numpy()))]


def member_specs(
    preset: str,
    frame: EraFrame,
    main: str,
    num_boost_round: int | None = None,
    era_stride: int | None = None,
    seed: int = 0,
    threads: int = 0,
    feature_sets: dict[str, list[str]] | None = None,
) -> list[MemberSpec]:
    """The members of a preset that this data supports (an aux member needs an auxiliary target).

    `num_boost_round`, when given, caps every member's trees; `era_stride` overrides every member's.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    specs = []
    for k, entry in enumerate(PRESETS[preset]):
        target = main if entry["target"] == "main" else best_aux_target(frame, main, entry["target"][3:])
        if target is None:
            continue
        stride = era_stride or entry["era_stride"]
        if entry.get("kind") in NEURAL_KINDS:
            from pipeline.models import tsmixer

            estimator_class = {"tsmixer": tsmixer.TSMixerExt, "mlp": tsmixer.MLPBaseline}[entry["kind"]]
            aux = aux_targets(frame, target, "_20")
            # One torch thread: with other work on the cores, more threads were ~10x slower per step.
            params = entry["params"] | ({"feature_sets": feature_sets} if entry["kind"] == "tsmixer" else {})
            estimator = estimator_class(**params, seed=seed + k, threads=1, progress=False)
            specs.append(
                NeuralSpec(entry["name"], estimator, target, aux, stride, n_valid_eras=entry["params"]["n_valid_eras"])
            )
            continue
        subset = None
        if "without" in entry:
            subset = features_without(entry["without"], feature_sets or {}, frame.feature_names)
            if subset is None:
                logger.warning(
                    "member %s left out: it leaves out the feature sets %s, which features.json lacks or which leave "
                    "none or all of this build's %d features",
                    entry["name"],
                    ", ".join(entry["without"]),
                    len(frame.feature_names),
                )
                continue
        rounds = min(entry["rounds"], num_boost_round or entry["rounds"])
        estimator = LGBMMember(dict(entry["params"]), rounds, seed=seed + k, num_threads=threads)
        specs.append(
            LGBMSpec(entry["name"], estimator, target, stride, engineered=not entry.get("raw", False), features=subset)
        )
    return specs


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


def member_targets(preset: str, available: list[str], main: str) -> list[str]:
    """Target columns to load for training: the main one and the auxiliary horizons a preset uses
    (neural members learn the 20-day auxiliary targets as extra outputs)."""
    horizons = {entry["target"][3:] for entry in PRESETS.get(preset, []) if entry["target"] != "main"}
    if any(entry.get("kind") in NEURAL_KINDS for entry in PRESETS.get(preset, [])):
        horizons.add("_20")
    return [main] + [t for t in available if t != main and any(t.endswith(h) for h in horizons)]


def oof_matrix(results: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions of every member as rows x members, on the rows every member scored."""
    stacked = np.column_stack([r.oof for r in results.values()])
    scored = ~np.isnan(stacked).any(axis=1)
    return stacked[scored], scored
