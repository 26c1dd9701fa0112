"""The physics of a synthetic Numerai world (`WorldSpec`) and a named family of worlds (`WORLDS`).

`pipeline.synthetic` writes a world; this module says what is in it. Every era's main signal is

    signal_e = linear_weight      * std(w_lin(e) . u)
             + nonlinear_weight   * std(bin shapes and squared cluster means)
             + interaction_weight * m_int(e) * std(feature-pair and cluster-pair products)
             + regime_weight      * m_reg(e) * std(w_regime . u)

on the observed bins u of the era (std: standardized within the era), and `target` bins
`signal + noise_sd * noise` per era. `oracle` = E[target | features] = 0.25 * sum_c
Phi((signal - t_c) / noise_sd) over the era's class thresholds t_c. `learnable` is the same
expression with `signal_e` replaced by the signal a model trained on the train eras (1..T, T =
n_train_eras) can know: every era-varying multiplier at its mean over the train eras, every drifting
weight frozen at its value in era T. It is computed for every era, train eras included, but is the
ceiling of the validation and live eras, which such a model never saw. It is the ceiling of a model
that pools the train eras: one that tracks the newest regime (Markov state or block) can beat it on
the first validation eras, where the regime of the last train eras still holds. Per knob:

- `regimes` (the process behind m_int and m_reg):
  - "markov" (the default world's): a slow 3-state Markov chain over eras; m_int = 1.0/1.3/0.5 and
    m_reg = 1.0/0.2/-1.0 in its states. learnable: m_int and m_reg at their means over the train
    eras' states, so on the default world `learnable` differs from `oracle` wherever the state is
    not the average one (its oracle is unchanged).
  - "blocks": m_int = 1; m_reg = +1 or -1, flipping between blocks of `regime_block_eras` eras
    (the first block starts at a random phase and sign), or, with `regime_block_random`, of lengths
    drawn uniformly within half to one and a half times that. The share of the signal's variance
    that flips is about regime_weight**2 / (sum of the four weights squared). learnable: m_reg at
    its mean over the train eras (near 0 when the train eras hold as many + as - eras), so the
    flipping part is, correctly, almost absent from the ceiling.
  - "none": m_int = m_reg = 1 in every era; learnable == oracle (without drift).
- `linear_weight`, `nonlinear_weight`, `interaction_weight`, `regime_weight`: the four weights
  above (the default world's 0.25, 0.4, 0.8, 0.5). No era dependence of their own.
- `drift_share` of the features (drawn at random) drift: with `drift_weights` > 0 their linear
  weights w_lin(e) follow Gaussian random walks from their drawn values whose change over 100 eras
  has sd `drift_weights` (the linear weights themselves have sd about 0.7); with `drift_loadings`
  > 0 their loadings on their cluster factor (0.35..0.85) walk the same way with that sd per 100
  eras, clipped to 0.05..0.95. learnable: w_lin frozen at era T (a random walk's best forecast from
  the past); loadings change the joint distribution of the features but not E[target | features]
  (the signal is a function of the observed bins), so they leave learnable == oracle.
- `signal_groups`: when given, every signal term (linear, nonlinear, pairs, regime weights, and the
  auxiliary targets' own signal) is drawn over the features of these Numerai groups only (pairs
  across clusters), and the other groups carry no signal; groups are independent of each other, so
  their features are uncorrelated with the oracle. No era dependence of its own.
- `noise_sd` sets the signal level (higher: weaker); `n_validation_eras` the validation length.
- `data_version` "v5.3" (the default, Numerai's current data) adds the feature set `quantum`, the
  newest 807/2748 of the features (the highest-numbered), to features.json and names the benchmark
  columns `v53_lgbm_ender20`/`_60`; "v5.2" has no `quantum` and `v52_...` names. The train,
  validation and live files are the same for both.

New knobs draw their random numbers from their own generators (`default_rng([seed, 3, k])`), so a
spec with the default physics writes the default world's bytes. The family, each of 240 features,
~1,200 rows per era and 300 eras (240 train) unless said, and a seed of its own except `default`:

- `default`: the design world (the project's settings were tuned on it); Markov regimes.
- `regimes`: 30 % of the signal's variance flips sign in blocks of 40 eras; no Markov chain.
- `interactions`: pairs (0.9) and nonlinear terms (0.6) carry ~97 % of the signal; linear 0.2.
- `drift`: a quarter of the features drift in weight (sd 2.0 per 100 eras) and loading (0.2),
  on a mostly linear signal (linear 0.7, nonlinear and pairs 0.3 each).
- `concentrated`: all signal in the groups wisdom and serenity (46 of 240 features); the demo
  preset's second group half holds both, its first none.
- `numerai_level`: the default physics at Numerai's signal level (noise_sd 18 instead of 10: the
  published example model's validation CORR is 0.012-0.02 on all features, as on real v5.2's
  0.0126); 150 validation eras (390 eras in all, 240 train) so that a mean CORR of ~0.015 is
  resolved (its standard error over 138 scored eras is ~0.0025, against ~0.004 over 48).
- `mixed`: blocks of random length (20..60 eras) flipping 23 % of the signal's variance, strong pairs
  and nonlinear terms, a quarter of the features drifting (weights 1.0, loadings 0.2 per 100 eras);
  like the "foreign" world of issue 17.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

# Numerai's feature groups and their sizes in v5.2 "all"; our groups are scaled to these proportions.
FEATURE_GROUPS: dict[str, int] = {
    "constitution": 335,
    "charisma": 290,
    "agility": 145,
    "wisdom": 140,
    "strength": 135,
    "serenity": 95,
    "dexterity": 51,
    "intelligence": 35,
}
# Numerai's target names; "ender" is the main target (`target` == `target_ender_20`).
TARGET_NAMES: tuple[str, ...] = (
    "ender",
    "agnes",
    "alpha",
    "bravo",
    "caroline",
    "charlie",
    "claudia",
    "cyrusd",
    "delta",
    "echo",
    "jasper",
    "jeremy",
    "ralph",
    "rowan",
    "sam",
    "teager2b",
    "tyler",
    "victor",
    "waldo",
    "xerxes",
)
DATA_VERSIONS: dict[str, tuple[str, str]] = {
    "v5.2": ("v52_lgbm_ender20", "v52_lgbm_ender60"),
    "v5.3": ("v53_lgbm_ender20", "v53_lgbm_ender60"),
}
# v5.3's `quantum` set: its 807 newest of 2,748 features.
QUANTUM_SHARE = 807 / 2748
REGIME_PROCESSES = ("markov", "blocks", "none")


def group_sizes(n_features: int) -> dict[str, int]:
    """Numerai's group proportions scaled to n_features (largest remainder, every group >= 1)."""
    total = sum(FEATURE_GROUPS.values())
    raw = np.array([n_features * size / total for size in FEATURE_GROUPS.values()])
    sizes = np.maximum(np.floor(raw).astype(int), 1)
    order = np.argsort(-(raw - np.floor(raw)), kind="stable")
    i = 0
    while sizes.sum() < n_features:
        sizes[order[i % len(order)]] += 1
        i += 1
    while sizes.sum() > n_features:
        sizes[int(np.argmax(sizes))] -= 1
    return dict(zip(FEATURE_GROUPS, sizes.tolist(), strict=False))


