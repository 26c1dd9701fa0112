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
# Numerai's published "standard large" settings: 20,000 trees at learning rate 0.001.
LARGE_PARAMS: dict[str, Any] = EXAMPLE_PARAMS | {"learning_rate": 0.001, "max_depth": 6, "num_leaves": 64}


def faster(params: dict[str, Any], factor: float) -> dict[str, Any]:
    """The same model with a `factor` times larger learning rate (and so ~factor times fewer trees)."""
    return params | {"learning_rate": params["learning_rate"] * factor}


# Each member: name, LightGBM parameters, the most trees CV may choose, its training target ("main",
# or "aux_20" / "aux_60": the auxiliary target of that horizon most correlated with the main), and
# the era stride it trains on (Numerai's example takes every 4th era; others may take every era).
EXAMPLE_MEMBER = {"name": "lgbm_example", "params": EXAMPLE_PARAMS, "rounds": EXAMPLE_ROUNDS, "target": "main", "era_stride": 4}
PRESETS: dict[str, list[dict[str, Any]]] = {
    "example": [EXAMPLE_MEMBER],
    "demo": [
        EXAMPLE_MEMBER,
        {"name": "lgbm_deep", "params": faster(DEEP_PARAMS, 10), "rounds": 200, "target": "main", "era_stride": 1},
        {"name": "lgbm_aux20", "params": faster(EXAMPLE_PARAMS, 5), "rounds": 400, "target": "aux_20", "era_stride": 4},
    ],
    "standard": [
        EXAMPLE_MEMBER,
        {"name": "lgbm_deep", "params": DEEP_PARAMS, "rounds": 2000, "target": "main", "era_stride": 1},
        {"name": "lgbm_aux20", "params": EXAMPLE_PARAMS, "rounds": EXAMPLE_ROUNDS, "target": "aux_20", "era_stride": 2},
        {"name": "lgbm_aux60", "params": EXAMPLE_PARAMS, "rounds": EXAMPLE_ROUNDS, "target": "aux_60", "era_stride": 2},
    ],
    "large": [
        EXAMPLE_MEMBER,
        {"name": "lgbm_large", "params": LARGE_PARAMS, "rounds": 20_000, "target": "main", "era_stride": 4},
        {"name": "lgbm_deep", "params": DEEP_PARAMS, "rounds": 4000, "target": "main", "era_stride": 1},
        {"name": "lgbm_aux20", "params": DEEP_PARAMS, "rounds": 4000, "target": "aux_20", "era_stride": 2},
        {"name": "lgbm_aux60", "params": DEEP_PARAMS, "rounds": 4000, "target": "aux_60", "era_stride": 2},
    ],
}
# A quick model for ablations, where only the difference between two variants matters.
PROBE = {"params": faster(EXAMPLE_PARAMS, 5), "rounds": 300, "era_stride": 4}


@dataclass
class MemberSpec:
    """One member to train: its estimator, the target column it learns and the eras it trains on."""

    name: str
    estimator: LGBMMember
    train_target: str
    era_stride: int


def best_aux_target(frame: EraFrame, main: str, horizon: str = "_20") -> str | None:
    """The auxiliary target of a horizon most correlated with the main target over training eras."""
    candidates = [c for c in frame.targets.columns if c != main and c.endswith(horizon) and not frame.targets[c].equals(frame.targets[main])]
    if not candidates:
        return None
    corr = frame.targets[candidates].corrwith(frame.targets[main])
    return str(corr.idxmax()) if corr.notna().any() else None


def member_specs(
    preset: str,
    frame: EraFrame,
    main: str,
    num_boost_round: int | None = None,
    era_stride: int | None = None,
    seed: int = 0,
    threads: int = 0,
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
        rounds = min(entry["rounds"], num_boost_round or entry["rounds"])
        estimator = LGBMMember(dict(entry["params"]), rounds, seed=seed + k, num_threads=threads)
        specs.append(MemberSpec(entry["name"], estimator, target, era_stride or entry["era_stride"]))
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
