"""The drawn physics of a synthetic world: its signal terms and what of them changes from era to era.

`pipeline.worlds` defines the knobs; `pipeline.synthetic` draws the features and targets of each
era from what this module draws once per world: the terms of the main signal (`Terms`) and their
era-varying multipliers and drifting weights and loadings (`EraPhysics`), together with the values
a model trained on the train eras can know (the `learnable_*` fields). Only the default world's
parts use the world's main generator stream; the knobs added later draw from their own streams,
`default_rng([seed, 3, k])`, so the default world's draws are untouched.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.worlds import WorldSpec

# Shapes of the per-feature nonlinear terms, as values per bin 0..4 (each centred: mean 0 over bins).
BIN_SHAPES = np.array(
    [
        [1.0, -0.5, -1.0, -0.5, 1.0],  # U: extremes good
        [-1.0, 0.5, 1.0, 0.5, -1.0],  # inverted U
        [-0.25, -0.25, -0.25, -0.25, 1.0],  # only the top bin matters
        [1.0, -0.25, -0.25, -0.25, -0.25],  # only the bottom bin matters
        [-1.0, -1.0, 0.0, 1.0, 1.0],  # step
        [0.0, 0.0, -1.5, 0.75, 0.75],  # asymmetric middle dip
    ],
    dtype=np.float32,
)
# Markov regimes: per state, the multipliers of the interaction and regime parts; the transitions.
REGIME_INTERACTION = np.array([1.0, 1.3, 0.5], dtype=np.float32)
REGIME_SIGN = np.array([1.0, 0.2, -1.0], dtype=np.float32)
REGIME_TRANSITIONS = np.array([[0.94, 0.04, 0.02], [0.06, 0.90, 0.04], [0.08, 0.04, 0.88]])
# Streams of the later knobs: default_rng([seed, NEW_STREAM, k]).
NEW_STREAM = 3
_BLOCKS, _CONCENTRATED, _DRIFT = 0, 1, 2
LOADING_RANGE = (0.05, 0.95)


@dataclass(frozen=True)
class Terms:
    """The terms of the main signal, over feature indices 0..F-1 and cluster indices 0..C-1."""

    w_linear: np.ndarray  # (F,) float32
    nl_features: np.ndarray  # (k,) features with a bin-shape term
    nl_shapes: np.ndarray  # (k, 5) their bin shapes times weights
    nl_clusters: np.ndarray  # clusters with a squared-mean term
    nl_cluster_w: np.ndarray
    pair_a: np.ndarray  # feature pairs
    pair_b: np.ndarray
    pair_w: np.ndarray
    cpair_a: np.ndarray  # cluster pairs
    cpair_b: np.ndarray
    cpair_w: np.ndarray
    w_regime: np.ndarray  # (F,) float32


def draw_terms(
    rng: np.random.Generator,
    features: np.ndarray,
    clusters: np.ndarray,
    cluster: np.ndarray,
    loading: np.ndarray,
    owners: tuple[np.ndarray, np.ndarray],
) -> Terms:
    """Draw every signal term over `features` (sorted indices) and `clusters` (sorted cluster ids,
    those of these features); weights of other features are 0.

    `owners` holds, for each of these features and clusters, who owns it: pairs only join
    features (clusters) of different owners (across groups in a world with signal everywhere)."""
    n, m, k = len(cluster), len(features), len(clusters)
    local_cluster = np.searchsorted(clusters, cluster[features])
    # Linear: a weight per cluster (shared by its members) plus individual weights on half the features.
    w_cluster = rng.normal(0, 1, k) * (rng.random(k) < 0.6)
    w_linear = np.zeros(n)
    w_linear[features] = w_cluster[local_cluster] * loading[features] + rng.normal(0, 0.7, m) * (rng.random(m) < 0.5)
    # Nonlinear: bin shapes on ~12 % of features, squared means of ~20 % of clusters.
    nl_features = features[rng.choice(m, max(2, m // 8), replace=False)]
    nl_shapes = BIN_SHAPES[rng.integers(0, len(BIN_SHAPES), len(nl_features))] * rng.normal(
        0, 1, (len(nl_features), 1)
    ).astype(np.float32)
    nl_clusters = clusters[rng.choice(k, max(1, k // 5), replace=False)]
    nl_cluster_w = rng.normal(0, 1, len(nl_clusters))

    def pairs(count: int, owner: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        a = rng.integers(0, len(owner), 4 * count)
        b = rng.integers(0, len(owner), 4 * count)
        keep = owner[a] != owner[b]
        return a[keep][:count], b[keep][:count]

    pair_a, pair_b = pairs(max(2, m // 3), owners[0])
    pair_w = rng.normal(0, 1, len(pair_a))
    cpair_a, cpair_b = pairs(max(1, k // 3), owners[1])
    cpair_w = rng.normal(0, 1, len(cpair_a)) * 1.5
    w_regime = np.zeros(n)
    w_regime[features] = rng.normal(0, 1, m) * (rng.random(m) < 0.3)
    return Terms(
        w_linear=w_linear.astype(np.float32),
        nl_features=nl_features,
        nl_shapes=nl_shapes,
        nl_clusters=nl_clusters,
        nl_cluster_w=nl_cluster_w.astype(np.float32),
        pair_a=features[pair_a],
        pair_b=features[pair_b],
        pair_w=pair_w.astype(np.float32),
        cpair_a=clusters[cpair_a],
        cpair_b=clusters[cpair_b],
        cpair_w=cpair_w.astype(np.float32),
        w_regime=w_regime.astype(np.float32),
    )


def concentrated_terms(spec: WorldSpec, signal: np.ndarray, cluster: np.ndarray, loading: np.ndarray) -> Terms:
    """The terms of a world whose signal sits in the features where `signal` is True: drawn over
    them only, from their own stream; pairs join features (clusters) of different clusters, or any
    two features of a signal with one cluster."""
    features = np.flatnonzero(signal)
    clusters = np.unique(cluster[features])
    feature_owner = cluster[features] if len(clusters) > 1 else np.arange(len(features))
    rng = np.random.default_rng([spec.seed, NEW_STREAM, _CONCENTRATED])
    return draw_terms(rng, features, clusters, cluster, loading, (feature_owner, np.arange(len(clusters))))


def markov_states(rng: np.random.Generator, n_eras: int) -> np.ndarray:
    """The default world's slow Markov chain over era numbers 1..n_eras+1 (the last one is live)."""
    states = np.zeros(n_eras + 2, dtype=np.int64)
    for e in range(2, n_eras + 2):
        states[e] = rng.choice(3, p=REGIME_TRANSITIONS[states[e - 1]])
    return states


