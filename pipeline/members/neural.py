"""Neural members (TSMixer-Ext, the MLP): torch networks trained on whole eras with auxiliary targets as
extra outputs, exported as numpy arrays that `pipeline.runtime` runs without torch."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from pipeline.data import EraFrame
from pipeline.evaluate import CVResult
from pipeline.features import FeaturePipeline
from pipeline.members.base import MEMBERS_DIR, EraParts, MemberContext, MemberEntry, RefreshSettings, Stage
from pipeline.metrics import per_era_corr
from pipeline.models.tsmixer import EraNetEstimator, MLPBaseline, TSMixerExt
from pipeline.runtime import NeuralState
from pipeline.targets import aux_targets
from pipeline.tuning import best_settings, random_search

# Chained fits fine-tune at this share of the network's learning rate (as a weekly refresh does).
CHAIN_LR_FACTOR = 0.1


@dataclass
class NeuralMember:
    """A neural member: trains on whole eras, early-stops on its own embargoed newest training eras,
    and learns auxiliary targets as extra outputs. Subclasses name the kind and its estimator.

    `chain_epochs` > 0 chains its fits forward: only the first CV fold trains from scratch; each later
    fold, then the holdout and the refit, fine-tune the previous fit's network for `chain_epochs` epochs
    on the eras it has not seen yet (at a tenth of its learning rate). Forward-chained folds only add
    older-than-scored eras, so no fit sees an era its fold scores; the CV scores the same chained
    process that ships, at about the cost of one fit instead of five."""

    kind: ClassVar[str]
    estimator_class: ClassVar[type[EraNetEstimator]]
    learns_aux_targets: ClassVar[bool] = True

    name: str
    estimator: EraNetEstimator
    train_target: str
    aux_targets: list[str]
    era_stride: int
    n_valid_eras: int = 40
    embargo: int | None = None
    processes: int = 1
    chain_epochs: int = 0

    @classmethod
    def from_entry(cls, entry: MemberEntry, target: str, context: MemberContext, seed: int) -> NeuralMember:
        params = cls.estimator_params(entry, context)
        # One torch thread: with other work on the cores, more threads were many times slower per step.
        estimator = cls.estimator_class(**params, seed=seed, threads=1, progress=False)
        return cls(
            entry.name,
            estimator,
            target,
            aux_targets(context.frame, target, "_20"),
            context.era_stride or entry.era_stride,
            n_valid_eras=params.get("n_valid_eras", 40),
            embargo=context.embargo,
            processes=context.processes,
            chain_epochs=int(entry.params.get("chain_epochs", 0)),
        )

    @classmethod
    def estimator_params(cls, entry: MemberEntry, context: MemberContext) -> dict[str, Any]:
        """The estimator's constructor parameters besides seed, threads and progress (the entry's params
        without the member's own, `chain_epochs`)."""
        return {key: value for key, value in entry.params.items() if key != "chain_epochs"}

    @property
    def uses_pipeline(self) -> bool:
        """Neural members learn their own representation of each group from the raw features."""
        return False

    def _fit(self, frame: EraFrame, eras: np.ndarray) -> None:
        """Fit on `eras`, early-stopping on at most a quarter of them (small data keeps eras to fit on),
        over `processes` CPU processes."""
        eras = list(eras[:: self.era_stride])
        n_valid = min(self.n_valid_eras, max(2, len(eras) // 4))
        self.estimator.set_params(n_valid_eras=n_valid, embargo=self.embargo)
        self.estimator.fit(
            frame, eras=eras, target=self.train_target, aux_targets=self.aux_targets, processes=self.processes
        )
        self.seen_eras_ = set(self.estimator.fit_eras_)

    def _fit_or_continue(self, frame: EraFrame, eras: np.ndarray) -> None:
        """A fit from scratch, or, chained after an earlier fit, a fine-tune on the eras it has not seen."""
        if not self.chain_epochs or not hasattr(self, "seen_eras_"):
            self._fit(frame, eras)
            return
        new = [era for era in list(eras[:: self.era_stride]) if era not in self.seen_eras_]
        if new:
            lr = round(self.estimator.lr * CHAIN_LR_FACTOR, 12)
            self.estimator.fine_tune(frame, new, self.chain_epochs, lr)
            self.seen_eras_ |= set(new)

    @property
    def independent_folds(self) -> bool:
        """Whether the CV's folds may run apart (in parallel): not when each continues the one before."""
        return not self.chain_epochs

    def cross_validate(
        self, frame: EraFrame, folds: list, score_target: str, pipelines: list[FeaturePipeline]
    ) -> CVResult:
        if hasattr(self, "seen_eras_"):
            del self.seen_eras_
        return self.cv_result(frame, score_target, [self.cv_fold(frame, fold) for fold in folds])

    def cv_fold(self, frame: EraFrame, fold: tuple) -> tuple[np.ndarray, np.ndarray, int]:
        """One fold of the CV (with `independent_folds`, the build may run the folds in parallel): fit
        on its training eras, or continue the previous fold's fit; returns its scored rows, their
        predictions and the epoch early stopping kept."""
        train_eras, val_eras = fold
        self._fit_or_continue(frame, np.asarray(train_eras))
        rows = frame.select_eras(val_eras)
        return rows, self.estimator.predict(frame.features[rows], frame.eras[rows]), int(self.estimator.best_epoch_)

    def cv_result(self, frame: EraFrame, score_target: str, folds: list[tuple]) -> CVResult:
        """The CV's figures from each fold's `cv_fold`."""
        y = frame.targets[score_target].to_numpy()
        oof = np.full(len(frame), np.nan)
        for rows, predictions, _ in folds:
            oof[rows] = predictions
        scored = ~np.isnan(oof)
        per_era = per_era_corr(oof[scored], y[scored], frame.eras[scored])
        epochs = [epoch for _, _, epoch in folds]
        if self.chain_epochs:
            epochs = epochs[:1]
        chosen = {"best_epochs": epochs} | ({"chained_epochs": self.chain_epochs} if self.chain_epochs else {})
        return CVResult(self.name, per_era, oof, chosen, pd.Series(dtype=np.float64))

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

    def fit(self, splits: list[EraFrame], pipeline: FeaturePipeline, stage: Stage) -> None:
        frame = EraFrame.concat(splits, [self.train_target, *self.aux_targets])
        self._fit_or_continue(frame, frame.era_order)

    def predict(self, features: np.ndarray, eras: np.ndarray | None) -> np.ndarray:
        return self.estimator.predict(features, eras)

    def export(self, weight: float) -> NeuralState:
        return self.estimator.export(self.name, float(weight))

    def save(self, directory: Path) -> dict[str, Any]:
        path = Path(directory) / MEMBERS_DIR / f"{self.name}.pt"
        torch.save(self.estimator.checkpoint(), path)
        return {
            "file": str(path.relative_to(directory)),
            "aux_targets": list(self.aux_targets),
            "n_valid_eras": int(self.n_valid_eras),
            "embargo": self.embargo,
            "chain_epochs": int(self.chain_epochs),
        }

    @classmethod
    def load(cls, entry: Mapping[str, Any], directory: Path, pipeline: FeaturePipeline, threads: int) -> NeuralMember:
        checkpoint = torch.load(Path(directory) / entry["file"], weights_only=True)
        return cls(
            entry["name"],
            cls.estimator_class.from_checkpoint(checkpoint),
            entry["train_target"],
            entry["aux_targets"],
            entry["era_stride"],
            entry["n_valid_eras"],
            entry["embargo"],
            chain_epochs=entry.get("chain_epochs", 0),
        )

    def continue_training(self, parts: EraParts, settings: RefreshSettings) -> dict[str, Any]:
        """Fine-tune the fitted network from its weights on the given eras of each frame for
        `settings.epochs` epochs at a share of its learning rate, without early stopping (see
        `EraNetEstimator.fine_tune`)."""
        lr = round(self.estimator.lr * settings.lr_factor, 12)
        frames = [frame.subset(eras) for frame, eras in parts if len(eras)]
        frame = EraFrame.concat(frames, [self.train_target, *self.aux_targets])
        self.estimator.fine_tune(frame, frame.era_order, settings.epochs, lr)
        return {"epochs": settings.epochs, "lr": lr, "done": f"fine-tuned {settings.epochs} epochs at lr {lr:.2g}"}

    def untrained(self, threads: int, processes: int = 1) -> NeuralMember:
        estimator = type(self.estimator)(**self.estimator.get_params())
        return replace(self, estimator=estimator, aux_targets=list(self.aux_targets), processes=processes)

    def importance(self) -> None:
        return None

    def chosen(self) -> dict[str, Any]:
        return {"target": self.train_target, "era_stride": self.era_stride}


class MLPMember(NeuralMember):
    """The plain multi-target MLP, the baseline TSMixer-Ext must beat."""

    kind = "mlp"
    estimator_class = MLPBaseline


class TSMixerMember(NeuralMember):
    """TSMixer-Ext over feature-group tokens with an era context (`pipeline.models.tsmixer`)."""

    kind = "tsmixer"
    estimator_class = TSMixerExt

    @classmethod
    def estimator_params(cls, entry: MemberEntry, context: MemberContext) -> dict[str, Any]:
        """Its tokens follow the feature groups of features.json."""
        return super().estimator_params(entry, context) | {"feature_sets": dict(context.feature_sets)}
