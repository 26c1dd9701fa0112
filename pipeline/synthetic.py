"""A synthetic Numerai v5 world on disk, in exactly the layout numerapi downloads.

Real Numerai data is large and needs a network; this module writes a stand-in that every part of
the project reads unchanged (same files, columns, dtypes, NaN conventions), with a weak,
era-varying, Numerai-like signal and known ceilings (`oracle.parquet`) so that models and
benchmarks can be judged against the truth. What a world's physics is (`WorldSpec`, the named
family `WORLDS`) is defined in `pipeline.worlds`; its drawn terms in `pipeline.world_physics`.

How the signal is built (all on the *observed* binned features, so the oracle is exact):
- Features are per-era quintile bins of latent values `x = loading * factor + noise`, where each
  feature belongs to one latent factor ("cluster") of its feature group and cluster factors share a
  group factor: features of a cluster are strongly, features of a group mildly correlated. A few
  feature-eras are "missing" (all 2), as on Numerai.
- The main signal is a sum of four per-era standardized components: linear (weights spread over
  many features, larger for whole clusters), nonlinear (per-feature shapes of the bin and squared
  cluster means), interactions (feature pairs and cluster-mean pairs across groups) and a linear
  "regime" component. In the default world a slow Markov chain over eras scales the interaction
  component and scales or flips the sign of the regime component, so per-era scores vary and have
  drawdowns; other worlds flip it in blocks, drift weights and loadings, or concentrate the signal.
- `target` (= `target_ender_20`) is the per-era 5/20/50/20/5 % quantile binning of
  `signal + noise_sd * noise`. Auxiliary targets mix the main signal with an own linear signal and
  share part of the main noise; the `_60` targets are noisier and weighted a little differently.
- `oracle` = E[target | features] = 0.25 * sum_c Phi((signal - t_c) / noise_sd) over the era's
  four class thresholds t_c; `learnable` the same of the signal a model trained on the train eras
  can know (`pipeline.worlds` defines it per knob).

Every era is drawn from its own `np.random.default_rng([seed, 1, era_number])` and eras are written
as they are made (a few eras per parquet row group), so the data is byte-identical for a seed and
memory stays at a few eras whatever the size.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
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

from pipeline import world_physics, worlds
from pipeline.world_physics import EraPhysics, Terms, concentrated_terms, draw_terms, era_physics, markov_states
from pipeline.worlds import (
    DEFAULT_WORLD,
    FEATURE_GROUPS,
    QUANTUM_SHARE,
    REGIME_PROCESSES,
    TARGET_NAMES,
    WORLDS,
    WorldSpec,
    group_sizes,
    world_spec,
)

logger = logging.getLogger(__name__)

BENCHMARK_COLUMNS: tuple[str, str] = DEFAULT_WORLD.benchmark_columns  # the default world's names
# Target classes: values and cumulative class shares (5/20/50/20/5 %).
TARGET_VALUES = np.array([0.0, 0.25, 0.5, 0.75, 1.0], dtype=np.float32)
TARGET_CUTS = np.array([0.05, 0.25, 0.75, 0.95])


def generator_digest() -> str:
    """A digest of the generator's source (this module and the two that define a world's physics):
    caches of generated worlds are keyed by it, so a changed generator never reuses a stale world."""
    sources = [Path(module.__file__).read_bytes() for module in (worlds, world_physics)]
    return hashlib.sha256(Path(__file__).read_bytes() + b"".join(sources)).hexdigest()[:12]


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
    terms: Terms
    physics: EraPhysics
    missing_runs: list[tuple[int, int, int]]  # (feature, first era, last era) all-2 runs
    targets: _TargetPlan


@dataclass(frozen=True)
class _TargetPlan:
    """How each target column is made from the main signal and noise."""

    columns: list[str]  # "target" then target_<name>_<20|60>, names sorted
    w_own: np.ndarray  # (F, T) own linear signal of each target column
    signal_share: np.ndarray  # (T,) weight of the main signal in each column's signal
    noise_share: np.ndarray  # (T,) weight of the main noise in each column's noise
    noise_scale: np.ndarray  # (T,) noise sd multiplier relative to the main target
    nan_rows: np.ndarray  # (T,) share of rows NaN per era
    first_labelled_era: np.ndarray  # (T,) eras before this are all NaN for the column


def _layout(rng: np.random.Generator, n: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Groups take random, interleaved columns, like Numerai's shuffled feature order; each group is
    split into clusters of about 10. Returns each feature's group, the clusters, the loadings."""
    perm = rng.permutation(n)
    group_of = np.empty(n, dtype=np.int64)
    clusters: list[np.ndarray] = []
    start = 0
    for g, size in enumerate(group_sizes(n).values()):
        members = perm[start : start + size]
        start += size
        group_of[members] = g
        clusters.extend(np.array_split(members, max(1, round(size / 10))))
    return group_of, clusters, rng.uniform(0.35, 0.85, n).astype(np.float32)


