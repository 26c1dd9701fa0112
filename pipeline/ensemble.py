"""The members a build trains, by preset: LightGBM over parameters and targets.

A member trains on its own target (the main one or an auxiliary one: labels only, never inputs)
and is always scored and chosen on the main target.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.data import EraFrame
from pipeline.models.lgbm import EXAMPLE_PARAMS, EXAMPLE_ROUNDS, LGBMMember

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

PRESETS: dict[str, list[dict[str, Any]]] = {
    "example": [{"name": "lgbm_example", "params": EXAMPLE_PARAMS, "target": "main"}],
    "demo": [
        {"name": "lgbm_example", "params": EXAMPLE_PARAMS, "target": "main"},
        {"name": "lgbm_deep", "params": DEEP_PARAMS, "target": "main"},
        {"name": "lgbm_aux20", "params": EXAMPLE_PARAMS, "target": "aux_20"},
    ],
}


@dataclass
class MemberSpec:
    """One member to train: its estimator and the target column it learns."""

    name: str
    estimator: LGBMMember
    train_target: str


def best_aux_target(frame: EraFrame, main: str, horizon: str = "_20") -> str | None:
    """The auxiliary target of a horizon most correlated with the main target over training eras."""
    candidates = [c for c in frame.targets.columns if c != main and c.endswith(horizon) and not frame.targets[c].equals(frame.targets[main])]
    if not candidates:
        return None
    corr = frame.targets[candidates].corrwith(frame.targets[main])
    return str(corr.idxmax()) if corr.notna().any() else None


def member_specs(
    preset: str, frame: EraFrame, main: str, num_boost_round: int = EXAMPLE_ROUNDS, seed: int = 0, threads: int = 0
) -> list[MemberSpec]:
    """The members of a preset that this data supports (an aux member needs an auxiliary target)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    specs = []
    for k, entry in enumerate(PRESETS[preset]):
        target = main if entry["target"] == "main" else best_aux_target(frame, main, entry["target"][3:])
        if target is None:
            continue
        estimator = LGBMMember(dict(entry["params"]), num_boost_round, seed=seed + k, num_threads=threads)
        specs.append(MemberSpec(entry["name"], estimator, target))
    return specs


def member_targets(preset: str, available: list[str], main: str) -> list[str]:
    """Target columns to load for training: the main one and the auxiliary horizons a preset uses."""
    horizons = {entry["target"][3:] for entry in PRESETS.get(preset, []) if entry["target"] != "main"}
    return [main] + [t for t in available if t != main and any(t.endswith(h) for h in horizons)]


def oof_matrix(results: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions of every member as rows x members, on the rows every member scored."""
    stacked = np.column_stack([r.oof for r in results.values()])
    scored = ~np.isnan(stacked).any(axis=1)
    return stacked[scored], scored
