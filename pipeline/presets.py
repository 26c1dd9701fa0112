"""The members a build trains, by preset, and how a preset's entries become members.

Each entry is a typed `MemberEntry`; its `kind` names a class of `pipeline.members.KINDS`. A member
trains on its own target (the main one or an auxiliary one: labels only, never inputs) and is always
scored and chosen on the main target. Why each setting is what it is, with the figures behind it, is
in the README ("What a build does", "Figures").
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from pipeline.members import KINDS, Member, MemberContext, MemberEntry
from pipeline.models.lgbm import EXAMPLE_PARAMS, EXAMPLE_ROUNDS
from pipeline.targets import best_aux_target

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


def faster(params: Mapping[str, Any], factor: float) -> dict[str, Any]:
    """The same model with a `factor` times larger learning rate (and so ~factor times fewer trees)."""
    return dict(params) | {"learning_rate": params["learning_rate"] * factor}


# Neural members: whole eras per batch, early stopping on the newest 40 training eras (embargoed),
# auxiliary 20-day targets as extra outputs, the kept weights a moving average over steps
# (bench/tsmixer.py chose these settings; its docstring says on which eras).
NEURAL_TRAINING: dict[str, Any] = {
    "lr": 3e-3,
    "max_epochs": 12,
    "patience": 3,
    "eras_per_batch": 2,
    "n_valid_eras": 40,
    "ema_decay": 0.99,
}
MLP_MEMBER = MemberEntry("mlp", "mlp", NEURAL_TRAINING | {"hidden": (64, 64)})
# Correlation-cluster tokens of ~10 features, a higher learning rate than the MLP's, dropout 0.1, and
# the era-wise correlation term in the loss, with which it peaks after a few epochs (so 8, not 12).
TSMIXER_MEMBER = MemberEntry(
    "tsmixer_ext",
    "tsmixer",
    NEURAL_TRAINING
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
)

# Numerai's example model, on the raw features so that its figures are the example's.
EXAMPLE_MEMBER = MemberEntry("lgbm_example", "lightgbm", EXAMPLE_PARAMS, rounds=EXAMPLE_ROUNDS, era_stride=4, raw=True)
# The member others must beat on the CV to stay in the blend (`pipeline.blend.eligible_members`).
REFERENCE_MEMBER = EXAMPLE_MEMBER.name
# Members over feature subsets: the deep member on one half of Numerai's feature groups, the other
# half's named sets of features.json left out (features in no group stay in both). The halves are
# about equal in size on v5.2.
GROUP_HALVES = (
    ("constitution", "agility", "strength", "dexterity"),
    ("charisma", "wisdom", "serenity", "intelligence"),
)


def group_half_member(name: str, params: Mapping[str, Any], rounds: int, kept: int, era_stride: int) -> MemberEntry:
    """A deep member (`name`) on the feature groups of `GROUP_HALVES[kept]`, the other half left out."""
    return MemberEntry(name, "lightgbm", params, rounds=rounds, without=GROUP_HALVES[1 - kept], era_stride=era_stride)


def aux_member(name: str, params: Mapping[str, Any], rounds: int, horizon: int, era_stride: int) -> MemberEntry:
    """A member on the auxiliary target of `horizon` days that best predicts the main target."""
    return MemberEntry(name, "lightgbm", params, rounds=rounds, target="aux", horizon=horizon, era_stride=era_stride)


def searched_member(name: str, params: Mapping[str, Any], rounds: int, keep: int) -> MemberEntry:
    """LightGBM on the feature pipeline, its settings searched on the CV from `params` (its learning rate
    and trees stay); the best `keep` trials become members `name_1`, ... (`pipeline.members.lgbm_search`)."""
    return MemberEntry(name, "lightgbm", params, rounds=rounds, search=keep)


DEMO_DEEP = faster(DEEP_PARAMS, 5)


def benchmark_member(params: Mapping[str, Any], rounds: int, era_stride: int) -> MemberEntry:
    """LightGBM on the target made relative to Numerai's benchmark model (example-scripts'
    `residual_to_benchmark`, per era), with the benchmark's per-era rank as one more input
    (`pipeline.members.benchmark`). Left out on data without benchmark files; shipped, it makes the
    pickle take the live benchmark models as its second parameter."""
    settings = {"residual_proportion": 1.0, "benchmark_input": True}
    return MemberEntry(
        "lgbm_benchmark", "lightgbm_benchmark", dict(params) | settings, rounds=rounds, era_stride=era_stride
    )


# The neural members with their fits chained forward (the first fold from scratch, every later fit
# fine-tuned on the eras it has not seen: `pipeline.members.neural.NeuralMember`): about one whole fit
# per build instead of one per fold, holdout and refit (the demo's and standard's).
CHAINED_TSMIXER = replace(TSMIXER_MEMBER, params=TSMIXER_MEMBER.params | {"chain_epochs": 2})
CHAINED_MLP = replace(MLP_MEMBER, params=MLP_MEMBER.params | {"chain_epochs": 2})
# Standard's fixed LightGBM members train on every second era: the 20-day targets of neighbouring
# weekly eras share most of their window, which is why Numerai's example trains on every fourth (the
# search may still choose every era).
STANDARD_STRIDE = 2
# No fixed deep member beside a searched entry: the search's first trial is the entry's own settings
# (DEEP_PARAMS, every era) on the same folds, so a fixed one would train that model again; the search
# keeps its best three (four in `large`) instead of one fixed setting on two seeds.
PRESETS: dict[str, tuple[MemberEntry, ...]] = {
    "example": (EXAMPLE_MEMBER,),
    "demo": (
        EXAMPLE_MEMBER,
        searched_member("lgbm_gbdt", DEMO_DEEP, 400, 2),
        aux_member("lgbm_aux20", faster(EXAMPLE_PARAMS, 5), 400, 20, era_stride=4),
        CHAINED_MLP,
        CHAINED_TSMIXER,
        benchmark_member(faster(EXAMPLE_PARAMS, 5), 400, era_stride=4),
    ),
    "standard": (
        EXAMPLE_MEMBER,
        searched_member("lgbm_gbdt", DEEP_PARAMS, 2000, 3),
        group_half_member("lgbm_deep_a", DEEP_PARAMS, 2000, 0, STANDARD_STRIDE),
        group_half_member("lgbm_deep_b", DEEP_PARAMS, 2000, 1, STANDARD_STRIDE),
        aux_member("lgbm_aux20", EXAMPLE_PARAMS, EXAMPLE_ROUNDS, 20, era_stride=STANDARD_STRIDE),
        aux_member("lgbm_aux60", EXAMPLE_PARAMS, EXAMPLE_ROUNDS, 60, era_stride=STANDARD_STRIDE),
        CHAINED_MLP,
        CHAINED_TSMIXER,
        benchmark_member(DEEP_PARAMS, 2000, era_stride=STANDARD_STRIDE),
    ),
    "large": (
        EXAMPLE_MEMBER,
        MemberEntry("lgbm_large", "lightgbm", LARGE_PARAMS, rounds=20_000, era_stride=4),
        searched_member("lgbm_gbdt", DEEP_PARAMS, 4000, 4),
        group_half_member("lgbm_deep_a", DEEP_PARAMS, 4000, 0, era_stride=1),
        group_half_member("lgbm_deep_b", DEEP_PARAMS, 4000, 1, era_stride=1),
        aux_member("lgbm_aux20", DEEP_PARAMS, 4000, 20, era_stride=2),
        aux_member("lgbm_aux60", DEEP_PARAMS, 4000, 60, era_stride=2),
        MLP_MEMBER,
        TSMIXER_MEMBER,
        benchmark_member(DEEP_PARAMS, 4000, era_stride=1),
    ),
}
# Trials of each searched LightGBM entry of a preset (--gbdt-search-trials overrides). A count, not a
# time budget, so that the same data and seed give the same pickle on any machine.
SEARCH_TRIALS = {"example": 1, "demo": 8, "standard": 16, "large": 32}
# A quick model for the feature pipeline's choice, where only differences between configurations matter:
# deeper trees with more columns per tree, like the members that read the pipeline, at 10x the rate.
PROBE = {"params": faster(DEEP_PARAMS, 10), "rounds": 150, "era_stride": 4}


def preset_entries(preset: str, extra: Sequence[MemberEntry] = ()) -> tuple[MemberEntry, ...]:
    """A preset's entries followed by `extra` ones (a user's own members, `--member`)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}")
    return PRESETS[preset] + tuple(extra)


