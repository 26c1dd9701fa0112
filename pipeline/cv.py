"""Era-wise validation without leakage: embargoes counted in eras between training and scoring.

Numerai's targets look 20 (or 60) trading days ahead, so the eras right after the last training
era share target windows with it; they are embargoed, never scored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

EMBARGO_20D = 8
EMBARGO_60D = 16


def default_embargo(targets: Sequence[str]) -> int:
    """Eras to embargo: 16 when any 60-day target is trained on, else 8 (Numerai's own purge)."""
    return EMBARGO_60D if any(str(t).endswith("_60") for t in targets) else EMBARGO_20D


def holdout_eras(train_eras: Sequence[str], validation_eras: Sequence[str], embargo: int) -> np.ndarray:
    """Validation eras that lie more than `embargo` eras after the last training era.

    Eras are ordered as Numerai orders them, as zero-padded strings; the embargo counts every era
    that exists in either split.
    """
    if embargo < 0:
        raise ValueError(f"embargo must be a non-negative number of eras, got {embargo}")
    train_eras = np.unique(np.asarray(train_eras, dtype=object))
    validation_eras = np.unique(np.asarray(validation_eras, dtype=object))
    if len(train_eras) == 0:
        raise ValueError("no training eras: the training data has no labelled rows")
    timeline = np.unique(np.concatenate([train_eras, validation_eras]))
    first_allowed = int(np.searchsorted(timeline, train_eras[-1], side="right")) + embargo
    allowed = set(timeline[first_allowed:])
    kept = np.asarray([era for era in validation_eras if era in allowed], dtype=object)
    if len(kept) == 0:
        raise ValueError(
            f"no validation era lies more than {embargo} eras after the last training era "
            f"{train_eras[-1]!r} (validation eras: {validation_eras[0] if len(validation_eras) else 'none'}.."
            f"{validation_eras[-1] if len(validation_eras) else 'none'}); use a smaller --embargo or more data"
        )
    return kept


class EraWalkForward:
    """Forward-chained era folds: train on eras before each validation window, minus an embargo.

    Follows scikit-learn's splitter protocol, `split(X, y=None, groups=eras)`, yielding row indices.
    The last `n_splits * validation_eras` eras form `n_splits` consecutive validation windows of
    whole eras, each scored once; each fold trains on every era that ends more than `embargo` eras
    before its window (expanding), or on the newest `max_train_eras` of them (rolling). Eras are
    ordered as Numerai's zero-padded strings; rows are never shuffled.
    """

    def __init__(
        self,
        n_splits: int = 4,
        embargo: int = EMBARGO_20D,
        validation_eras: int | None = None,
        min_train_eras: int = 20,
        max_train_eras: int | None = None,
    ):
        self.n_splits = n_splits
        self.embargo = embargo
        self.validation_eras = validation_eras
        self.min_train_eras = min_train_eras
        self.max_train_eras = max_train_eras

    def get_n_splits(self, X: object = None, y: object = None, groups: object = None) -> int:
        return self.n_splits

    def era_folds(self, eras: Sequence[str]) -> list[tuple[np.ndarray, np.ndarray]]:
        """(train eras, validation eras) of each fold, oldest fold first."""
        if self.n_splits < 1:
            raise ValueError(f"n_splits must be at least 1, got {self.n_splits}")
        if self.embargo < 0:
            raise ValueError(f"embargo must be a non-negative number of eras, got {self.embargo}")
        timeline = np.unique(np.asarray(eras, dtype=object))
        room = len(timeline) - self.min_train_eras - self.embargo
        width = self.validation_eras or room // self.n_splits
        if width < 1 or self.n_splits * width > room:
            raise ValueError(
                f"{len(timeline)} eras are too few for {self.n_splits} folds of "
                f"{self.validation_eras or 'at least 1'} validation era(s) with an embargo of {self.embargo} "
                f"and at least {self.min_train_eras} training eras; use fewer folds or a smaller embargo"
            )
        first_val = len(timeline) - self.n_splits * width
        folds = []
        for k in range(self.n_splits):
            start = first_val + k * width
            train_end = start - self.embargo
            train_start = 0 if self.max_train_eras is None else max(0, train_end - self.max_train_eras)
            folds.append((timeline[train_start:train_end], timeline[start : start + width]))
        return folds

    def split(
        self, X: object, y: object = None, groups: Sequence[str] | None = None
    ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Row indices (train, validation) of each fold; `groups` holds each row's era."""
        if groups is None:
            raise ValueError("EraWalkForward.split needs groups=eras, one era per row")
        eras = np.asarray(groups, dtype=object)
        for train_eras, val_eras in self.era_folds(eras):
            yield np.flatnonzero(np.isin(eras, train_eras)), np.flatnonzero(np.isin(eras, val_eras))
