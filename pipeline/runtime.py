"""The only code that runs inside Numerai's container: the `predict(live_features)` closure, or
`predict(live_features, live_benchmark_models)` when a member reads the benchmark models.

It imports numpy, pandas and lightgbm and nothing else, and is pickled by value
(`cloudpickle.register_pickle_by_value`), so the pickle works where this package is not installed.
Its state is plain data (`PickleState`): feature names, LightGBM model text, the feature pipeline's
arrays, neural weights and blend weights. The TypedDicts below are its schema; at run time they are
plain dicts, so the pickle's bytes do not depend on them.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any, Literal, NamedTuple, TypedDict, Union

import lightgbm as lgb
import numpy as np
import pandas as pd

PREDICT_CHUNK_ROWS = 8192
MISSING_VALUE = 2


class MixerState(TypedDict):
    """The feature pipeline's per-group MLPs: token columns [groups, width] and each cross-fitted
    model's weights (`w1` [groups, width, hidden], `b1`, `w2` [groups, hidden], `b2`)."""

    index: np.ndarray
    models: list[dict[str, np.ndarray]]


class TransformState(TypedDict):
    """A fitted feature pipeline (`pipeline.features.FeaturePipeline.transform_`): the missing-value
    policy ("keep" or "nan"), averaging matrices (features x sets) of correlated-feature clusters and
    of feature groups, the group mixers, the names of the era-wise columns, and the raw columns a
    member over a feature subset keeps (None: all)."""

    missing: Literal["keep", "nan"]
    cluster_avg: np.ndarray | None
    group_avg: np.ndarray | None
    mixer: MixerState | None
    extra_names: list[str]
    columns: np.ndarray | None


class LightGBMState(TypedDict):
    """A LightGBM member: its model text and the feature pipeline it reads (None: raw features)."""

    name: str
    kind: Literal["lightgbm"]
    weight: float
    model_text: str
    transform: TransformState | None


class NeuralState(TypedDict):
    """An MLP or TSMixer-Ext member: float32 arrays of its torch state_dict, and a config of plain
    Python (architecture, head, tokens, feature names, ...) for the numpy forward pass below."""

    name: str
    kind: Literal["mlp", "tsmixer"]
    weight: float
    arrays: dict[str, np.ndarray]
    config: dict[str, Any]


class FunctionState(TypedDict):
    """A member of a kind this module does not know (a user's own): `function(params, features, eras)`
    gives its raw scores. The function's module is pickled by value with this one, so it may import
    only what Numerai's container has (numpy, pandas, lightgbm, scikit-learn, scipy)."""

    name: str
    kind: Literal["function"]
    weight: float
    function: Callable[[dict[str, Any], np.ndarray, np.ndarray | None], np.ndarray]
    params: dict[str, Any]


class BenchmarkLightGBMState(TypedDict):
    """A LightGBM member that also reads one benchmark model's live predictions: its model text, the
    feature pipeline it reads and the benchmark's column, whose per-era rank is its last input."""

    name: str
    kind: Literal["lightgbm_benchmark"]
    weight: float
    model_text: str
    transform: TransformState | None
    benchmark: str


MemberState = Union[LightGBMState, NeuralState, FunctionState, BenchmarkLightGBMState]


class PickleState(TypedDict):
    """Everything the predict closure holds: feature names (live columns by name), the exported
    members (blended by `weight`), the neutralization proportion of the blend and the feature columns it
    is neutralized against (None: all)."""

    feature_names: list[str]
    members: list[MemberState]
    neutralization: float
    neutralizer_columns: list[int] | None


class LiveInputs(NamedTuple):
    """One predict call's rows as the members read them: float32 features, each row's era (None: all
    one era), built boosters (kept across calls), each feature pipeline's matrix (this call's) and
    the benchmark models' predictions on the rows, by column (NaN where an id has none)."""

    features: np.ndarray
    eras: np.ndarray | None
    boosters: dict[str, lgb.Booster]
    matrices: dict
    benchmarks: dict[str, np.ndarray] | None = None