@dataclass(frozen=True)
class WorldSpec:
    """Size, seed and physics of a synthetic world; every field maps onto a CLI option of
    `python -m pipeline.synthetic` (the module docstring defines each knob and its `learnable`)."""

    n_eras: int = 300  # labelled + unlabelled eras of train and validation (--eras)
    n_validation_eras: int = 60  # the newest eras form validation (--validation-eras)
    n_unlabelled_eras: int = 4  # newest validation eras with all targets NaN (--unlabelled-eras)
    rows_per_era: int = 1200  # mean rows per era, +-10 % per era (--rows)
    live_rows: int = 1600  # rows of the live era (--live-rows)
    n_features: int = 240  # (--features)
    n_target_names: int = 8  # target names incl. ender, each with _20 and _60 (--target-names)
    noise_sd: float = 10.0  # target noise relative to a unit-variance signal (--noise-sd)
    seed: int = 0  # (--seed)
    linear_weight: float = 0.25  # (--linear-weight)
    nonlinear_weight: float = 0.4  # (--nonlinear-weight)
    interaction_weight: float = 0.8  # (--interaction-weight)
    regime_weight: float = 0.5  # (--regime-weight)
    regimes: str = "markov"  # markov, blocks or none (--regimes)
    regime_block_eras: int = 40  # (--regime-block-eras)
    regime_block_random: bool = False  # (--regime-block-random)
    drift_share: float = 0.0  # (--drift-share)
    drift_weights: float = 1.0  # sd of a drifting linear weight's change over 100 eras (--drift-weights)
    drift_loadings: float = 0.0  # sd of a drifting loading's change over 100 eras (--drift-loadings)
    signal_groups: tuple[str, ...] = ()  # () = every group (--signal-groups)
    data_version: str = "v5.3"  # (--data-version)

    def __post_init__(self) -> None:
        for ok, message in self._size_checks() + self._physics_checks():
            if not ok:
                raise ValueError(message)

    def _size_checks(self) -> list[tuple[bool, str]]:
        return [
            (self.n_eras >= 4, "n_eras (--eras) must be at least 4"),
            (self.n_validation_eras >= 1, "n_validation_eras (--validation-eras) must be at least 1"),
            (
                self.n_validation_eras <= self.n_eras - 2,
                "n_validation_eras (--validation-eras) must leave at least 2 train eras of --eras",
            ),
            (
                0 <= self.n_unlabelled_eras < self.n_validation_eras,
                "n_unlabelled_eras (--unlabelled-eras) must be >= 0 and below --validation-eras",
            ),
            (50 <= self.rows_per_era <= 10_000_000, "rows_per_era (--rows) must be within 50..10,000,000"),
            (50 <= self.live_rows <= 10_000_000, "live_rows (--live-rows) must be within 50..10,000,000"),
            (self.n_features >= 16, "n_features (--features) must be at least 16"),
            (
                1 <= self.n_target_names <= len(TARGET_NAMES),
                f"n_target_names (--target-names) must be within 1..{len(TARGET_NAMES)}",
            ),
            (self.noise_sd > 0, "noise_sd (--noise-sd) must be positive"),
            (self.seed >= 0, "seed (--seed) must be non-negative"),
            (self.n_eras + 1 < 10_000, "n_eras (--eras) must stay below 9999 (4-digit era names)"),
        ]

    def _physics_checks(self) -> list[tuple[bool, str]]:
        weights = (self.linear_weight, self.nonlinear_weight, self.interaction_weight, self.regime_weight)
        unknown = sorted(set(self.signal_groups) - set(FEATURE_GROUPS))
        sizes = group_sizes(self.n_features) if self.n_features >= 16 else {}
        return [
            (
                min(weights) >= 0 and max(weights) > 0,
                "--linear-weight, --nonlinear-weight, --interaction-weight and --regime-weight must be >= 0, "
                "at least one positive",
            ),
            (self.regimes in REGIME_PROCESSES, f"regimes (--regimes) must be one of {', '.join(REGIME_PROCESSES)}"),
            (self.regime_block_eras >= 1, "regime_block_eras (--regime-block-eras) must be at least 1"),
            (0 <= self.drift_share <= 1, "drift_share (--drift-share) must be within 0..1"),
            (
                self.drift_weights >= 0 and self.drift_loadings >= 0,
                "--drift-weights and --drift-loadings must be >= 0",
            ),
            (
                not unknown,
                f"signal_groups (--signal-groups): unknown group(s) {unknown}; expected among {list(FEATURE_GROUPS)}",
            ),
            (
                len(set(self.signal_groups)) == len(self.signal_groups),
                "signal_groups (--signal-groups) must not repeat a group",
            ),
            (
                unknown or not self.signal_groups or sum(sizes.get(g, 0) for g in self.signal_groups) >= 4,
                "signal_groups (--signal-groups) must hold at least 4 features at this --features",
            ),
            (
                self.data_version in DATA_VERSIONS,
                f"data_version (--data-version) must be one of {', '.join(DATA_VERSIONS)}",
            ),
        ]

    @property
    def n_train_eras(self) -> int:
        return self.n_eras - self.n_validation_eras

    @property
    def mix(self) -> tuple[float, float, float, float]:
        """Weights of the linear, nonlinear, interaction and regime parts of the main signal."""
        return (self.linear_weight, self.nonlinear_weight, self.interaction_weight, self.regime_weight)

    @property
    def benchmark_columns(self) -> tuple[str, str]:
        return DATA_VERSIONS[self.data_version]


