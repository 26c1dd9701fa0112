"""A synthetic Numerai v5 world on disk, in exactly the layout numerapi downloads.

Real Numerai data is large and needs a network; this module writes a stand-in that every part of
the project reads unchanged (same files, columns, dtypes, NaN conventions), with a weak,
era-varying, Numerai-like signal and a known ceiling (`oracle.parquet`) so that models and
benchmarks can be judged against the truth.

How the signal is built (all on the *observed* binned features, so the oracle is exact):
- Features are per-era quintile bins of latent values `x = loading * factor + noise`, where each
  feature belongs to one latent factor ("cluster") of its feature group and cluster factors share a
  group factor: features of a cluster are strongly, features of a group mildly correlated. A few
  feature-eras are "missing" (all 2), as on Numerai.
- The main signal is a sum of four per-era standardized components: linear (weights spread over
  many features, larger for whole clusters), nonlinear (per-feature shapes of the bin and squared
  cluster means), interactions (feature pairs and cluster-mean pairs across groups) and a linear
  "regime" component. A slow Markov chain over eras scales the interaction component and scales or
  flips the sign of the regime component, so per-era scores vary and have drawdowns.
- `target` (= `target_ender_20`) is the per-era 5/20/50/20/5 % quantile binning of
  `signal + noise_sd * noise`. Auxiliary targets mix the main signal with an own linear signal and
  share part of the main noise; the `_60` targets are noisier and weighted a little differently.
- `oracle` = E[target | features] = 0.25 * sum_c Phi((signal - t_c) / noise_sd) over the era's
  four class thresholds t_c.

Every era is drawn from its own `np.random.default_rng([seed, 1, era_number])` and eras are written
as they are made (a few eras per parquet row group), so the data is byte-identical for a seed and
memory stays at a few eras whatever the size.
"""

from __future__ import annotations

import argparse
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from scipy.special import ndtr
from tqdm import tqdm

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
BENCHMARK_COLUMNS: tuple[str, str] = ("v52_lgbm_ender20", "v52_lgbm_ender60")
# Target classes: values and cumulative class shares (5/20/50/20/5 %).
TARGET_VALUES = np.array([0.0, 0.25, 0.5, 0.75, 1.0], dtype=np.float32)
TARGET_CUTS = np.array([0.05, 0.25, 0.75, 0.95])