def rank_within_groups(values: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """Percentile ranks in (0, 1) within each group (an era), ties averaged, as Numerai ranks."""
    series = pd.Series(values)
    if groups is None:
        ranked = series.rank(method="average")
        counts = np.full(len(values), len(values), dtype=np.float64)
    else:
        grouped = series.groupby(np.asarray(groups), sort=False)
        ranked = grouped.rank(method="average")
        counts = grouped.transform("size").to_numpy(dtype=np.float64)
    return (ranked.to_numpy(dtype=np.float64) - 0.5) / counts


def first_names(names: list[str], most: int = 10) -> str:
    """Up to `most` names for a message, and how many more there are."""
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def feature_matrix(live_features: pd.DataFrame, feature_names: list[str]) -> np.ndarray:
    """The model's features by name, as float32 rows; extra or reordered columns are fine. NaN
    values become 2, Numerai's marker for a missing value, with a warning naming the columns."""
    if not isinstance(live_features, pd.DataFrame):
        raise TypeError(f"predict expects a pandas DataFrame of live features, got {type(live_features).__name__}")
    missing = [name for name in feature_names if name not in live_features.columns]
    if missing:
        raise KeyError(f"live features lack {len(missing)} feature column(s) the model needs: {first_names(missing)}")
    x = live_features[feature_names].to_numpy(dtype=np.float32)
    unknown = np.isnan(x)
    if unknown.any():
        # A few NaN must not cost a round (the neutralization's least-squares fit fails on them):
        # they get the value Numerai itself gives a feature it lacks.
        columns = [feature_names[j] for j in np.flatnonzero(unknown.any(axis=0))]
        warnings.warn(
            f"live features hold {int(unknown.sum())} NaN value(s) in {len(columns)} column(s) "
            f"({first_names(columns)}); "
            f"predicting with them as {MISSING_VALUE}, Numerai's value for a missing feature",
            stacklevel=2,
        )
        x[unknown] = MISSING_VALUE
    return x


def missing_columns(x: np.ndarray) -> np.ndarray:
    """Columns that are 2 in every row of one era's rows: Numerai's marker for a missing feature."""
    return (x.min(axis=0) == MISSING_VALUE) & (x.max(axis=0) == MISSING_VALUE)


def set_sums(x: np.ndarray, averaging: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's sum over every column set of an averaging matrix (features x sets), and the sets'
    sizes. The sums of 0..4 bins are exact integers in float32, so they are the same whatever rows a
    batch holds: LightGBM's training batches and the pickle's whole eras agree to the last bit."""
    members = averaging > 0
    return x.astype(np.float32) @ members.astype(np.float32), members.sum(axis=0).astype(np.float32)


def group_means(transform: TransformState, x: np.ndarray) -> np.ndarray:
    """Each row's mean of every feature group (rows x groups)."""
    sums, sizes = set_sums(x, transform["group_avg"])
    return sums / sizes


def era_features(transform: TransformState, x: np.ndarray, era_group_means: np.ndarray | None = None) -> np.ndarray:
    """Cross-sectional features of rows of one era: means of correlated-feature clusters, each
    group's mean and dispersion, and how far a row's group mean sits from its era's mean of it.

    `era_group_means` (rows x groups) is that era mean; None means `x` is the whole era (live),
    so the figure is computed from `x` itself. float32 (rows x len(transform["extra_names"]))."""
    x = x.astype(np.float32)
    blocks = []
    if transform["cluster_avg"] is not None:
        sums, sizes = set_sums(x, transform["cluster_avg"])
        blocks.append(sums / sizes)
    if transform["group_avg"] is not None:
        sums, sizes = set_sums(x, transform["group_avg"])
        squares, _ = set_sums(np.square(x), transform["group_avg"])
        means = sums / sizes
        # The variance in float64: in float32 its cancellation differs by a few 1e-6 between batch shapes.
        variance = squares.astype(np.float64) / sizes - np.square(sums.astype(np.float64) / sizes)
        spread = np.sqrt(np.maximum(variance, 0.0)).astype(np.float32)
        centre = means.mean(axis=0) if era_group_means is None else era_group_means
        blocks += [means, spread, means - centre]
    if not blocks:
        return np.zeros((len(x), 0), dtype=np.float32)
    return np.hstack(blocks).astype(np.float32)


def group_mixer_outputs(mixer: MixerState, x: np.ndarray, models: list[int] | None = None) -> np.ndarray:
    """Main-target outputs (rows x groups) of the small per-group MLPs on raw 0..4 rows, averaged
    over the mixer's cross-fitted models (or only `models`)."""
    index = mixer["index"]
    grouped = token_columns(scaled_bins(x), index)
    out = np.zeros((index.shape[0], len(x)), dtype=np.float32)
    chosen = range(len(mixer["models"])) if models is None else models
    for k in chosen:
        m = mixer["models"][k]
        hidden = np_gelu(np.matmul(grouped, m["w1"]) + m["b1"][:, None, :])
        out += np.einsum("gnh,gh->gn", hidden, m["w2"]) + m["b2"][:, None]
    return (out / len(chosen)).T


def mixer_features(mixer: MixerState, x: np.ndarray, models: list[int] | None = None) -> np.ndarray:
    """Per-era ranks of the group mixers' outputs on ONE era's rows: ranks keep a row's place in its
    era, so cross-fitted outputs in training and averaged outputs live look alike to the trees."""
    outputs = group_mixer_outputs(mixer, x, models)
    return np.column_stack([rank_within_groups(column, None) for column in outputs.T]).astype(np.float32)


def model_matrix(transform: TransformState | None, x: np.ndarray, eras: np.ndarray | None) -> np.ndarray:
    """What the LightGBM members see: the raw features (a member over a feature subset: its
    `columns` only; NaN where missing in an era, under the "nan" policy) followed by the era-wise
    features of all features, as float32, built one era at a time. No transform: the raw features."""
    if transform is None:
        return x.astype(np.float32)
    columns = transform.get("columns")
    n_raw = x.shape[1] if columns is None else len(columns)
    out = np.empty((len(x), n_raw + len(transform["extra_names"])), dtype=np.float32)
    for rows in era_row_groups(eras, len(x)):
        block = x[rows].astype(np.float32)
        extra = era_features(transform, block)
        if transform.get("mixer") is not None:
            extra = np.hstack([extra, mixer_features(transform["mixer"], block)])
        out[rows, n_raw:] = extra
        if transform["missing"] == "nan":
            block[:, missing_columns(block)] = np.nan
        out[rows, :n_raw] = block if columns is None else block[:, columns]
    return out


def booster_predict(
    booster: lgb.Booster, features: np.ndarray, num_iteration: int | None = None, start_iteration: int = 0
) -> np.ndarray:
    """Booster output in row chunks, so no float64 copy of the whole matrix is made."""
    out = np.empty(len(features), dtype=np.float64)
    for start in range(0, len(features), PREDICT_CHUNK_ROWS):
        stop = start + PREDICT_CHUNK_ROWS
        out[start:stop] = booster.predict(
            features[start:stop], start_iteration=start_iteration, num_iteration=num_iteration
        )
    return out


def shared_model_matrix(
    transform: TransformState | None, features: np.ndarray, eras: np.ndarray | None, matrices: dict
) -> np.ndarray:
    """`model_matrix` of `transform`, built once per feature pipeline and kept in `matrices`:
    members over feature subsets, whose transforms differ from their pipeline's only in the raw
    `columns`, take those columns from the matrix of every column rather than building their own."""
    columns = None if transform is None else transform.get("columns")
    every = transform if columns is None else {key: value for key, value in transform.items() if key != "columns"}
    key = (
        None
        if every is None
        else (
            every["missing"],
            tuple(every["extra_names"]),
            *(id(every.get(part)) for part in ("cluster_avg", "group_avg", "mixer")),
        )
    )
    if key not in matrices:
        matrices[key] = model_matrix(every, features, eras)
    if columns is None:
        return matrices[key]
    return matrices[key][:, np.concatenate([columns, np.arange(features.shape[1], matrices[key].shape[1])])]


def lightgbm_member_scores(member: LightGBMState, inputs: LiveInputs) -> np.ndarray:
    """A LightGBM member's raw scores on its feature pipeline's matrix (shared with the members that
    read the same pipeline), the booster built once from its model text."""
    if member["name"] not in inputs.boosters:
        inputs.boosters[member["name"]] = lgb.Booster(model_str=member["model_text"])
    matrix = shared_model_matrix(member.get("transform"), inputs.features, inputs.eras, inputs.matrices)
    return booster_predict(inputs.boosters[member["name"]], matrix)


def function_member_scores(member: FunctionState, inputs: LiveInputs) -> np.ndarray:
    """A user's own member: its exported function on the raw float32 features."""
    return np.asarray(member["function"](member["params"], inputs.features, inputs.eras), dtype=np.float64)


def benchmark_ranks(values: np.ndarray, eras: np.ndarray | None) -> np.ndarray:
    """A benchmark model's predictions as per-era ranks in (0, 1), the input the benchmark members
    train and predict on; a row without a prediction gets 0.5, the middle of its era."""
    values = np.asarray(values, dtype=np.float64)
    known = ~np.isnan(values)
    ranks = np.full(len(values), 0.5)
    if known.any():
        ranks[known] = rank_within_groups(values[known], None if eras is None else np.asarray(eras)[known])
    return ranks


def live_benchmarks(frame: pd.DataFrame, index: pd.Index, names: list[str]) -> dict[str, np.ndarray]:
    """The benchmark columns `names` of `live_benchmark_models` (as numerai-predict passes it: index
    id, one column per benchmark model), aligned by id to the live features' `index`."""
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(
            "predict's second argument must be the live benchmark models as a pandas DataFrame "
            f"(live_benchmark_models.parquet), got {type(frame).__name__}"
        )
    if frame.index.name != "id" and "id" in frame.columns:
        frame = frame.set_index("id")
    missing = [name for name in names if name not in frame.columns]
    if missing:
        raise KeyError(
            f"live benchmark models lack the column(s) {first_names(missing)} the model was trained on; "
            f"they have {first_names([str(c) for c in frame.columns])}"
        )
    if not frame.index.is_unique:
        raise ValueError("live benchmark models repeat some ids; expected one row per id")
    aligned = frame[names].reindex(pd.Index(index)).astype(np.float64)
    unknown = int(aligned.isna().any(axis=1).sum())
    if unknown == len(aligned):
        raise ValueError(
            "live benchmark models share no id with the live features; expected them indexed by id, as "
            "live_benchmark_models.parquet is"
        )
    if unknown:
        warnings.warn(
            f"live benchmark models lack {unknown} of {len(aligned)} live ids; those rows take the middle rank",
            stacklevel=2,
        )
    return {name: aligned[name].to_numpy() for name in names}


def benchmark_member_scores(member: BenchmarkLightGBMState, inputs: LiveInputs) -> np.ndarray:
    """A benchmark member's raw scores: its feature pipeline's matrix, then the benchmark's per-era rank."""
    if inputs.benchmarks is None or member["benchmark"] not in inputs.benchmarks:
        raise ValueError(f"member {member['name']!r} needs the live benchmark model {member['benchmark']!r}")
    if member["name"] not in inputs.boosters:
        inputs.boosters[member["name"]] = lgb.Booster(model_str=member["model_text"])
    matrix = shared_model_matrix(member.get("transform"), inputs.features, inputs.eras, inputs.matrices)
    ranks = benchmark_ranks(inputs.benchmarks[member["benchmark"]], inputs.eras).astype(np.float32)
    return booster_predict(inputs.boosters[member["name"]], np.hstack([matrix, ranks[:, None]]))


def member_scores(
    member: MemberState,
    features: np.ndarray,
    cache: dict,
    eras: np.ndarray | None = None,
    matrices: dict | None = None,
    benchmarks: dict[str, np.ndarray] | None = None,
) -> np.ndarray:
    """Raw scores of one exported member on float32 features; `cache` keeps built boosters.

    `eras` (one per row, None: all rows are one era) groups rows for the era-wise features and the
    era context of neural members. `matrices`, kept for one call's `features`, holds each feature
    pipeline's output, so LightGBM members sharing a pipeline transform the rows once. `benchmarks`:
    the benchmark models' predictions on the rows, for the members that read them.
    """
    if member["kind"] not in MEMBER_PREDICTORS:
        raise ValueError(f"unknown member kind {member['kind']!r}; this runtime knows {sorted(MEMBER_PREDICTORS)}")
    inputs = LiveInputs(features, eras, cache, {} if matrices is None else matrices, benchmarks)
    return MEMBER_PREDICTORS[member["kind"]](member, inputs)


def blend_ranks(scores: np.ndarray, weights: np.ndarray, eras: np.ndarray | None) -> np.ndarray:
    """Weighted average of each member's per-era ranks (`scores` is rows x members)."""
    weights = np.asarray(weights, dtype=np.float64)
    weights = weights / weights.sum()
    blended = np.zeros(len(scores), dtype=np.float64)
    for column, weight in zip(np.asarray(scores, dtype=np.float64).T, weights, strict=False):
        blended += weight * rank_within_groups(column, eras)
    return blended


def feature_projection(
    values: np.ndarray, features: np.ndarray, eras: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Centred per-era ranks of `values` and, era by era, their least-squares projection onto the
    features plus a constant (numerai_tools.scoring.neutralize's regression, in numpy)."""
    ranks = rank_within_groups(values, eras) - 0.5
    projection = np.empty_like(ranks)
    for rows in era_row_groups(eras, len(values)):
        exposures = np.hstack([features[rows].astype(np.float64), np.ones((len(rows), 1))])
        beta = np.linalg.lstsq(exposures, ranks[rows], rcond=1e-6)[0]
        projection[rows] = exposures.dot(beta)
    return ranks, projection


def neutralize_within_eras(
    values: np.ndarray, features: np.ndarray, eras: np.ndarray | None, proportion: float
) -> np.ndarray:
    """Remove `proportion` of the feature exposure of the per-era ranks of `values`, era by era:
    numerai_tools.scoring.neutralize in numpy, because the container must not need numerai-tools."""
    if proportion == 0:
        return rank_within_groups(values, eras) - 0.5
    ranks, projection = feature_projection(values, features, eras)
    return ranks - proportion * projection


def ensemble_scores(
    scores: np.ndarray,
    weights: np.ndarray,
    features: np.ndarray,
    eras: np.ndarray | None,
    proportion: float,
    columns: np.ndarray | None = None,
) -> np.ndarray:
    """The shipped ensemble: members' per-era ranks blended with `weights`, then neutralized by
    `proportion` against the feature `columns` (None: all). The CV, the validation figures and the
    pickle all call this one function."""
    neutralizers = features if columns is None or proportion == 0 else features[:, np.asarray(columns)]
    return neutralize_within_eras(blend_ranks(scores, weights, eras), neutralizers, eras, proportion)


def make_predict(state: PickleState) -> Callable[..., pd.DataFrame]:
    """Build the closure Numerai calls each round: `predict(live_features)`, or, when a member reads
    the benchmark models, `predict(live_features, live_benchmark_models)` (numerai-predict counts the
    parameters and passes live_benchmark_models.parquet as the second).

    `state` holds `feature_names`, `members` (exported models, blended as a weighted average of
    per-era ranks) and `neutralization`, the proportion of feature exposure removed from the blend
    within each era (0 when absent).
    """
    feature_names = list(state["feature_names"])
    members = [dict(m) for m in state["members"]]
    weights = np.asarray([m["weight"] for m in members], dtype=np.float64)
    proportion = float(state.get("neutralization", 0.0))
    columns = state.get("neutralizer_columns")
    columns = None if columns is None else np.asarray(columns, dtype=np.int64)
    cache: dict = {}
    needed = sorted({m["benchmark"] for m in members if m["kind"] in BENCHMARK_KINDS})

    def predictions(live_features: pd.DataFrame, benchmarks: dict[str, np.ndarray] | None) -> pd.DataFrame:
        features = feature_matrix(live_features, feature_names)
        eras = live_features["era"].to_numpy() if "era" in live_features.columns else None
        matrices: dict = {}
        scores = np.column_stack(
            [member_scores(member, features, cache, eras, matrices, benchmarks) for member in members]
        )
        blended = ensemble_scores(scores, weights, features, eras, proportion, columns)
        prediction = rank_within_groups(blended, eras)
        index = pd.Index(live_features.index, name="id")
        return pd.DataFrame({"prediction": prediction}, index=index)

    if not needed:

        def predict(live_features: pd.DataFrame) -> pd.DataFrame:
            return predictions(live_features, None)

        return predict

    def predict_with_benchmarks(live_features: pd.DataFrame, live_benchmark_models: pd.DataFrame) -> pd.DataFrame:
        if not isinstance(live_features, pd.DataFrame):
            raise TypeError(f"predict expects a pandas DataFrame of live features, got {type(live_features).__name__}")
        return predictions(live_features, live_benchmarks(live_benchmark_models, live_features.index, needed))

    return predict_with_benchmarks


# Numpy forward passes of the neural members (pipeline.models.tsmixer trains them with torch).
# GELU is the tanh form on both sides, so numpy and torch compute the same function.
GELU_C = 0.7978845608028654  # sqrt(2 / pi)
N_BINS = 5


def np_gelu(x: np.ndarray) -> np.ndarray:
    """GELU, tanh form (torch's `gelu(approximate="tanh")`), in place on one temporary: x**3 is
    avoided because numpy's power is slow for negative float32 values."""
    out = x * x
    out *= 0.044715
    out += 1.0
    out *= x
    out *= GELU_C
    np.tanh(out, out=out)
    out += 1.0
    out *= x
    out *= 0.5
    return out


def np_linear(x: np.ndarray, weight: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """torch.nn.Linear on the last axis, as one 2-D matrix product."""
    flat = x.reshape(-1, x.shape[-1]) @ weight.T + bias
    return flat.reshape(*x.shape[:-1], weight.shape[0])


def np_rms_norm(x: np.ndarray, weight: np.ndarray, eps: float) -> np.ndarray:
    """RMSNorm over the last axis: x / sqrt(mean(x**2) + eps) * weight, as the training side's."""
    out = x / np.sqrt(np.square(x).mean(-1, keepdims=True) + eps)
    out *= weight
    return out


def np_softmax(z: np.ndarray) -> np.ndarray:
    """Softmax over the last axis, shifted by the maximum for stability."""
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def era_row_groups(eras: np.ndarray | None, n_rows: int) -> list[np.ndarray]:
    """Row indices of each era; one group of every row when there is no era column."""
    if eras is None:
        return [np.arange(n_rows)]
    _, inverse = np.unique(np.asarray(eras).astype(str), return_inverse=True)
    order = np.argsort(inverse, kind="stable")
    return np.split(order, np.flatnonzero(np.diff(inverse[order])) + 1)


def token_index(tokens: list, n_features: int) -> np.ndarray:
    """[G, P] feature columns of each token, padded with `n_features` (a zero column)."""
    index = np.full((len(tokens), max(len(t) for t in tokens)), n_features, dtype=np.int64)
    for g, members in enumerate(tokens):
        index[g, : len(members)] = members
    return index


def scaled_bins(x: np.ndarray) -> np.ndarray:
    """Features 0..4 as float32 -1..1, the scaling every neural network here trains on."""
    return (x.astype(np.float32) - 2.0) / 2.0


def token_columns(x: np.ndarray, index: np.ndarray) -> np.ndarray:
    """[G, N, P] columns of each token (`token_index`), padding positions reading a zero column."""
    padded = np.concatenate([x, np.zeros((len(x), 1), dtype=x.dtype)], axis=1)
    return padded[:, index.ravel()].reshape(len(x), *index.shape).transpose(1, 0, 2)


def feature_bins(x: np.ndarray) -> np.ndarray:
    """Scaled features (-1..1) back to their bins 0..4, as int64."""
    return np.clip(np.rint(x * 2.0 + 2.0), 0, N_BINS - 1).astype(np.int64)


def bin_embedding_tokens(x: np.ndarray, index: np.ndarray, bin_w: np.ndarray) -> np.ndarray:
    """[N, G, d] sums of each token's per-(feature, bin) embeddings: one token's one-hot matmul at
    a time, so memory stays at [N, P * 5] even at Numerai's width (padding bin 5 matches nothing)."""
    n, d = len(x), bin_w.shape[-1]
    bins = np.concatenate([feature_bins(x), np.full((n, 1), N_BINS, dtype=np.int64)], axis=1)
    levels = np.arange(N_BINS)
    out = np.empty((n, len(index), d), dtype=np.float32)
    for g, columns in enumerate(index):
        one_hot = (bins[:, columns, None] == levels).reshape(n, -1).astype(np.float32)
        out[:, g] = one_hot @ bin_w[g].reshape(-1, d)
    return out


def tsmixer_forward(arrays: dict, config: dict, x: np.ndarray, index: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """TSMixer-Ext on the scaled rows of ONE era: (main outputs [N, 5 or 1], auxiliary outputs [N, A]).

    The era context needs every row's tokens; after it rows are independent, so the blocks run on
    chunks of MIXER_ROWS rows (see `mixer_rows`)."""
    a = arrays
    n = len(x)
    h = np.matmul(token_columns(x, index), a["embed_w"]).transpose(1, 0, 2) + a["embed_b"]
    if config["bin_embedding"]:
        h += bin_embedding_tokens(x, index, a["bin_w"])
    context = None
    if config["era_context"]:
        flat = h.reshape(n, -1)
        mean = flat.mean(0)
        std = np.sqrt(((flat - mean) ** 2).mean(0) + config["context_eps"])
        context = np_gelu(np_linear(np.concatenate([mean, std]), a["context.weight"], a["context.bias"]))
    outputs = [mixer_rows(a, config, h[start : start + MIXER_ROWS], context) for start in range(0, n, MIXER_ROWS)]
    return np.concatenate([main for main, _ in outputs]), np.concatenate([aux for _, aux in outputs])


# Rows per chunk of TSMixer-Ext's blocks: at Numerai's width a whole era's [N, G, ff] temporaries
# are ~0.5 GB each, and every one of them is fresh memory the kernel has to map and zero; chunks of a
# few MB are reused by the allocator (bench.tsmixer times the forward pass; the README has the figures).
MIXER_ROWS = 256


def mixer_rows(arrays: dict, config: dict, h: np.ndarray, context: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """The mixer blocks and heads on tokens [rows, G, d] of one era, with that era's context."""
    a, eps, d = arrays, config["norm_eps"], h.shape[2]
    for i in range(config["n_block"]):
        p = f"blocks.{i}."
        z = np_rms_norm(h, a[p + "token_norm.weight"], eps)
        z = np_gelu(np_linear(z.transpose(0, 2, 1), a[p + "token_mix.weight"], a[p + "token_mix.bias"]))
        h = h + z.transpose(0, 2, 1)
        z = np_rms_norm(h, a[p + "feature_norm.weight"], eps)
        w1 = a[p + "ff1.weight"]
        pre = np_linear(z, w1[:, :d], a[p + "ff1.bias"])
        if context is not None:
            pre = pre + context @ w1[:, d:].T
        h = h + np_linear(np_gelu(pre), a[p + "ff2.weight"], a[p + "ff2.bias"])
    out = np_linear(h.transpose(0, 2, 1), a["target_proj.weight"], a["target_proj.bias"])
    main = np_linear(out[:, :, 0], a["main_head.weight"], a["main_head.bias"])
    aux = (out[:, :, 1:] * a["aux_w"].T).sum(1) + a["aux_b"]
    return main, aux


def mlp_forward(arrays: dict, config: dict, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The MLP baseline: (main outputs, auxiliary outputs). A one-hot first layer is applied as
    one matmul per bin (its weight columns are feature-major, bin-minor), never building [N, F * 5]."""
    for i in range(config["n_layers"]):
        weight, bias = arrays[f"layers.{i}.weight"], arrays[f"layers.{i}.bias"]
        if i == 0 and config["one_hot"]:
            bins = feature_bins(x)
            pre = sum((bins == b).astype(np.float32) @ weight[:, b::N_BINS].T for b in range(N_BINS)) + bias
        else:
            pre = np_linear(x, weight, bias)
        x = np_gelu(pre)
    main = np_linear(x, arrays["main_head.weight"], arrays["main_head.bias"])
    if "aux_head.weight" not in arrays:
        return main, np.zeros((len(x), 0), dtype=x.dtype)
    return main, np_linear(x, arrays["aux_head.weight"], arrays["aux_head.bias"])


def neural_prediction(main: np.ndarray, aux: np.ndarray, config: dict) -> np.ndarray:
    """Expected value of the 5-class distribution (or the regression output), blended with the
    mean auxiliary output when the config's `aux_weight` > 0."""
    if config["head"] == "ce":
        pred = np_softmax(main) @ np.asarray(config["classes"], dtype=main.dtype)
    else:
        pred = main[:, 0]
    if config["aux_weight"] > 0 and aux.shape[1] > 0:
        pred = (1 - config["aux_weight"]) * pred + config["aux_weight"] * aux.mean(1)
    return pred


def neural_member_scores(member: NeuralState, features: np.ndarray, eras: np.ndarray | None = None) -> np.ndarray:
    """Scores of a "tsmixer" or "mlp" member on raw 0..4 float32 features, one era at a time
    (the era context summarizes only the era's own rows)."""
    arrays, config = member["arrays"], member["config"]
    n_features = len(config["feature_names"])
    if features.shape[1] != n_features:
        raise ValueError(f"member {member['name']!r} expects {n_features} features, got {features.shape[1]}")
    index = token_index(config["tokens"], n_features) if config["architecture"] == "tsmixer" else None
    out = np.empty(len(features), dtype=np.float64)
    for rows in era_row_groups(eras, len(features)):
        x = scaled_bins(features[rows])
        if index is not None:
            main, aux = tsmixer_forward(arrays, config, x, index)
        else:
            main, aux = mlp_forward(arrays, config, x)
        out[rows] = neural_prediction(main, aux, config)
    return out


def neural_scores(member: NeuralState, inputs: LiveInputs) -> np.ndarray:
    """`neural_member_scores` on one predict call's rows."""
    return neural_member_scores(member, inputs.features, inputs.eras)


# How each kind of exported member predicts: one function per kind, `fn(member, inputs)`.
MEMBER_PREDICTORS: dict[str, Callable[[Any, LiveInputs], np.ndarray]] = {
    "lightgbm": lightgbm_member_scores,
    "mlp": neural_scores,
    "tsmixer": neural_scores,
    "function": function_member_scores,
    "lightgbm_benchmark": benchmark_member_scores,
}
# Kinds that read the live benchmark models (the pickle then takes them as its second parameter).
BENCHMARK_KINDS = ("lightgbm_benchmark",)