def make_members(
    entries: Sequence[MemberEntry], context: MemberContext, kinds: Mapping[str, type[Member]] = KINDS
) -> list[Member]:
    """The members of `entries` that this data supports (an aux member needs an auxiliary target).

    The context's `num_boost_round`, when given, caps every member's trees; its `era_stride` overrides
    every member's. Each member's seed is the build's seed plus its position in `entries`.
    """
    members = []
    for k, entry in enumerate(entries):
        if entry.kind not in kinds:
            raise ValueError(f"member {entry.name!r} has kind {entry.kind!r}; known kinds: {sorted(kinds)}")
        if entry.target == "main":
            target = context.main_target
        else:
            target = best_aux_target(context.frame, context.main_target, entry.horizon_suffix)
        if target is None:
            continue
        member = kinds[entry.kind].from_entry(entry, target, context, context.seed + k)
        if member is not None:
            members.append(member)
    return members


def member_targets(
    entries: Sequence[MemberEntry], available: Sequence[str], main: str, kinds: Mapping[str, type[Member]] = KINDS
) -> list[str]:
    """Target columns to load for training: the main one and the auxiliary horizons the entries use
    (neural members learn the 20-day auxiliary targets as extra outputs)."""
    horizons = {entry.horizon_suffix for entry in entries if entry.target == "aux"}
    if any(getattr(kinds.get(entry.kind), "learns_aux_targets", False) for entry in entries):
        horizons.add("_20")
    return [main] + [t for t in available if t != main and any(t.endswith(h) for h in horizons)]
