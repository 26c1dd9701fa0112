"""What work costs on this machine, measured before a build on a sample of its data (`Calibration`),
for `pipeline.plan`.

Everything is timed in CPU seconds on one thread (what others run on the cores meanwhile does not
count): binning at two sizes (raw and engineered features, and the engineered view's per-era
figures), `CALIBRATION_TREES` trees of every distinct LightGBM setting at two sizes and their
prediction with one tree and `PREDICT_TREES`, the feature pipeline with and without its group mixers,
and one epoch of each neural member. Costs grow linearly with the rows and columns they touch (a
tree: a fixed part for its split search plus a part linear in rows x columns for its histograms),
so a size the data does not have is planned from the same measurements. Per-era least squares (the
validation figures' FNC and exposure, neutralization) grow faster than that; they are measured once
at the planned era's own rows x features, on random data.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import lightgbm as lgb
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from pipeline.analysis import feature_era_corr, validation_figures
from pipeline.binning import Rows, labelled
from pipeline.build import Prepared
from pipeline.data import EraFrame
from pipeline.feature_choice import ALL_TRANSFORMS, PIPELINE_CONFIGS
from pipeline.features import FeaturePipeline
from pipeline.models.lgbm import BIN_SAMPLE_ROWS, LGBMModel
from pipeline.presets import PROBE
from pipeline.resources import peak_rss_mb, reset_peak
from pipeline.runtime import booster_predict, feature_projection
from pipeline.searches import gbdt_trials
from pipeline.targets import aux_targets

# Rows the costs are measured on (and half of them), in about SAMPLE_ERAS evenly spaced eras.
SAMPLE_ROWS = 40_000
SAMPLE_ERAS = 48
CALIBRATION_TREES = 8
# The most rows binning is timed on (and half of them), the sample's rows repeated where it has fewer
# than the plan's fits: both sizes at least LightGBM's bin sample (`calibrate_binning`).
BINNING_ROWS = 4 * BIN_SAMPLE_ROWS
# Each fit measured twice and each prediction five times, the least kept; prediction timed with one
# tree and with PREDICT_TREES: on this sample one measurement's noise is of the order of what seven
# trees add to a row's conversion, and one measurement of eight trees had put a 15-leaf tree's
# prediction at 50 times what 60,000 rows and 40 trees measure.
FIT_REPEATS = 2
PREDICT_REPEATS = 5
PREDICT_TREES = 32


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024.0 for line in status if line.startswith("VmRSS:"))


def timed(function: Any, *args: Any, **kwargs: Any) -> float:
    """CPU seconds of a call (all of this process's threads): what the work costs, whatever else
    shares the machine's cores meanwhile."""
    start = time.process_time()
    function(*args, **kwargs)
    return time.process_time() - start


def fastest(repeats: int, function: Any, *args: Any, **kwargs: Any) -> float:
    """The least CPU seconds of `repeats` calls (timeit's rule: what is above the least is noise)."""
    return min(timed(function, *args, **kwargs) for _ in range(repeats))


def line(x_small: float, t_small: float, x_large: float, t_large: float) -> tuple[float, float]:
    """(fixed, rate) of a cost t = fixed + rate * x through two measurements; proportional when the
    two do not rise (a measurement too small to tell)."""
    rate = (t_large - t_small) / (x_large - x_small) if x_large > x_small else 0.0
    if rate <= 0:
        return 0.0, t_large / max(x_large, 1e-12)
    return max(0.0, t_large - rate * x_large), rate


# ---------------------------------------------------------------------------------------------------
# The size planned for


@dataclass
class Size:
    """Rows of each era of each split, the raw feature count and the labelled share of each target:
    the data's own (`of`), or a hypothetical size (`scaled`)."""

    train: dict[str, int]
    validation: dict[str, int]
    features: int
    known: dict[str, float]

    @classmethod
    def of(cls, prep: Prepared) -> Size:
        def rows(frame: EraFrame) -> dict[str, int]:
            return {str(era): s.stop - s.start for era, s in frame.era_slices().items()}

        known = {str(t): float(prep.train.targets[t].notna().mean()) for t in prep.train.targets.columns}
        return cls(rows(prep.train), rows(prep.validation), len(prep.features), known)

    def scaled(self, rows: int | None, features: int | None, eras: int | None) -> Size:
        """`rows` training rows in `eras` training eras (validation eras in the data's proportion,
        as many rows each) and `features` raw features; what is not given stays the data's."""
        n_train = eras or len(self.train)
        per_era = round((rows or sum(self.train.values())) / n_train)
        n_validation = max(1, round(len(self.validation) * n_train / len(self.train)))
        names = [f"{k + 1:04d}" for k in range(n_train + n_validation)]
        train = dict.fromkeys(names[:n_train], per_era)
        return Size(train, dict.fromkeys(names[n_train:], per_era), features or self.features, self.known)

    def rows(self, eras: Iterable[str], split: str = "train") -> int:
        table = self.train if split == "train" else self.validation
        return int(sum(table[str(e)] for e in eras))

    def eras(self, split: str = "train") -> np.ndarray:
        return np.array(sorted(self.train if split == "train" else self.validation), dtype=object)

    @property
    def rows_per_era(self) -> float:
        return sum(self.train.values()) / len(self.train)


class View(NamedTuple):
    """The columns of a LightGBM dataset: raw features, the feature pipeline's, whether with mixers."""

    raw: int
    extra: int
    mixers: bool

    @property
    def width(self) -> int:
        return self.raw + self.extra


@dataclass
class Costs:
    """What work costs on this machine on one thread, measured on a sample (`calibrate`): seconds per
    row x column (binning, trees), per row x tree (prediction), per row (transform, group mixers,
    neural epochs), per least-squares unit (scoring, neutralization), and the data's shape then."""

    features: int
    extra: dict[str, int]
    rows_per_era: float
    bin_fixed: float = 0.0
    bin_raw: float = 0.0
    bin_extra_fixed: float = 0.0
    bin_extra: float = 0.0
    inputs: float = 0.0
    mixer_inputs: float = 0.0
    mixer_transform: float = 0.0
    era_corr: float = 0.0
    trees: dict[tuple, tuple[float, float, float, float, float]] = field(default_factory=dict)
    transform: float = 0.0
    pipeline_fixed: float = 0.0
    mixers: float = 0.0
    epochs: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    eras: dict[tuple, float] = field(default_factory=dict)
    measure_era: Callable[[str, int, int, int], float] | None = field(default=None, repr=False)
    load: float = 0.0
    base_mb: float = 0.0

    def tree(self, params: dict[str, Any], rows: int, columns: int) -> float:
        """One-thread seconds of one tree with `params` on rows x columns."""
        fixed, rate = self.trees[params_key(params)][:2]
        return fixed * columns / self.columns + rate * rows * columns

    def predict(self, params: dict[str, Any], rows: int, trees: int, passes: int = 1) -> float:
        """Scoring `rows` rows with `trees` trees in `passes` calls (the CV's staged scores: one per
        checkpoint, each converting the rows again): a part per row and call, one per row x tree."""
        per_row, per_tree = self.trees[params_key(params)][2:4]
        return rows * (passes * per_row + per_tree * trees)

    def setup(self, params: dict[str, Any], columns: int) -> float:
        """A fit's start before its first tree (LightGBM's tree learner and histogram pool: leaves x
        columns), once per fit whatever its trees."""
        return self.trees[params_key(params)][4] * columns / self.columns

    def binning(self, rows: int, view: View, frame_rows: int) -> float:
        """Binning `rows` rows of a view: finding each column's bins on a sample of at most
        `BIN_SAMPLE_ROWS` rows, then every row into its bins; an engineered view first computes its
        per-era figures (and group mixers) over every row of the frame (`frame_rows`)."""
        sampled = min(rows, BIN_SAMPLE_ROWS) / BIN_SAMPLE_ROWS
        fixed = sampled * (view.raw * self.bin_fixed + view.extra * self.bin_extra_fixed)
        inputs = (self.inputs + (self.mixer_inputs if view.mixers else 0.0)) * frame_rows if view.extra else 0.0
        return fixed + rows * (view.raw * self.bin_raw + view.extra * self.bin_extra) + inputs

    def transforming(self, rows: int, view: View) -> float:
        """Transforming `rows` rows into a view for prediction (nothing for raw features)."""
        if not view.extra:
            return 0.0
        return rows * (self.transform * view.width / self.columns + (self.mixer_transform if view.mixers else 0.0))

    def per_era(self, kind: str, eras: int, rows_per_era: float, columns: int, models: int = 1) -> float:
        """`eras` per-era computations of `kind`: "scoring" (every validation figure of `models` models
        scored together, FNC and feature exposure among them) or "projection" (neutralizing a blend), each
        a least-squares fit on the era's rows x features, measured once at that very shape (`measure_era`)."""
        key = (kind, max(2, round(rows_per_era)), columns, models)
        if key not in self.eras:
            self.eras[key] = self.measure_era(*key)
        return eras * self.eras[key]

    @property
    def columns(self) -> int:
        return self.features + self.extra[ALL_TRANSFORMS]


def params_key(params: dict[str, Any]) -> tuple:
    """LightGBM settings as far as they change what a tree costs: not the learning rate, nor the rows per
    leaf, which a search sets as a share of the fit's rows (measured on the sample at the same share)."""
    ignored = (
        "seed",
        "num_threads",
        "verbosity",
        "deterministic",
        "force_col_wise",
        "learning_rate",
        "min_data_in_leaf",
    )
    return tuple(sorted((k, str(v)) for k, v in params.items() if k not in ignored))


def calibration_samples(train: EraFrame) -> tuple[EraFrame, EraFrame]:
    """The sample costs are measured on, about `SAMPLE_ROWS` rows of `SAMPLE_ERAS` evenly spaced
    training eras, and its half (the same eras, half their rows)."""
    eras = train.era_order[np.unique(np.linspace(0, len(train.era_order) - 1, SAMPLE_ERAS).astype(int))]
    per_era = int(min(len(train) / len(train.era_order), max(50, SAMPLE_ROWS // len(eras))))
    return thin(train, eras, per_era), thin(train, eras, per_era // 2)


def thin(frame: EraFrame, eras: np.ndarray, rows_per_era: int) -> EraFrame:
    """The first `rows_per_era` rows of each of `eras` (a copy): many eras, few rows."""
    slices = frame.era_slices()
    rows = np.concatenate(
        [np.arange(slices[e].start, min(slices[e].stop, slices[e].start + rows_per_era)) for e in eras]
    )
    return taken(frame, rows)


def taken(frame: EraFrame, rows: np.ndarray) -> EraFrame:
    """A copy of `frame`'s `rows`, in that order."""
    return EraFrame(
        frame.path,
        frame.ids[rows],
        frame.eras[rows],
        frame.features[rows],
        frame.feature_names,
        frame.targets.iloc[rows],
    )


class Calibration:
    """`Costs` measured on about `SAMPLE_ROWS` rows of `SAMPLE_ERAS` evenly spaced training eras (the
    sample kept, so that `add` can measure the settings and members of other options). Binning is
    timed on as many rows as the plan's fits have, up to `BINNING_ROWS` (`planned_rows`: the
    training rows planned for; None: the data's own)."""

    def __init__(self, prep: Prepared, load_seconds: float, planned_rows: int | None = None):
        self.planned_rows = planned_rows or len(prep.train)
        with threadpool_limits(1):
            self.measure(prep, load_seconds)
            self.add(prep)

    def repeats(self, prep: Prepared) -> int:
        """How many times over binning is timed on the sample's rows: once for the data's own size,
        else as many as reach the planned rows, up to `BINNING_ROWS`."""
        if self.planned_rows <= len(prep.train):
            return 1
        return -(-min(BINNING_ROWS, self.planned_rows) // len(self.sample))

    def measure(self, prep: Prepared, load_seconds: float) -> None:
        self.sample, self.half = calibration_samples(prep.train)
        self.target = prep.config.target
        pipeline = FeaturePipeline(prep.groups, missing="keep", clusters=True, group_stats=True)
        pipeline_seconds = timed(pipeline.fit, [(self.sample, self.sample.era_order)])
        costs = Costs(len(prep.features), extra_columns(pipeline), len(prep.train) / len(prep.train.era_order))
        costs.load, costs.pipeline_fixed = load_seconds, pipeline_seconds
        matrices_mb = (prep.train.features.nbytes + prep.validation.features.nbytes) / 2**20
        costs.base_mb = current_rss_mb() - (0 if prep.config.spill_dir else matrices_mb)
        self.costs = costs
        self.datasets = calibrate_binning(costs, self.sample, self.half, pipeline, self.repeats(prep))
        costs.transform = timed(pipeline.matrix, self.sample.features, self.sample.eras) / len(self.sample)
        mixing = FeaturePipeline(prep.groups, clusters=False, group_stats=False, mixing=True)
        mixing.targets = [self.target, *aux_targets(prep.train, self.target, "_20")]
        costs.mixers = timed(mixing.fit, [(self.sample, self.sample.era_order)]) / len(self.sample)
        costs.mixer_inputs = timed(mixing.inputs, self.sample) / len(self.sample)
        costs.mixer_transform = timed(mixing.matrix, self.sample.features, self.sample.eras) / len(self.sample)
        rows = np.arange(len(self.sample))
        costs.era_corr = timed(feature_era_corr, self.sample, rows, self.target) / (len(rows) * costs.features)
        costs.measure_era = lambda kind, rows, columns, models: measure_era(prep, kind, rows, columns, models)

    def add(self, prep: Prepared) -> Costs:
        """Measure what `prep`'s members need and is not measured yet: their LightGBM settings (and the
        probes') and their neural members' epochs."""
        with threadpool_limits(1):
            self.measure_members(prep)
        return self.costs

    def measure_members(self, prep: Prepared) -> None:
        for params in lightgbm_settings(prep, len(self.sample)):
            if params_key(params) not in self.costs.trees:
                self.costs.trees[params_key(params)] = calibrate_trees(params, self.datasets, self.target)
        for member in prep.members:
            if neural(member) and member.name not in self.costs.epochs:
                self.costs.epochs[member.name] = calibrate_epoch(member, self.sample)


def extra_columns(pipeline: FeaturePipeline) -> dict[str, int]:
    """The feature pipeline's columns beyond the raw features in each configuration the build's choice
    tries (`PIPELINE_CONFIGS`; group mixers: one column per group, group statistics three)."""
    clusters = len(pipeline.part_names_["clusters"])
    groups = len(pipeline.part_names_["group_stats"]) // 3
    return {
        label: clusters * settings["clusters"] + groups * (3 * settings["group_stats"] + settings["mixing"])
        for label, settings in PIPELINE_CONFIGS.items()
    }


def repeated(frame: EraFrame, times: int) -> EraFrame:
    """Each era's rows `times` times over, the era's rows kept together."""
    slices = frame.era_slices()
    rows = np.concatenate([np.tile(np.arange(s.start, s.stop), times) for s in slices.values()])
    return taken(frame, rows)


def bin_frame(frame: EraFrame, pipeline: FeaturePipeline | None) -> lgb.Dataset:
    """LightGBM's bins of every row of `frame`, as `pipeline` presents them (None: raw features)."""
    names = frame.feature_names if pipeline is None else pipeline.feature_names_
    return Rows.of(pipeline, [(frame, frame.era_order)], 1, names, 0).bin()


def calibrate_binning(
    costs: Costs, sample: EraFrame, half: EraFrame, pipeline: FeaturePipeline, times: int = 1
) -> dict:
    """Binning's cost per raw and per engineered column: a fixed part (finding the bins on LightGBM's
    sample of `BIN_SAMPLE_ROWS` rows, single rows fetched through the feature pipeline) and a part per
    value, from two sizes: the sample and its half, each one's rows `times` over within their eras
    (`Calibration.repeats`). Below the bin sample, finding bins grows with the rows: a line through two
    such sizes had planned the binning of Numerai's 470,000 rows at 6.5 times what it took. Also the
    engineered view's per-era figures per frame row. Returns the binned engineered datasets of the
    sample and its half, for the trees."""
    sizes = {"large": repeated(sample, times), "small": repeated(half, times)}
    seconds, binned = {}, {}
    for size, frame in sizes.items():
        for view in (None, pipeline):
            start = time.process_time()
            binned[size, view is None] = bin_frame(frame, view)
            seconds[size, view is None] = time.process_time() - start
    width, extra = costs.features, max(1, len(pipeline.feature_names_) - costs.features)
    small, large = (len(sizes[size]) for size in ("small", "large"))
    fixed, rate = line(small, seconds["small", True], large, seconds["large", True])
    costs.bin_fixed, costs.bin_raw = fixed / width, rate / width
    costs.inputs = timed(pipeline.inputs, sample) / len(sample)
    engineered = {size: seconds[size, False] - seconds[size, True] - costs.inputs * len(sizes[size]) for size in sizes}
    fixed, rate = line(small, max(0.0, engineered["small"]), large, max(0.0, engineered["large"]))
    costs.bin_extra_fixed, costs.bin_extra = fixed / extra, rate / extra
    if times == 1:
        trees = {"full": binned["large", False], "half": binned["small", False]}
    else:
        trees = {name: bin_frame(frame, pipeline) for name, frame in (("full", sample), ("half", half))}
    return {"full": (trees["full"], sample), "half": (trees["half"], half), "pipeline": pipeline}


def lightgbm_settings(prep: Prepared, rows: int) -> list[dict[str, Any]]:
    """Every LightGBM setting the build trains: its members', its searches' trials (their rows per leaf
    as shares of `rows`, the sample's) and the probes'."""
    trials = [member for found in gbdt_trials(prep, rows).values() for member in found]
    members = [m for m in prep.members if isinstance(getattr(m, "estimator", None), LGBMModel)] + trials
    return [m.estimator.lgb_params() for m in members] + [LGBMModel(PROBE["params"]).lgb_params()]


def calibrate_trees(params: dict[str, Any], datasets: dict, target: str) -> tuple:
    """(fixed seconds, seconds per row x column) of one tree with `params` on one thread, from
    `CALIBRATION_TREES` trees at two sample sizes less a fit of one tree (the fit's setup, which the
    last figure gives: at the full sample), and prediction's seconds per row and per row x tree (from
    one tree and `PREDICT_TREES`). Timed on the sample as it is (`bench.scale --fits`: a sample of
    7,500 rows plans a tree on Numerai's rows at 1.19-1.25 times what it takes, one of 40,000 rows at
    0.92-0.94; the sample's rows repeated, as binning's are, planned them at about two thirds of the
    former, below what they took)."""
    params = params | {"num_threads": 1}
    per_tree, first = {}, {}
    trained = {
        name: labelled(datasets[name][0], datasets[name][1].targets[target].to_numpy()) for name in ("full", "half")
    }
    for name, dataset in trained.items():
        first[name] = fastest(FIT_REPEATS, lgb.train, params, dataset, num_boost_round=1)
        every = fastest(FIT_REPEATS, lgb.train, params, dataset, num_boost_round=CALIBRATION_TREES)
        per_tree[name] = max(0.0, every - first[name]) / (CALIBRATION_TREES - 1)
    columns = datasets["full"][0].num_feature()
    sample = datasets["full"][1]
    rows, rows_half = len(sample), len(datasets["half"][1])
    fixed, rate = line(rows_half * columns, per_tree["half"], rows * columns, per_tree["full"])
    setup = max(0.0, first["full"] - per_tree["full"])
    booster = lgb.train(params, trained["full"], PREDICT_TREES)
    x = datasets["pipeline"].matrix(sample.features, sample.eras)
    one = fastest(PREDICT_REPEATS, booster_predict, booster, x, 1) / len(x)
    every = fastest(PREDICT_REPEATS, booster_predict, booster, x) / len(x)
    # Below what the measurement resolves a tree's part is too small to count next to a row's.
    predict_tree = max(0.0, every - one) / (PREDICT_TREES - 1)
    return fixed, rate, one - predict_tree, predict_tree, setup


def neural(member: Any) -> bool:
    """Whether a member trains a network for epochs (MLP, TSMixer-Ext)."""
    return hasattr(getattr(member, "estimator", None), "max_epochs")


def calibrate_epoch(member: Any, sample: EraFrame) -> tuple[float, float, float]:
    """(seconds per row of one epoch, peak MB above the process's RSS per row of an era, seconds per
    row of prediction) of a neural member. The rate is the sample's average: a slope between the
    sample and its half (the same eras, half their rows) overstated it (at 800 rows per era, the CV
    planned at 1,758 s against 1,118 s measured). A batch holds whole eras (`eras_per_batch`), so
    its activations, the peak, grow with an era's rows: the sample has at most `SAMPLE_ROWS` /
    `SAMPLE_ERAS` of them, Numerai's eras about 4,800."""
    trial = member.untrained(threads=1)
    trial.estimator.set_params(max_epochs=1)
    reset_peak()
    before = current_rss_mb()
    seconds = timed(trial.fit, [sample], None, "holdout")
    rows = len(sample) * (1 - 1 / 4) / max(1, trial.era_stride)
    peak = max(0.0, peak_rss_mb() - before) / (len(sample) / len(np.unique(sample.eras)))
    return seconds / rows, peak, timed(trial.predict, sample.features, sample.eras) / len(sample)


def measure_era(prep: Prepared, kind: str, rows: int, columns: int, models: int = 1) -> float:
    """CPU seconds of one era's scoring (`validation_figures` of `models` models, with every target of
    the validation data) or neutralization (`feature_projection`) at `rows` x `columns`, on random data."""
    rng = np.random.default_rng(0)
    features = rng.integers(0, 5, size=(rows, columns), dtype=np.int8)
    scores = rng.normal(size=rows)
    with threadpool_limits(1):
        if kind == "projection":
            return timed(feature_projection, scores, features, np.zeros(rows, dtype=object))
        targets = pd.DataFrame({t: rng.integers(0, 5, rows) / 4 for t in prep.validation.targets.columns})
        ids = np.array([f"id{k}" for k in range(rows)], dtype=object)
        era = EraFrame(prep.validation.path, ids, np.full(rows, "0001", dtype=object), features, [], targets)
        predictions = {f"model {k}": rng.normal(size=rows) for k in range(models)}
        return timed(validation_figures, predictions, era, np.arange(rows), prep.config.target)


def calibration_json(costs: Costs) -> dict[str, Any]:
    skipped = ("trees", "epochs", "eras", "measure_era")
    fields_ = {f.name: getattr(costs, f.name) for f in dataclasses.fields(costs) if f.name not in skipped}
    return fields_ | {
        "trees": {
            str(dict(key).get("learning_rate")) + f" {dict(key).get('num_leaves')} leaves": list(v)
            for key, v in costs.trees.items()
        },
        "epochs": {name: list(v) for name, v in costs.epochs.items()},
        "per_era": {
            f"{kind} {rows} x {columns}, {models} models": seconds
            for (kind, rows, columns, models), seconds in costs.eras.items()
        },
    }