def _missing_runs(rng: np.random.Generator, spec: WorldSpec) -> list[tuple[int, int, int]]:
    """A few features all 2 over a run of early train eras (per-era random missingness is drawn per era)."""
    runs = []
    for f in rng.choice(spec.n_features, max(1, spec.n_features // 100), replace=False):
        length = int(rng.integers(2, max(3, spec.n_train_eras // 5) + 1))
        first = int(rng.integers(1, max(2, spec.n_train_eras // 3) + 1))
        runs.append((int(f), first, min(first + length - 1, spec.n_train_eras)))
    return runs


def _target_plan(rng: np.random.Generator, spec: WorldSpec) -> _TargetPlan:
    """Targets: ender first in TARGET_NAMES, then columns sorted by name as on Numerai."""
    names = sorted(TARGET_NAMES[: spec.n_target_names])
    columns = ["target"] + [f"target_{name}_{h}" for name in names for h in (20, 60)]
    t = len(columns)
    signal_share, noise_share, noise_scale, nan_rows = np.ones(t), np.ones(t), np.ones(t), np.zeros(t)
    first_labelled = np.ones(t, dtype=np.int64)
    w_own = rng.normal(0, 1, (spec.n_features, t)) * (rng.random((spec.n_features, t)) < 0.5)
    for j, column in enumerate(columns[1:], start=1):
        name, horizon = column[len("target_") :].rsplit("_", 1)
        if name == "ender" and horizon == "20":
            continue  # identical to `target`
        base = 1.0 if name == "ender" else rng.uniform(0.3, 0.95)
        signal_share[j] = base * (0.85 if horizon == "60" else 1.0)
        noise_share[j] = (1.0 if name == "ender" else rng.uniform(0.2, 0.9)) * (0.6 if horizon == "60" else 1.0)
        noise_scale[j] = 1.4 if horizon == "60" else rng.uniform(0.9, 1.1)
        nan_rows[j] = rng.uniform(0.0, 0.03) if horizon == "60" or rng.random() < 0.5 else 0.0
    aux = [j for j, c in enumerate(columns) if c not in ("target", "target_ender_20")]
    for j in rng.choice(aux, max(1, len(aux) // 5), replace=False) if aux else []:
        first_labelled[j] = 1 + int(rng.integers(1, max(2, spec.n_train_eras // 6) + 1))
    return _TargetPlan(
        columns, w_own.astype(np.float32), signal_share, noise_share, noise_scale, nan_rows, first_labelled
    )


def _build_structure(spec: WorldSpec) -> _Structure:
    """Draw the world's fixed parts: features, groups, clusters, signal terms, regimes, NaN plan."""
    rng = np.random.default_rng([spec.seed, 0])
    n = spec.n_features
    width = max(4, len(str(n)))
    feature_names = [f"feature_{i:0{width}d}" for i in range(1, n + 1)]
    group_of, clusters, loading = _layout(rng, n)
    n_clusters = len(clusters)
    cluster = np.empty(n, dtype=np.int64)
    cluster_mean = np.zeros((n, n_clusters), dtype=np.float32)
    for c, members in enumerate(clusters):
        cluster[members] = c
        cluster_mean[members, c] = 1.0 / np.sqrt(len(members))
    cluster_group = np.array([group_of[m[0]] for m in clusters])
    owners = (group_of, cluster_group)
    terms = draw_terms(rng, np.arange(n), np.arange(n_clusters), cluster, loading, owners)
    states = markov_states(rng, spec.n_eras)
    missing_runs = _missing_runs(rng, spec)
    targets = _target_plan(rng, spec)
    if spec.signal_groups:
        signal = np.isin(group_of, [list(FEATURE_GROUPS).index(g) for g in spec.signal_groups])
        terms = concentrated_terms(spec, signal, cluster, loading)
        targets.w_own[~signal] = 0
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
        terms=terms,
        physics=era_physics(spec, states, terms.w_linear, loading),
        missing_runs=missing_runs,
        targets=targets,
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
    truth: np.ndarray  # (2, n) float32: oracle and learnable
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


def _signal_parts(st: _Structure, bins: np.ndarray, u: np.ndarray, w_linear: np.ndarray) -> list[np.ndarray]:
    """The four standardized parts of the main signal (linear, nonlinear, interaction, regime) for
    each row: functions of the observed bins only. `bins` and `u` are feature-major (F, n)."""
    terms = st.terms
    means = st.cluster_mean.T @ u
    shaped = terms.nl_shapes[np.arange(len(terms.nl_features))[:, None], bins[terms.nl_features]].sum(axis=0)
    nonlinear = 0.5 * _standardize(shaped) + _standardize(terms.nl_cluster_w @ means[terms.nl_clusters] ** 2)
    interaction = _standardize(terms.pair_w @ (u[terms.pair_a] * u[terms.pair_b])) + _standardize(
        terms.cpair_w @ (means[terms.cpair_a] * means[terms.cpair_b])
    )
    return [
        _standardize(w_linear @ u),
        _standardize(nonlinear),
        _standardize(interaction),
        _standardize(terms.w_regime @ u),
    ]


def _combine(mix: tuple[float, ...], scales: tuple[np.float32, np.float32], parts: list[np.ndarray]) -> np.ndarray:
    """The main signal from its parts: interaction and regime parts times their era multipliers."""
    return (
        mix[0] * parts[0] + mix[1] * parts[1] + mix[2] * scales[0] * parts[2] + mix[3] * scales[1] * parts[3]
    ).astype(np.float64)


def _signals(spec: WorldSpec, st: _Structure, bins: np.ndarray, u: np.ndarray, era: int) -> tuple[np.ndarray, ...]:
    """The era's main signal and its learnable version (multipliers at their train-era means,
    drifting weights frozen at the last train era)."""
    physics = st.physics
    parts = _signal_parts(st, bins, u, physics.linear_weights(st.terms.w_linear, era))
    signal = _combine(spec.mix, (physics.interaction_scale[era], physics.regime_sign[era]), parts)
    if physics.drift_w.size:
        parts[0] = _standardize(physics.linear_weights(st.terms.w_linear, None) @ u)
    return signal, _combine(spec.mix, physics.learnable_scales, parts)


def _class_thresholds(y: np.ndarray) -> np.ndarray:
    """Per-column thresholds between the era's 5/20/50/20/5 % classes: (4, T)."""
    n = len(y)
    cuts = np.round(TARGET_CUTS * n).astype(int)
    ordered = np.sort(y, axis=0)
    return (ordered[cuts - 1] + ordered[cuts]) / 2


def _draw_bins(rng: np.random.Generator, spec: WorldSpec, st: _Structure, era: int, n: int) -> np.ndarray:
    """Features: per-era quintile bins of loading * cluster factor + idiosyncratic noise, (F, n) int8.

    Feature-major (F, n) layout throughout: per-feature work is on contiguous memory. Cluster
    factors share a factor of their group, so all features of a group are correlated."""
    f = spec.n_features
    loading = st.physics.loadings(st.loading, era)
    group_factors = rng.standard_normal((len(FEATURE_GROUPS), n), dtype=np.float32)
    factors = rng.standard_normal((st.n_clusters, n), dtype=np.float32)
    factors *= np.float32(np.sqrt(1 - _GROUP_SHARE))
    factors += np.float32(np.sqrt(_GROUP_SHARE)) * group_factors[st.cluster_group]
    latent = rng.standard_normal((f, n), dtype=np.float32)
    latent *= np.sqrt(1 - loading**2)[:, None]
    latent += factors[st.cluster] * loading[:, None]
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
    return bins


def _draw_era(spec: WorldSpec, st: _Structure, era: int, n_rows: int | None, labelled: bool) -> _Era:
    """Generate one era from its own generator; `n_rows=None` draws the count around rows_per_era."""
    rng = np.random.default_rng([spec.seed, 1, era])
    row_factor = rng.uniform(0.9, 1.1)
    n = n_rows if n_rows is not None else int(round(spec.rows_per_era * row_factor))
    bins = _draw_bins(rng, spec, st, era, n)
    u = (bins.astype(np.float32) - 2) * _U_SCALE

    # Targets: main signal + noise, aux columns mix it with their own signal and noise.
    signal, learnable = _signals(spec, st, bins, u, era)
    plan = st.targets
    scale = np.sqrt(sum(w * w for w in spec.mix))
    own = _standardize((u.T @ plan.w_own).astype(np.float64)) * scale
    share, nshare = plan.signal_share, plan.noise_share
    expected = signal[:, None] * share + own * np.sqrt(1 - share**2)
    noise_main = rng.standard_normal(n)
    noise_own = rng.standard_normal((n, len(share)))
    noise = noise_main[:, None] * nshare + noise_own * np.sqrt(1 - nshare**2)
    latent_y = expected + spec.noise_sd * plan.noise_scale * noise
    thresholds = _class_thresholds(latent_y)
    classes = (latent_y[None, :, :] > thresholds[:, None, :]).sum(axis=0)
    targets = TARGET_VALUES[classes]
    nan_draw = rng.random((n, len(share)))
    targets[nan_draw < plan.nan_rows] = np.nan
    targets[:, era < plan.first_labelled_era] = np.nan
    if not labelled:
        targets[:] = np.nan

    # Oracle: E[target | features] = 0.25 * sum_c P(signal + noise > t_c); learnable likewise.
    oracle, learned = (
        0.25 * ndtr((s[:, None] - thresholds[None, :, 0]) / spec.noise_sd).sum(axis=1) for s in (signal, learnable)
    )
    # Benchmarks: the truth of target and target_ender_60 blurred by strong noise, ranked.
    ender60 = plan.columns.index("target_ender_60")  # ender is always among the names
    bench_noise = rng.standard_normal((n, 2))
    benchmarks = np.column_stack(
        [
            _per_era_rank(_standardize(oracle) + _BENCHMARK_NOISE[0] * bench_noise[:, 0]),
            _per_era_rank(_standardize(expected[:, ender60]) + _BENCHMARK_NOISE[1] * bench_noise[:, 1]),
        ]
    )
    truth = np.vstack([oracle, learned]).astype(np.float32)
    return _Era(_ids(spec.seed, era, n), bins, targets, truth, benchmarks)


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


def _write_features_json(path: Path, spec: WorldSpec, st: _Structure) -> None:
    """features.json: small, medium, all, v5.3's `quantum` (the newest features: the highest-numbered),
    the groups and the target columns."""
    sets = {"small": st.small, "medium": st.medium, "all": st.feature_names}
    if spec.data_version == "v5.3":
        sets["quantum"] = st.feature_names[len(st.feature_names) - round(QUANTUM_SHARE * len(st.feature_names)) :]
    path.write_text(json.dumps({"feature_sets": sets | st.groups, "targets": st.targets.columns}, indent=1))


def write_world(out_dir: str | Path, spec: WorldSpec = DEFAULT_WORLD, progress: bool = True) -> Path:
    """Write a whole synthetic world (Numerai v5 file layout plus `oracle.parquet`) into `out_dir`.

    Eras are generated and written one at a time, so memory stays at a few eras whatever the size.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    st = _build_structure(spec)
    _write_features_json(out / "features.json", spec, st)

    data_schema = _schema(
        ["era", "data_type"],
        {name: np.int8 for name in st.feature_names} | {name: np.float32 for name in st.targets.columns},
    )
    bench_schema = _schema(["era"], {name: np.float32 for name in spec.benchmark_columns})
    oracle_schema = _schema(["era"], {"oracle": np.float32, "learnable": np.float32})
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
        columns |= {
            name: pa.array(targets_by_column[j], from_pandas=False) for j, name in enumerate(st.targets.columns)
        }
        data[kind].add(columns)
        predictions = {name: pa.array(drawn.benchmarks[:, j]) for j, name in enumerate(spec.benchmark_columns)}
        bench[kind].add({"id": ids, "era": eras} | predictions)
        oracle.add({"id": ids, "era": eras, "oracle": pa.array(drawn.truth[0]), "learnable": pa.array(drawn.truth[1])})
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


def _groups(text: str) -> tuple[str, ...]:
    """--signal-groups: comma-separated Numerai group names ('' for every group)."""
    return tuple(name.strip() for name in text.split(",") if name.strip())


# CLI option -> (WorldSpec field, type, help); unset options take the --world's values.
_OPTIONS: dict[str, tuple[str, object, str]] = {
    "--eras": ("n_eras", int, "train + validation eras; live is the next era"),
    "--validation-eras": ("n_validation_eras", int, "newest eras that form validation"),
    "--unlabelled-eras": ("n_unlabelled_eras", int, "newest validation eras whose targets are all NaN, as on Numerai"),
    "--rows": ("rows_per_era", int, "mean rows per era (each era varies by up to 10%%)"),
    "--live-rows": ("live_rows", int, "rows of the live era"),
    "--features": ("n_features", int, "number of feature columns"),
    "--target-names": ("n_target_names", int, "how many of Numerai's target names (ender first) get _20, _60 columns"),
    "--noise-sd": ("noise_sd", float, "target noise sd per unit of signal sd; higher means a weaker signal"),
    "--seed": ("seed", int, "same seed, same bytes"),
    "--linear-weight": ("linear_weight", float, "weight of the linear part of the signal"),
    "--nonlinear-weight": ("nonlinear_weight", float, "weight of the nonlinear part (bin shapes, squared means)"),
    "--interaction-weight": ("interaction_weight", float, "weight of the pairwise-interaction part"),
    "--regime-weight": ("regime_weight", float, "weight of the regime part (the part --regimes scales or flips)"),
    "--regimes": ("regimes", REGIME_PROCESSES, "what changes the interaction and regime parts over eras"),
    "--regime-block-eras": ("regime_block_eras", int, "eras per block of --regimes blocks"),
    "--regime-block-random": ("regime_block_random", bool, "random block lengths (0.5x to 1.5x --regime-block-eras)"),
    "--drift-share": ("drift_share", float, "share of the features that drift"),
    "--drift-weights": ("drift_weights", float, "sd of a drifting feature's linear weight change per 100 eras"),
    "--drift-loadings": ("drift_loadings", float, "sd of a drifting feature's loading change per 100 eras"),
    "--signal-groups": ("signal_groups", _groups, "comma-separated feature groups that alone carry signal"),
    "--data-version": ("data_version", tuple(worlds.DATA_VERSIONS), "layout of features.json and benchmark names"),
}


def _add_option(parser: argparse.ArgumentParser, option: str, field: str, kind: object, text: str) -> None:
    shown = getattr(DEFAULT_WORLD, field)
    shown = ",".join(shown) if isinstance(shown, tuple) else shown
    help_text = f"{text} (default world: {shown})"
    if kind is bool:
        parser.add_argument(option, dest=field, action=argparse.BooleanOptionalAction, default=None, help=help_text)
    elif isinstance(kind, tuple):
        parser.add_argument(option, dest=field, choices=kind, default=None, help=help_text)
    else:
        metavar = {int: "N", float: "X"}.get(kind, "A,B")
        parser.add_argument(option, dest=field, type=kind, default=None, metavar=metavar, help=help_text)


def _parse_args(argv: list[str] | None) -> tuple[Path, WorldSpec, bool]:
    parser = argparse.ArgumentParser(
        prog="python -m pipeline.synthetic",
        description="Write a synthetic Numerai v5 world (features.json, train/validation/live parquet, "
        "benchmark model files and oracle.parquet with the oracle and the learnable ceiling) into OUT_DIR. "
        "Options override the --world's settings; pipeline/worlds.py defines each.",
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", type=Path, help="directory to write into (created if needed)")
    parser.add_argument("--world", choices=list(WORLDS), default="default", help="the named world to start from")
    for option, (field, kind, text) in _OPTIONS.items():
        _add_option(parser, option, field, kind, text)
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    given = {field: getattr(args, field) for field, _, _ in _OPTIONS.values() if getattr(args, field) is not None}
    try:
        spec = dataclasses.replace(world_spec(args.world), **given)
    except ValueError as error:
        parser.error(str(error))
    return args.out_dir, spec, not args.quiet


def main(argv: list[str] | None = None) -> None:
    """CLI entry point: `python -m pipeline.synthetic OUT_DIR [options]`."""
    out_dir, spec, progress = _parse_args(argv)
    write_world(out_dir, spec, progress)


# The embedded default data's cache (what `python build_model.py` builds on without --data-dir).
CACHE_ENV = "NUMERAI_PIPELINE_CACHE"
COMPLETE_MARKER = ".complete"


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "numerai-pipeline")).expanduser()


def default_data_dir() -> Path:
    """The embedded default data: the default synthetic world, generated once and cached."""
    # Keyed by the generator's source, so a changed generator never reuses a stale world.
    version = generator_digest()
    target = cache_root() / f"synthetic-default-{version}"
    if not (target / COMPLETE_MARKER).is_file():
        logger.info("generating the default synthetic Numerai world into %s (once)", target)
        write_world(target, DEFAULT_WORLD)
        (target / COMPLETE_MARKER).write_text("ok\n")
    return target


if __name__ == "__main__":
    main()