# Shapes of the per-feature nonlinear terms, as values per bin 0..4 (each centred: mean 0 over bins).
_BIN_SHAPES = np.array(
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
# Component weights of the main signal and, per regime, the multipliers of interaction and regime parts.
_MIX = {"linear": 0.25, "nonlinear": 0.4, "interaction": 0.8, "regime": 0.5}
_REGIME_INTERACTION = np.array([1.0, 1.3, 0.5], dtype=np.float32)
_REGIME_SIGN = np.array([1.0, 0.2, -1.0], dtype=np.float32)
_REGIME_TRANSITIONS = np.array([[0.94, 0.04, 0.02], [0.06, 0.90, 0.04], [0.08, 0.04, 0.88]])


@dataclass(frozen=True)
class WorldSpec:
    """Size and seed of a synthetic world; every field maps onto a CLI option of the same meaning."""

    n_eras: int = 300  # labelled + unlabelled eras of train and validation (--eras)
    n_validation_eras: int = 60  # the newest eras form validation (--validation-eras)
    n_unlabelled_eras: int = 4  # newest validation eras with all targets NaN (--unlabelled-eras)
    rows_per_era: int = 1200  # mean rows per era, +-10 % per era (--rows)
    live_rows: int = 1600  # rows of the live era (--live-rows)
    n_features: int = 240  # (--features)
    n_target_names: int = 8  # target names incl. ender, each with _20 and _60 (--target-names)
    noise_sd: float = 10.0  # target noise relative to a unit-variance signal (--noise-sd)
    seed: int = 0  # (--seed)

    def __post_init__(self) -> None:
        checks = [
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
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def n_train_eras(self) -> int:
        return self.n_eras - self.n_validation_eras


DEFAULT_WORLD = WorldSpec()


@dataclass(frozen=True)
class _Structure:
    """Everything shared by all eras of a world, drawn once from the seed."""

    feature_names: list[str]
    groups: dict[str, list[str]]
    small: list[str]
    medium: list[str]
    cluster: np.ndarray  # (F,) cluster of each feature
    cluster_group: np.ndarray  # (C,) feature group of each cluster
    loading: np.ndarray  # (F,) loading of each feature on its cluster factor
    n_clusters: int
    cluster_mean: np.ndarray  # (F, C) averaging matrix: u @ cluster_mean = standardized cluster means
    w_linear: np.ndarray  # (F,)
    nl_features: np.ndarray  # (k,) features with a bin-shape term
    nl_shapes: np.ndarray  # (k, 5) their bin shapes times weights
    nl_clusters: np.ndarray  # clusters with a squared-mean term
    nl_cluster_w: np.ndarray
    pair_a: np.ndarray  # feature pairs across groups
    pair_b: np.ndarray
    pair_w: np.ndarray
    cpair_a: np.ndarray  # cluster pairs across groups
    cpair_b: np.ndarray
    cpair_w: np.ndarray
    w_regime: np.ndarray  # (F,)
    regimes: np.ndarray  # (n_eras + 2,) regime of era number e (index 0 unused)
    missing_runs: list[tuple[int, int, int]]  # (feature, first era, last era) all-2 runs
    target_columns: list[str]  # "target" then target_<name>_<20|60>, names sorted
    w_own: np.ndarray  # (F, T) own linear signal of each target column
    signal_share: np.ndarray  # (T,) weight of the main signal in each column's signal
    noise_share: np.ndarray  # (T,) weight of the main noise in each column's noise
    noise_scale: np.ndarray  # (T,) noise sd multiplier relative to the main target
    nan_rows: np.ndarray  # (T,) share of rows NaN per era
    first_labelled_era: np.ndarray  # (T,) eras before this are all NaN for the column


def _group_sizes(n_features: int) -> dict[str, int]:
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


def _build_structure(spec: WorldSpec) -> _Structure:
    """Draw the world's fixed parts: features, groups, clusters, signal weights, regimes, NaN plan."""
    rng = np.random.default_rng([spec.seed, 0])
    n = spec.n_features
    width = max(4, len(str(n)))
    feature_names = [f"feature_{i:0{width}d}" for i in range(1, n + 1)]
    # Groups take random, interleaved columns, like Numerai's shuffled feature order.
    perm = rng.permutation(n)
    group_of = np.empty(n, dtype=np.int64)
    clusters: list[np.ndarray] = []
    start = 0
    for g, size in enumerate(_group_sizes(n).values()):
        members = perm[start : start + size]
        start += size
        group_of[members] = g
        n_clusters_g = max(1, round(size / 10))
        clusters.extend(np.array_split(members, n_clusters_g))
    n_clusters = len(clusters)
    cluster = np.empty(n, dtype=np.int64)
    for c, members in enumerate(clusters):
        cluster[members] = c
    cluster_group = np.array([group_of[m[0]] for m in clusters])
    loading = rng.uniform(0.35, 0.85, n).astype(np.float32)

    cluster_mean = np.zeros((n, n_clusters), dtype=np.float32)
    for c, members in enumerate(clusters):
        cluster_mean[members, c] = 1.0 / np.sqrt(len(members))

    # Linear: a weight per cluster (shared by its members) plus individual weights on half the features.
    w_cluster = rng.normal(0, 1, n_clusters) * (rng.random(n_clusters) < 0.6)
    w_linear = w_cluster[cluster] * loading + rng.normal(0, 0.7, n) * (rng.random(n) < 0.5)
    # Nonlinear: bin shapes on ~12 % of features, squared means of ~20 % of clusters.
    nl_features = rng.choice(n, max(2, n // 8), replace=False)
    nl_shapes = _BIN_SHAPES[rng.integers(0, len(_BIN_SHAPES), len(nl_features))] * rng.normal(
        0, 1, (len(nl_features), 1)
    ).astype(np.float32)
    nl_clusters = rng.choice(n_clusters, max(1, n_clusters // 5), replace=False)
    nl_cluster_w = rng.normal(0, 1, len(nl_clusters))

    def cross_group_pairs(count: int, owner: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
        a = rng.integers(0, size, 4 * count)
        b = rng.integers(0, size, 4 * count)
        keep = owner[a] != owner[b]
        return a[keep][:count], b[keep][:count]

    pair_a, pair_b = cross_group_pairs(max(2, n // 3), group_of, n)
    pair_w = rng.normal(0, 1, len(pair_a))
    cpair_a, cpair_b = cross_group_pairs(max(1, n_clusters // 3), cluster_group, n_clusters)
    cpair_w = rng.normal(0, 1, len(cpair_a)) * 1.5
    w_regime = rng.normal(0, 1, n) * (rng.random(n) < 0.3)

    # Regimes: a slow Markov chain over era numbers 1..n_eras+1 (the last one is live).
    regimes = np.zeros(spec.n_eras + 2, dtype=np.int64)
    for e in range(2, spec.n_eras + 2):
        regimes[e] = rng.choice(3, p=_REGIME_TRANSITIONS[regimes[e - 1]])

    # Missing features: a few features all 2 over a run of early train eras (per-era random
    # missingness is drawn per era).
    n_runs = max(1, n // 100)
    run_features = rng.choice(n, n_runs, replace=False)
    missing_runs = []
    for f in run_features:
        length = int(rng.integers(2, max(3, spec.n_train_eras // 5) + 1))
        first = int(rng.integers(1, max(2, spec.n_train_eras // 3) + 1))
        missing_runs.append((int(f), first, min(first + length - 1, spec.n_train_eras)))

    # Targets: ender first in TARGET_NAMES, then columns sorted by name as on Numerai.
    names = sorted(TARGET_NAMES[: spec.n_target_names])
    target_columns = ["target"] + [f"target_{name}_{h}" for name in names for h in (20, 60)]
    t = len(target_columns)
    signal_share = np.ones(t)
    noise_share = np.ones(t)
    noise_scale = np.ones(t)
    nan_rows = np.zeros(t)
    first_labelled = np.ones(t, dtype=np.int64)
    w_own = rng.normal(0, 1, (n, t)) * (rng.random((n, t)) < 0.5)
    for j, column in enumerate(target_columns[1:], start=1):
        name, horizon = column[len("target_") :].rsplit("_", 1)
        if name == "ender" and horizon == "20":
            continue  # identical to `target`
        base = 1.0 if name == "ender" else rng.uniform(0.3, 0.95)
        signal_share[j] = base * (0.85 if horizon == "60" else 1.0)
        noise_share[j] = (1.0 if name == "ender" else rng.uniform(0.2, 0.9)) * (0.6 if horizon == "60" else 1.0)
        noise_scale[j] = 1.4 if horizon == "60" else rng.uniform(0.9, 1.1)
        nan_rows[j] = rng.uniform(0.0, 0.03) if horizon == "60" or rng.random() < 0.5 else 0.0
    aux = [j for j, c in enumerate(target_columns) if c not in ("target", "target_ender_20")]
    for j in rng.choice(aux, max(1, len(aux) // 5), replace=False) if aux else []:
        first_labelled[j] = 1 + int(rng.integers(1, max(2, spec.n_train_eras // 6) + 1))

    # Feature sets: small (1.5 %, at least 5) inside medium (28 %) inside all.
    small = rng.choice(n, max(5, round(0.015 * n)), replace=False)
    others = np.setdiff1d(np.arange(n), small)
    medium = np.concatenate([small, rng.choice(others, max(0, round(0.28 * n) - len(small)), replace=False)])
    return _Structure(
        feature_names=feature_names,
        groups={g: [feature_names[i] for i in np.flatnonzero(group_of == k)] for k, g in enumerate(FEATURE_GROUPS)},
        small=[feature_names[i] for i in np.sort(small)],
        medium=[feature_names[i] for i in np.sort(medium)],
        cluster=cluster,
        cluster_group=cluster_group,
        loading=loading,
        n_clusters=n_clusters,
        cluster_mean=cluster_mean,
        w_linear=w_linear.astype(np.float32),
        nl_features=nl_features,
        nl_shapes=nl_shapes,
        nl_clusters=nl_clusters,
        nl_cluster_w=nl_cluster_w.astype(np.float32),
        pair_a=pair_a,
        pair_b=pair_b,
        pair_w=pair_w.astype(np.float32),
        cpair_a=cpair_a,
        cpair_b=cpair_b,
        cpair_w=cpair_w.astype(np.float32),
        w_regime=w_regime.astype(np.float32),
        regimes=regimes,
        missing_runs=missing_runs,
        target_columns=target_columns,
        w_own=w_own.astype(np.float32),
        signal_share=signal_share,
        noise_share=noise_share,
        noise_scale=noise_scale,
        nan_rows=nan_rows,
        first_labelled_era=first_labelled,
    )


_U_SCALE = np.float32(1 / np.sqrt(2.0))  # u = (bin - 2) / sqrt(2): centred bins with variance 1
_GROUP_SHARE = 0.35  # share of a cluster factor's variance that comes from its group's factor
_MISSING_SHARE = 0.01  # share of feature-eras that are missing (all 2) at random
_BENCHMARK_NOISE = (2.0, 2.0)  # noise sd added to the standardized truth of each benchmark column
_ROW_GROUP_ROWS = 50_000  # eras are buffered into row groups of about this many rows: a small footer


@dataclass(frozen=True)
class _Era:
    """One generated era: what goes into the data files, the oracle and the benchmark files."""

    ids: list[str]
    bins: np.ndarray  # (F, n) int8, feature-major: contiguous per column
    targets: np.ndarray  # (n, T) float32
    oracle: np.ndarray  # (n,) float32
    benchmarks: np.ndarray  # (n, 2) float32


def _ids(seed: int, era: int, n: int) -> list[str]:
    """Numerai-like ids "n" + 15 hex digits, unique across the world by construction.

    (era, row) is packed into 60 bits and scrambled by a bijection (odd multiplications and
    xor-shifts modulo 2**60), so ids look random but can never collide.
    """
    mask = np.uint64((1 << 60) - 1)
    salt = np.uint64(int(np.random.default_rng([seed, 2]).integers(0, 1 << 60)))
    x = (np.uint64(era) << np.uint64(24)) | np.arange(n, dtype=np.uint64)
    with np.errstate(over="ignore"):
        x = (x * np.uint64(0x9E3779B97F4A7C15)) & mask
        x ^= x >> np.uint64(31)
        x = ((x ^ salt) * np.uint64(0xBF58476D1CE4E5B9)) & mask
        x ^= x >> np.uint64(29)
    return [f"n{v:015x}" for v in x.tolist()]


def _standardize(values: np.ndarray) -> np.ndarray:
    """Centre and scale to unit variance along axis 0 (constant columns stay zero)."""
    values = values - values.mean(axis=0)
    sd = values.std(axis=0)
    return values / np.where(sd > 0, sd, 1.0)


def _per_era_rank(values: np.ndarray) -> np.ndarray:
    """Ranks scaled into (0, 1), as a submitted prediction would be."""
    return ((np.argsort(np.argsort(values, kind="stable"), kind="stable") + 0.5) / len(values)).astype(np.float32)


def _main_signal(st: _Structure, bins: np.ndarray, u: np.ndarray, regime: int) -> np.ndarray:
    """The main target's expected latent value for each row: a function of the observed bins only.

    `bins` and `u` are feature-major (F, n).
    """
    means = st.cluster_mean.T @ u
    linear = st.w_linear @ u
    shaped = st.nl_shapes[np.arange(len(st.nl_features))[:, None], bins[st.nl_features]].sum(axis=0)
    nonlinear = 0.5 * _standardize(shaped) + _standardize(st.nl_cluster_w @ means[st.nl_clusters] ** 2)
    interaction = _standardize(st.pair_w @ (u[st.pair_a] * u[st.pair_b])) + _standardize(
        st.cpair_w @ (means[st.cpair_a] * means[st.cpair_b])
    )
    regime_part = st.w_regime @ u
    return (
        _MIX["linear"] * _standardize(linear)
        + _MIX["nonlinear"] * _standardize(nonlinear)
        + _MIX["interaction"] * _REGIME_INTERACTION[regime] * _standardize(interaction)
        + _MIX["regime"] * _REGIME_SIGN[regime] * _standardize(regime_part)
    ).astype(np.float64)


def _class_thresholds(y: np.ndarray) -> np.ndarray:
    """Per-column thresholds between the era's 5/20/50/20/5 % classes: (4, T)."""
    n = len(y)
    cuts = np.round(TARGET_CUTS * n).astype(int)
    ordered = np.sort(y, axis=0)
    return (ordered[cuts - 1] + ordered[cuts]) / 2


def _draw_era(spec: WorldSpec, st: _Structure, era: int, n_rows: int | None, labelled: bool) -> _Era:
    """Generate one era from its own generator; `n_rows=None` draws the count around rows_per_era."""
    rng = np.random.default_rng([spec.seed, 1, era])
    row_factor = rng.uniform(0.9, 1.1)
    n = n_rows if n_rows is not None else int(round(spec.rows_per_era * row_factor))
    f = spec.n_features

    # Features: per-era quintile bins of loading * cluster factor + idiosyncratic noise.
    # Feature-major (F, n) layout throughout: per-feature work is on contiguous memory.
    # Cluster factors share a factor of their group, so all features of a group are correlated.
    group_factors = rng.standard_normal((len(FEATURE_GROUPS), n), dtype=np.float32)
    factors = rng.standard_normal((st.n_clusters, n), dtype=np.float32)
    factors *= np.float32(np.sqrt(1 - _GROUP_SHARE))
    factors += np.float32(np.sqrt(_GROUP_SHARE)) * group_factors[st.cluster_group]
    latent = rng.standard_normal((f, n), dtype=np.float32)
    latent *= np.sqrt(1 - st.loading**2)[:, None]
    latent += factors[st.cluster] * st.loading[:, None]
    kth = (np.arange(1, 5) * n) // 5
    edges = np.partition(latent, kth, axis=1)[:, kth]
    bins = np.zeros((f, n), dtype=np.int8)
    for k in range(len(kth)):
        bins += latent >= edges[:, k : k + 1]
    del latent, edges, factors, group_factors
    missing = rng.random(f) < _MISSING_SHARE
    for feature, first, last in st.missing_runs:
        missing[feature] |= first <= era <= last
    bins[missing] = 2
    u = (bins.astype(np.float32) - 2) * _U_SCALE

    # Targets: main signal + noise, aux columns mix it with their own signal and noise.
    signal = _main_signal(st, bins, u, int(st.regimes[era]))
    scale = np.sqrt(sum(w * w for w in _MIX.values()))
    own = _standardize((u.T @ st.w_own).astype(np.float64)) * scale
    share, nshare = st.signal_share, st.noise_share
    expected = signal[:, None] * share + own * np.sqrt(1 - share**2)
    noise_main = rng.standard_normal(n)
    noise_own = rng.standard_normal((n, len(share)))
    noise = noise_main[:, None] * nshare + noise_own * np.sqrt(1 - nshare**2)
    latent_y = expected + spec.noise_sd * st.noise_scale * noise
    thresholds = _class_thresholds(latent_y)
    classes = (latent_y[None, :, :] > thresholds[:, None, :]).sum(axis=0)
    targets = TARGET_VALUES[classes]
    nan_draw = rng.random((n, len(share)))
    targets[nan_draw < st.nan_rows] = np.nan
    targets[:, era < st.first_labelled_era] = np.nan
    if not labelled:
        targets[:] = np.nan

    # Oracle: E[target | features] = 0.25 * sum_c P(signal + noise > t_c).
    oracle = 0.25 * ndtr((signal[:, None] - thresholds[None, :, 0]) / spec.noise_sd).sum(axis=1)
    # Benchmarks: the truth of target and target_ender_60 blurred by strong noise, ranked.
    ender60 = st.target_columns.index("target_ender_60")  # ender is always among the names
    bench_noise = rng.standard_normal((n, 2))
    benchmarks = np.column_stack(
        [
            _per_era_rank(_standardize(oracle) + _BENCHMARK_NOISE[0] * bench_noise[:, 0]),
            _per_era_rank(_standardize(expected[:, ender60]) + _BENCHMARK_NOISE[1] * bench_noise[:, 1]),
        ]
    )
    return _Era(_ids(spec.seed, era, n), bins, targets, oracle.astype(np.float32), benchmarks)


class _EraWriter:
    """Appends eras to one parquet file, several eras per row group, with pandas' `id` index."""

    def __init__(self, path: Path, schema: pa.Schema) -> None:
        self._writer = pq.ParquetWriter(path, schema)
        self._schema = schema
        self._pending: list[pa.Table] = []
        self._rows = 0

    def add(self, columns: dict[str, object]) -> None:
        self._pending.append(pa.Table.from_arrays([columns[name] for name in self._schema.names], schema=self._schema))
        self._rows += self._pending[-1].num_rows
        if self._rows >= _ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if self._pending:
            table = pa.concat_tables(self._pending)
            self._writer.write_table(table, row_group_size=table.num_rows)
        self._pending, self._rows = [], 0

    def close(self) -> None:
        self._flush()
        self._writer.close()


def _schema(string_columns: list[str], typed_columns: dict[str, type]) -> pa.Schema:
    """Arrow schema with pandas metadata, so `pd.read_parquet` restores the string `id` index."""
    frame = pd.DataFrame(
        {name: ["x"] for name in string_columns} | {name: np.zeros(1, dtype) for name, dtype in typed_columns.items()},
        index=pd.Index(["n"], name="id"),
    )
    return pa.Schema.from_pandas(frame, preserve_index=True)


def _write_features_json(path: Path, st: _Structure) -> None:
    sets = {"small": st.small, "medium": st.medium, "all": st.feature_names} | st.groups
    path.write_text(json.dumps({"feature_sets": sets, "targets": st.target_columns}, indent=1))


def write_world(out_dir: str | Path, spec: WorldSpec = DEFAULT_WORLD, progress: bool = True) -> Path:
    """Write a whole synthetic world (Numerai v5 file layout plus `oracle.parquet`) into `out_dir`.

    Eras are generated and written one at a time, so memory stays at a few eras whatever the size.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    st = _build_structure(spec)
    _write_features_json(out / "features.json", st)

    data_schema = _schema(
        ["era", "data_type"],
        {name: np.int8 for name in st.feature_names} | {name: np.float32 for name in st.target_columns},
    )
    bench_schema = _schema(["era"], {name: np.float32 for name in BENCHMARK_COLUMNS})
    oracle_schema = _schema(["era"], {"oracle": np.float32})
    data = {kind: _EraWriter(out / f"{kind}.parquet", data_schema) for kind in ("train", "validation", "live")}
    bench = {
        kind: _EraWriter(out / f"{kind}_benchmark_models.parquet", bench_schema)
        for kind in ("train", "validation", "live")
    }
    oracle = _EraWriter(out / "oracle.parquet", oracle_schema)

    last_labelled = spec.n_eras - spec.n_unlabelled_eras
    for era in tqdm(range(1, spec.n_eras + 2), desc="synthetic eras", unit="era", disable=not progress):
        kind = "train" if era <= spec.n_train_eras else "validation" if era <= spec.n_eras else "live"
        drawn = _draw_era(spec, st, era, spec.live_rows if kind == "live" else None, era <= last_labelled)
        n = len(drawn.ids)
        ids = pa.array(drawn.ids, pa.string())
        eras = pa.array([f"{era:04d}"] * n, pa.string())
        columns: dict[str, object] = {"id": ids, "era": eras, "data_type": pa.array([kind] * n, pa.string())}
        columns |= {name: pa.array(drawn.bins[j]) for j, name in enumerate(st.feature_names)}
        targets_by_column = np.ascontiguousarray(drawn.targets.T)
        columns |= {name: pa.array(targets_by_column[j], from_pandas=False) for j, name in enumerate(st.target_columns)}
        data[kind].add(columns)
        predictions = {name: pa.array(drawn.benchmarks[:, j]) for j, name in enumerate(BENCHMARK_COLUMNS)}
        bench[kind].add({"id": ids, "era": eras} | predictions)
        oracle.add({"id": ids, "era": eras, "oracle": pa.array(drawn.oracle)})
    for writer in [*data.values(), *bench.values(), oracle]:
        writer.close()
    return out


def earlier_world(
    world: str | Path, out_dir: str | Path, eras_back: int, unlabelled: int = DEFAULT_WORLD.n_unlabelled_eras
) -> Path:
    """`world` as it was `eras_back` eras earlier, like last week's download, for trying a refresh
    (`--init-model`): its newest eras left out of every file with eras (live files are copied: only
    their features are read), and the targets of the newest `unlabelled` eras left unresolved (NaN)."""
    world, out = Path(world), Path(out_dir)
    eras = sorted(
        set(pq.read_table(world / "train.parquet", columns=["era"])["era"].to_pylist())
        | set(pq.read_table(world / "validation.parquet", columns=["era"])["era"].to_pylist())
    )
    kept = eras[: len(eras) - eras_back]
    if eras_back < 1 or len(kept) <= unlabelled + 1:
        raise ValueError(
            f"eras_back must be at least 1 and leave more than {unlabelled + 1} of the {len(eras)} eras, got "
            f"{eras_back}"
        )
    unresolved = pa.array(kept[len(kept) - unlabelled :], pa.string())
    out.mkdir(parents=True, exist_ok=True)
    for path in sorted(world.iterdir()):
        if path.suffix != ".parquet" or path.name.startswith("live"):
            shutil.copy2(path, out / path.name)
            continue
        table = pq.read_table(path)
        table = table.filter(pc.is_in(table["era"], pa.array(kept, pa.string())))
        unknown = pc.is_in(table["era"], unresolved)
        for k, name in enumerate(table.column_names):
            if name.startswith("target"):
                nan = pa.scalar(float("nan"), table.schema.field(k).type)
                table = table.set_column(k, name, pc.if_else(unknown, nan, table[name]))
        pq.write_table(table, out / path.name)
    return out


# CLI option -> (WorldSpec field, type, help); defaults come from DEFAULT_WORLD.
_OPTIONS: dict[str, tuple[str, type, str]] = {
    "--eras": ("n_eras", int, "train + validation eras; live is the next era"),
    "--validation-eras": ("n_validation_eras", int, "newest eras that form validation"),
    "--unlabelled-eras": ("n_unlabelled_eras", int, "newest validation eras whose targets are all NaN, as on Numerai"),
    "--rows": ("rows_per_era", int, "mean rows per era (each era varies by up to 10%%)"),
    "--live-rows": ("live_rows", int, "rows of the live era"),
    "--features": ("n_features", int, "number of feature columns"),
    "--target-names": ("n_target_names", int, "how many of Numerai's target names (ender first) get _20, _60 columns"),
    "--noise-sd": ("noise_sd", float, "target noise sd per unit of signal sd; higher means a weaker signal"),
    "--seed": ("seed", int, "same seed, same bytes"),
}


def _parse_args(argv: list[str] | None) -> tuple[Path, WorldSpec, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.synthetic",
        description="Write a synthetic Numerai v5 world (features.json, train/validation/live parquet, "
        "benchmark model files and oracle.parquet) into OUT_DIR.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="directory to write into (created if needed)")
    for option, (field, kind, text) in _OPTIONS.items():
        default = getattr(DEFAULT_WORLD, field)
        metavar = "N" if kind is int else "X"
        parser.add_argument(
            option, dest=field, type=kind, default=default, metavar=metavar, help=f"{text} (default {default})"
        )
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    try:
        spec = WorldSpec(**{field: getattr(args, field) for field, _, _ in _OPTIONS.values()})
    except ValueError as error:
        parser.error(str(error))
    return args.out_dir, spec, not args.quiet


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: `python -m pipeline.synthetic OUT_DIR [options]`."""
    out_dir, spec, progress = _parse_args(argv)
    write_world(out_dir, spec, progress)


if __name__ == "__main__":
    main()