DEFAULT_WORLD = WorldSpec()

WORLDS: dict[str, WorldSpec] = {
    "default": DEFAULT_WORLD,
    "regimes": WorldSpec(
        seed=11,
        regimes="blocks",
        regime_block_eras=40,
        linear_weight=0.5,
        nonlinear_weight=0.4,
        interaction_weight=0.4,
        regime_weight=0.5,
    ),
    "interactions": WorldSpec(
        seed=12, regimes="none", linear_weight=0.2, nonlinear_weight=0.6, interaction_weight=0.9, regime_weight=0.0
    ),
    "drift": WorldSpec(
        seed=13,
        regimes="none",
        linear_weight=0.7,
        nonlinear_weight=0.3,
        interaction_weight=0.3,
        regime_weight=0.0,
        drift_share=0.25,
        drift_weights=2.0,
        drift_loadings=0.2,
    ),
    "concentrated": WorldSpec(
        seed=14,
        regimes="none",
        linear_weight=0.4,
        nonlinear_weight=0.4,
        interaction_weight=0.6,
        regime_weight=0.0,
        signal_groups=("wisdom", "serenity"),
    ),
    "numerai_level": WorldSpec(seed=15, noise_sd=18.0, n_eras=390, n_validation_eras=150),
    "mixed": WorldSpec(
        seed=16,
        regimes="blocks",
        regime_block_eras=40,
        regime_block_random=True,
        linear_weight=0.3,
        nonlinear_weight=0.5,
        interaction_weight=0.7,
        regime_weight=0.5,
        drift_share=0.25,
        drift_weights=1.0,
        drift_loadings=0.2,
    ),
}


def world_spec(name: str) -> WorldSpec:
    """The family's world of that name, with an error that lists the names."""
    if name not in WORLDS:
        raise ValueError(f"unknown world {name!r}; expected one of {', '.join(WORLDS)}")
    return WORLDS[name]


# A shrunk world: few rows and features, enough eras for the build's 3 CV folds and its 8-era embargo.
_TINY = {"n_eras": 64, "n_validation_eras": 24, "rows_per_era": 300, "live_rows": 300, "n_features": 48}


def tiny(spec: WorldSpec) -> WorldSpec:
    """The same physics at a test's size: regime blocks shrunk with the eras, 3 target names."""
    blocks = max(2, round(spec.regime_block_eras * _TINY["n_eras"] / spec.n_eras))
    return replace(spec, **_TINY, n_unlabelled_eras=2, n_target_names=3, regime_block_eras=blocks)