def block_signs(spec: WorldSpec) -> np.ndarray:
    """+1 / -1 per era number (index 0 unused), flipping between blocks of about
    `regime_block_eras` eras; the first block starts at a random phase with a random sign."""
    rng = np.random.default_rng([spec.seed, NEW_STREAM, _BLOCKS])
    size = spec.regime_block_eras
    signs = np.zeros(spec.n_eras + 2, dtype=np.float32)
    sign = float(rng.choice([-1.0, 1.0]))
    era, length = 1, int(rng.integers(1, size + 1))
    while era < len(signs):
        signs[era : era + length] = sign
        era, sign = era + length, -sign
        length = int(rng.integers(max(1, (size + 1) // 2), size + size // 2 + 1)) if spec.regime_block_random else size
    return signs


@dataclass(frozen=True)
class EraPhysics:
    """What changes from era to era (arrays indexed by era number), and what a model trained on
    the train eras can know of it: multipliers at their train-era means, drift frozen at the last
    train era."""

    interaction_scale: np.ndarray  # (E+2,) float32: m_int
    regime_sign: np.ndarray  # (E+2,) float32: m_reg
    learnable_scales: tuple[np.float32, np.float32]  # train-era means of m_int and m_reg
    drift_features: np.ndarray  # (d,) drifting features
    drift_w: np.ndarray  # (E+2, d) float32: their linear weights per era
    drift_loading: np.ndarray  # (E+2, d) float32: their loadings per era
    learnable_drift_w: np.ndarray  # (d,) their weights in the last train era

    def linear_weights(self, w_linear: np.ndarray, era: int | None) -> np.ndarray:
        """Linear weights in an era (None: as the learnable signal freezes them)."""
        if self.drift_w.size == 0:
            return w_linear
        weights = w_linear.copy()
        weights[self.drift_features] = self.learnable_drift_w if era is None else self.drift_w[era]
        return weights

    def loadings(self, loading: np.ndarray, era: int) -> np.ndarray:
        if self.drift_loading.size == 0:
            return loading
        loadings = loading.copy()
        loadings[self.drift_features] = self.drift_loading[era]
        return loadings


def _walks(rng: np.random.Generator, start: np.ndarray, sd_per_100: float, n_eras: int) -> np.ndarray:
    """Gaussian random walks from `start` (value at era 0) over era numbers 0..n_eras+1."""
    steps = rng.normal(0, sd_per_100 / 10, (n_eras + 1, len(start)))
    return (start + np.concatenate([np.zeros((1, len(start))), np.cumsum(steps, axis=0)])).astype(np.float32)


def era_physics(spec: WorldSpec, states: np.ndarray, w_linear: np.ndarray, loading: np.ndarray) -> EraPhysics:
    """Multipliers from the regime process, and the drifting features' walks (their own stream)."""
    ones = np.ones(spec.n_eras + 2, dtype=np.float32)
    if spec.regimes == "markov":
        interaction, sign = REGIME_INTERACTION[states], REGIME_SIGN[states]
    else:
        interaction, sign = ones, block_signs(spec) if spec.regimes == "blocks" else ones
    train = slice(1, spec.n_train_eras + 1)
    rng = np.random.default_rng([spec.seed, NEW_STREAM, _DRIFT])
    drifting = np.sort(rng.choice(len(w_linear), round(spec.drift_share * len(w_linear)), replace=False))
    drift_w = drift_loading = np.zeros((spec.n_eras + 2, 0), dtype=np.float32)
    if len(drifting) and spec.drift_weights:
        drift_w = _walks(rng, w_linear[drifting], spec.drift_weights, spec.n_eras)
    if len(drifting) and spec.drift_loadings:
        drift_loading = np.clip(_walks(rng, loading[drifting], spec.drift_loadings, spec.n_eras), *LOADING_RANGE)
    return EraPhysics(
        interaction_scale=interaction,
        regime_sign=sign,
        learnable_scales=(np.float32(interaction[train].mean()), np.float32(sign[train].mean())),
        drift_features=drifting,
        drift_w=drift_w,
        drift_loading=drift_loading,
        learnable_drift_w=drift_w[spec.n_train_eras],
    )
