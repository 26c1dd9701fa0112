"""Era-wise validation without leakage: embargoes counted in eras between training and scoring.

Numerai's targets look 20 (or 60) trading days ahead, so the eras right after the last training
era share target windows with it; they are embargoed, never scored.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

import numpy as np

logger = logging.getLogger(__name__)

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


def largest_embargo(train_eras: Sequence[str], validation_eras: Sequence[str]) -> int:
    """The largest embargo with room for the build's CV (a fold trains on the older half of the training
    eras and scores at least one era after the embargo) and for its holdout (at least one validation
    era after the embargo); -1 when even no embargo leaves room."""
    train = np.unique(np.asarray(train_eras, dtype=object))
    after = np.unique(np.asarray(validation_eras, dtype=object))
    after = after[after > train[-1]] if len(train) else after
    return min(len(train) - max(1, len(train) // 2) - 1, len(after) - 1)


def check_embargo(train_eras: Sequence[str], validation_eras: Sequence[str], embargo: int) -> None:
    """Fail at once, with advice that works, when the eras leave no room for the CV and the holdout."""
    largest = largest_embargo(train_eras, validation_eras)
    if embargo <= largest:
        return
    n_train, n_validation = len(np.unique(np.asarray(train_eras))), len(np.unique(np.asarray(validation_eras)))
    fix = f"use --embargo {largest} or less" if largest >= 0 else "use more data"
    raise ValueError(
        f"{n_train} training eras and {n_validation} validation eras are too few for an embargo of {embargo} eras: "
        f"the CV trains each fold on the older half of the training eras, skips the embargo and scores at least "
        f"one era, and the holdout scores at least one validation era after the embargo; {fix} (the embargo "
        "guards against overlapping targets: 8 eras for 20-day targets, 16 for 60-day ones), or use more data"
    )


def walk_forward_folds(
    eras: Sequence[str], n_splits: int, embargo: int, max_train_eras: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The build's CV folds: forward-chained over the newer half of the training eras, expanding (or
    rolling, with `max_train_eras`); fewer folds (logged) when eras are few, down to one.

    A fold needs the older half of the eras to train on, the embargo, and at least one era to score, so
    `n` eras hold a fold only when ceil(n / 2) > embargo; otherwise the error names what would work.
    """
    eras = np.unique(np.asarray(eras, dtype=object))
    min_train = max(1, len(eras) // 2)
    room = len(eras) - min_train - embargo
    if room < 1:
        largest = len(eras) - min_train - 1
        fix = f"use --embargo {largest} or less" if largest >= 0 else "add training eras"
        raise ValueError(
            f"{len(eras)} training eras are too few for a CV with an embargo of {embargo} eras: a fold trains on "
            f"the older half ({min_train} era(s)), skips the embargo and scores at least one era, so it needs at "
            f"least {max(2, 2 * embargo + 1)} training eras; {fix} (the embargo guards against "
            "overlapping targets: 8 eras for 20-day targets, 16 for 60-day ones), or use more data"
        )
    possible = min(n_splits, room)
    if possible < n_splits:
        logger.warning("only %d training eras: %d CV fold(s) instead of %d", len(eras), possible, n_splits)
    splitter = EraWalkForward(
        n_splits=possible, embargo=embargo, min_train_eras=min_train, max_train_eras=max_train_eras
    )
    return splitter.era_folds(eras)
