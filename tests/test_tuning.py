"""The bounded random search: trials drawn without replacement, the incumbent first, the budget kept."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from pipeline.tuning import best_settings, random_search

SPACE = {"a": [1, 2, 3], "b": ["x", "y"]}


def score(settings: dict) -> tuple[pd.Series, dict]:
    """Higher `a` is better; "y" adds a little; per-era scores with some spread so Sharpe is finite."""
    level = settings["a"] / 100 + (0.001 if settings["b"] == "y" else 0.0)
    return pd.Series([level - 0.01, level, level + 0.01], index=["e1", "e2", "e3"]), {"calls": 1}


def test_trials_are_distinct_the_incumbent_first_and_the_best_marked() -> None:
    table = random_search(score, SPACE, n_trials=6, seed=3, first={"a": 1, "b": "x", "unused": 0})
    assert len(table) == 6 and len(table[["a", "b"]].drop_duplicates()) == 6
    assert table.loc[table["trial"] == 0, ["a", "b"]].iloc[0].tolist() == [1, "x"]
    assert table["cv_corr_mean"].is_monotonic_decreasing and table["best"].tolist() == [True] + [False] * 5
    assert best_settings(table, SPACE) == {"a": 3, "b": "y"} and table["calls"].eq(1).all()
    same_seed = [random_search(score, SPACE, n_trials=3, seed=3).drop(columns="seconds") for _ in range(2)]
    assert same_seed[0].equals(same_seed[1])


def test_the_budget_stops_trials_that_would_overrun_it() -> None:
    def slow(settings: dict) -> tuple[pd.Series, dict]:
        time.sleep(0.05)
        return score(settings)

    assert len(random_search(slow, SPACE, n_trials=6, budget_s=0.0)) == 1
    assert len(random_search(slow, SPACE, n_trials=6, budget_s=0.12)) == 2


def test_bad_arguments_are_value_errors() -> None:
    with pytest.raises(ValueError, match="n_trials must be at least 1"):
        random_search(score, SPACE, n_trials=0)
    with pytest.raises(ValueError, match="budget_s must be non-negative"):
        random_search(score, SPACE, n_trials=1, budget_s=-1)
    with pytest.raises(ValueError, match=r"no value for \['b'\]"):
        random_search(score, {"a": [1], "b": []}, n_trials=1)
