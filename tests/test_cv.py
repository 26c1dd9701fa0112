from __future__ import annotations

import numpy as np
import pytest

from pipeline.cv import EraWalkForward, default_embargo, holdout_eras


def eras(first: int, last: int) -> list[str]:
    return [f"{e:04d}" for e in range(first, last + 1)]


def test_holdout_skips_the_embargo_after_the_last_training_era() -> None:
    kept = holdout_eras(eras(1, 100), eras(101, 130), embargo=8)
    assert list(kept) == eras(109, 130)


def test_holdout_handles_training_eras_that_reach_into_validation() -> None:
    kept = holdout_eras(eras(1, 105), eras(101, 130), embargo=4)
    assert list(kept) == eras(110, 130)


def test_holdout_raises_when_nothing_is_left() -> None:
    with pytest.raises(ValueError, match="no validation era lies more than 8 eras after"):
        holdout_eras(eras(1, 10), eras(11, 15), embargo=8)


def test_default_embargo_depends_on_the_horizon() -> None:
    assert default_embargo(["target", "target_cyrusd_20"]) == 8
    assert default_embargo(["target", "target_cyrusd_60"]) == 16
    assert np.asarray(holdout_eras(eras(1, 5), eras(6, 7), 0)).tolist() == eras(6, 7)


@pytest.mark.parametrize("max_train_eras", [None, 30])
@pytest.mark.parametrize("embargo", [8, 16])
def test_walk_forward_never_trains_within_the_embargo_of_validation(embargo: int, max_train_eras: int | None) -> None:
    row_eras = np.repeat(eras(1, 120), 3)
    splitter = EraWalkForward(n_splits=4, embargo=embargo, max_train_eras=max_train_eras)
    folds = list(splitter.split(np.zeros(len(row_eras)), groups=row_eras))
    assert len(folds) == splitter.get_n_splits() == 4
    covered = []
    previous_start = None
    for train_idx, val_idx in folds:
        train_eras = sorted(set(row_eras[train_idx]))
        val_eras = sorted(set(row_eras[val_idx]))
        assert int(val_eras[0]) - int(train_eras[-1]) > embargo, "a train era lies within the embargo"
        assert not set(train_eras) & set(val_eras)
        if max_train_eras is not None:
            assert len(train_eras) <= max_train_eras
        assert np.array_equal(val_idx, np.flatnonzero(np.isin(row_eras, val_eras))), "whole eras only"
        assert previous_start is None or val_eras[0] > previous_start, "folds are ordered"
        previous_start = val_eras[0]
        covered += val_eras
    assert len(covered) == len(set(covered)), "each validation era is scored once"
    assert covered == eras(int(covered[0]), 120), "the validation windows tile the newest eras"


def test_walk_forward_orders_eras_as_strings_and_never_shuffles() -> None:
    row_eras = np.array(eras(1, 60))[::-1].repeat(2)
    (train_idx, val_idx), *_ = EraWalkForward(n_splits=2, embargo=4, min_train_eras=10).split(None, groups=row_eras)
    assert np.all(np.diff(train_idx) > 0) and max(row_eras[train_idx]) < min(row_eras[val_idx])


def test_walk_forward_explains_data_too_short() -> None:
    with pytest.raises(ValueError, match="30 eras are too few for 4 folds"):
        EraWalkForward(n_splits=4, embargo=8, min_train_eras=20).era_folds(eras(1, 30))
    with pytest.raises(ValueError, match="needs groups=eras"):
        next(EraWalkForward().split(np.zeros(3)))
