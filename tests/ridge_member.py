"""A member kind of one's own, for the tests: ridge regression on the scaled bins.

It is what a user writes to bring a model (`build_model.py --member tests/ridge_member.py:RidgeMember`):
one class implementing `pipeline.members.Member`, whose export names a numpy-only function that the
pickle runs in Numerai's container (this module is pickled by value, so it needs no installed package
there).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from pipeline.data import EraFrame
from pipeline.evaluate import CVResult, strided_rows
from pipeline.metrics import per_era_corr


def ridge_scores(params: dict[str, Any], features: np.ndarray, eras: np.ndarray | None) -> np.ndarray:
    """The member's scores in Numerai's container: numpy only."""
    return ((np.asarray(features, dtype=np.float64) - 2.0) / 2.0) @ params["weights"] + params["bias"]


def moments(frames: Sequence[tuple[EraFrame, np.ndarray]], target: str) -> tuple[np.ndarray, np.ndarray, int]:
    """X'X, X'y and the row count over the given rows of each frame, on labelled rows (bias column last)."""
    width = frames[0][0].features.shape[1] + 1
    gram, cross, count = np.zeros((width, width)), np.zeros(width), 0
    for frame, rows in frames:
        y = frame.targets[target].to_numpy()[rows]
        rows, y = rows[~np.isnan(y)], y[~np.isnan(y)]
        x = np.hstack([(frame.features[rows].astype(np.float64) - 2.0) / 2.0, np.ones((len(rows), 1))])
        gram += x.T @ x
        cross += x.T @ (y - 0.5)
        count += len(rows)
    return gram, cross, count


@dataclass
class RidgeMember:
    kind: ClassVar[str] = "ridge"
    learns_aux_targets: ClassVar[bool] = False

    name: str
    train_target: str
    era_stride: int = 1
    penalty: float = 1.0
    moments_: tuple[np.ndarray, np.ndarray, int] | None = field(default=None, repr=False)

    @classmethod
    def from_entry(cls, entry: Any, target: str, context: Any, seed: int) -> RidgeMember:
        return cls(entry.name, target, context.era_stride or entry.era_stride, float(entry.params.get("penalty", 1.0)))

    @property
    def uses_pipeline(self) -> bool:
        return False

    def _solve(self) -> dict[str, Any]:
        gram, cross, count = self.moments_
        penalty = self.penalty * count * np.eye(len(gram))
        penalty[-1, -1] = 0.0
        solution = np.linalg.solve(gram + penalty, cross)
        return {"weights": solution[:-1], "bias": float(solution[-1])}

    def _fit_rows(self, parts: Sequence[tuple[EraFrame, np.ndarray]]) -> None:
        self.moments_ = moments(parts, self.train_target)
        self.params_ = self._solve()

    def cross_validate(self, frame: EraFrame, folds: list, score_target: str, pipelines: list) -> CVResult:
        y = frame.targets[score_target].to_numpy()
        oof = np.full(len(frame), np.nan)
        for train_eras, val_eras in folds:
            self._fit_rows([(frame, strided_rows(frame, train_eras, self.era_stride))])
            rows = frame.select_eras(val_eras)
            oof[rows] = self.predict(frame.features[rows], frame.eras[rows])
        scored = ~np.isnan(oof)
        per_era = per_era_corr(oof[scored], y[scored], frame.eras[scored])
        return CVResult(self.name, per_era, oof, {"penalty": self.penalty}, pd.Series(dtype=np.float64))

    def fit(self, splits: list[EraFrame], pipeline: Any, stage: str) -> None:
        self._fit_rows([(s, strided_rows(s, s.era_order, self.era_stride)) for s in splits])

    def predict(self, features: np.ndarray, eras: np.ndarray | None) -> np.ndarray:
        return ridge_scores(self.params_, features, eras)

    def export(self, weight: float) -> dict[str, Any]:
        return {
            "name": self.name,
            "kind": "function",
            "weight": float(weight),
            "function": ridge_scores,
            "params": dict(self.params_),
        }

    def save(self, directory: Path) -> dict[str, Any]:
        path = Path(directory) / "members" / f"{self.name}.npz"
        gram, cross, count = self.moments_
        np.savez(path, gram=gram, cross=cross, count=count)
        return {"file": str(path.relative_to(directory)), "penalty": self.penalty}

    @classmethod
    def load(cls, entry: Mapping[str, Any], directory: Path, pipeline: Any, threads: int) -> RidgeMember:
        with np.load(Path(directory) / entry["file"]) as stored:
            member = cls(entry["name"], entry["train_target"], entry["era_stride"], entry["penalty"])
            member.moments_ = (stored["gram"], stored["cross"], int(stored["count"]))
        member.params_ = member._solve()
        return member

    def continue_training(self, parts: Sequence[tuple[EraFrame, Sequence[str]]], settings: Any) -> dict[str, Any]:
        """Exact for ridge: the new eras' moments are added to the saved ones and the system solved again."""
        gram, cross, count = moments([(frame, frame.select_eras(eras)) for frame, eras in parts], self.train_target)
        old_gram, old_cross, old_count = self.moments_
        self.moments_ = (old_gram + gram, old_cross + cross, old_count + count)
        self.params_ = self._solve()
        return {"rows_added": count, "done": f"ridge solved again with {count} more rows"}

    def untrained(self, threads: int, processes: int = 1) -> RidgeMember:
        return RidgeMember(self.name, self.train_target, self.era_stride, self.penalty)

    def importance(self) -> None:
        return None

    def chosen(self) -> dict[str, Any]:
        return {"target": self.train_target, "era_stride": self.era_stride, "penalty": self.penalty}
