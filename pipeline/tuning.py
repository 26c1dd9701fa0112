"""Bounded random search over a grid of settings, each trial scored by per-era CV CORR.

Plain random search, not Optuna: the budgets here are a handful of trials (each one trains a
neural network per CV fold), where a model-based sampler such as Optuna's TPE starts with random
trials anyway (10 by default) and has nothing yet to model; random search also needs no further
dependency, and a seed gives the same trials on every machine.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from pipeline.metrics import summarize

# A trial's settings -> (its per-era CV CORR, anything worth keeping in the table, e.g. epochs).
Evaluate = Callable[[dict[str, Any]], tuple[pd.Series, dict[str, Any]]]


def random_search(
    evaluate: Evaluate,
    space: Mapping[str, Sequence[Any]],
    n_trials: int,
    budget_s: float | None = None,
    seed: int = 0,
    first: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Score up to `n_trials` settings drawn without replacement from the grid `space`.

    `first`, when given, is trial 0 (the incumbent settings), so a search only moves away from them
    when a drawn trial beats them on the CV. The first trial always runs; a later one starts only if
    the time spent plus the mean trial time so far stays within `budget_s`. Returns one row per trial
    run: its number, settings, CV CORR mean, Sharpe and eras, the extras `evaluate` returned and its
    seconds, best CV CORR mean first, with `best` marking that row.
    """
    if n_trials < 1:
        raise ValueError(f"n_trials must be at least 1, got {n_trials}")
    if budget_s is not None and budget_s < 0:
        raise ValueError(f"budget_s must be non-negative seconds, got {budget_s}")
    space = {name: list(values) for name, values in space.items()}
    empty = [name for name, values in space.items() if not values]
    if empty:
        raise ValueError(f"the search space gives no value for {empty}")
    combos = [dict(zip(space, values, strict=False)) for values in itertools.product(*space.values())]
    if first is not None:
        first = {name: first[name] for name in space}
        combos = [first] + [c for c in combos if c != first]
        drawn = np.random.default_rng(seed).choice(
            np.arange(1, len(combos)), size=min(n_trials, len(combos)) - 1, replace=False
        )
        picks = [0, *drawn.tolist()]
    else:
        picks = np.random.default_rng(seed).choice(len(combos), size=min(n_trials, len(combos)), replace=False).tolist()
    start, rows = time.perf_counter(), []
    for trial, pick in enumerate(picks):
        spent = time.perf_counter() - start
        if budget_s is not None and rows and spent + spent / len(rows) > budget_s:
            break
        t0 = time.perf_counter()
        per_era, extras = evaluate(dict(combos[pick]))
        summary = summarize(per_era)
        rows.append(
            {
                "trial": trial,
                **combos[pick],
                "cv_corr_mean": summary["mean"],
                "cv_sharpe": summary["sharpe"],
                "cv_eras": summary["eras"],
                **extras,
                "seconds": time.perf_counter() - t0,
            }
        )
    table = pd.DataFrame(rows).sort_values(["cv_corr_mean", "trial"], ascending=[False, True], ignore_index=True)
    table["best"] = table.index == 0
    return table


def best_settings(table: pd.DataFrame, space: Mapping[str, Sequence[Any]]) -> dict[str, Any]:
    """The settings of a `random_search` table's best trial, as plain Python values."""
    row = table.loc[table["best"]].iloc[0]
    return {name: row[name].item() if isinstance(row[name], np.generic) else row[name] for name in space}
