"""The cost plan of a build, before any training: `python build_model.py plan [the build's options]`.

The plan takes the build's own pieces: `prepare` loads the data and makes the preset's members and
the CV folds exactly as the build does, and each member's fits follow from its own settings (target,
era stride, feature subset, trees, epochs) on those folds. What a fit costs is measured on this
machine on a sample of the data (`calibrate`): binning at two sample sizes (raw and engineered
features), a few trees of every distinct LightGBM setting at two sizes, their prediction, the
feature pipeline's fit with and without its group mixers, one epoch of each neural member, and the
per-era scoring and neutralization. Costs grow linearly with the rows and columns they touch (a
tree: a fixed part for its split search plus a part linear in rows x columns for its histograms),
scoring and neutralization with rows x columns x min(rows, columns) per era (least squares), so
`--rows/--features/--eras` plan a size the data does not have (Numerai's full data) from the same
measurements.

Cores: a fit on T threads takes the one-thread time of its trees divided by Amdahl's speedup with
the parallel share `TREE_PARALLEL` (binning, prediction and the neural members run on one thread);
with `--jobs J` each stage's fits run as J processes of cores / J threads, longest first, after the
work the build does in its own process (feature pipelines, blending, scoring). Where the build
cannot know in advance what it will choose, the plan takes the larger: the holdout and refit at the
CV's cap on trees, every member refitted, the neural members at their maximum epochs, all of the
feature pipeline's transforms kept (`Plan.assumptions`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from pipeline.analysis import validation_figures
from pipeline.binning import Rows, labelled
from pipeline.build import Prepared, prepare, set_up
from pipeline.config import BuildConfig
from pipeline.cv import holdout_eras, walk_forward_folds
from pipeline.data import EraFrame
from pipeline.features import FeaturePipeline
from pipeline.models.lgbm import BIN_SAMPLE_ROWS, LGBMModel
from pipeline.parallel import peak_rss_mb, reset_peak, threads_per_job
from pipeline.presets import PRESETS, PROBE
from pipeline.runtime import booster_predict, feature_projection
from pipeline.targets import aux_targets

logger = logging.getLogger(__name__)

# Share of LightGBM's tree building that runs in parallel over threads (Amdahl's law); see the
# README ("What a build costs") for the measurement on 2 cores behind it.
TREE_PARALLEL = 0.85
# LightGBM's bytes per binned value: 4-bit bins of 5-valued features plus the push buffer that
# FinishLoad keeps (bench.memory, bench.scale); float features' 8-bit bins with their buffer.
BYTES_PER_BIN = 1.1
# Rows the costs are measured on (and half of them), in about SAMPLE_ERAS evenly spaced eras.
SAMPLE_ROWS = 40_000
SAMPLE_ERAS = 48
CALIBRATION_TREES = 8
# The feature pipeline's ablation (`pipeline.feature_choice`): the transforms of each probe CV;
# tests/test_plan.py checks these against the fits a build makes.
ABLATION = ("all", "all", "no_clusters", "no_group_stats", "no_mixing", "raw")
STABILITY = ("no_mixing", "no_mixing")
# Seconds of work that does not grow with the data: verification's child process, the plots.
FIXED_SECONDS = {"export": 4.0, "write_build_report": 8.0}


def speedup(threads: int, parallel: float = TREE_PARALLEL) -> float:
    """Amdahl's law: how much faster `threads` threads build trees than one."""
    return 1.0 / ((1.0 - parallel) + parallel / max(1, threads))


def current_rss_mb() -> float:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024.0 for line in status if line.startswith("VmRSS:"))


def timed(function: Any, *args: Any, **kwargs: Any) -> float:
    """CPU seconds of a call (all of this process's threads): what the work costs, whatever else
    shares the machine's cores meanwhile."""
    start = time.process_time()
    function(*args, **kwargs)
    return time.process_time() - start


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


# ---------------------------------------------------------------------------------------------------
# Calibration


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
    bin_extra: float = 0.0
    inputs: float = 0.0
    trees: dict[tuple, tuple[float, float, float, float]] = field(default_factory=dict)
    transform: float = 0.0
    pipeline_fixed: float = 0.0
    mixers: float = 0.0
    epochs: dict[str, tuple[float, float]] = field(default_factory=dict)
    eras: dict[tuple, float] = field(default_factory=dict)
    measure_era: Callable[[str, int, int], float] | None = field(default=None, repr=False)
    load: float = 0.0
    base_mb: float = 0.0

    def tree(self, params: dict[str, Any], rows: int, columns: int) -> float:
        """One-thread seconds of one tree with `params` on rows x columns."""
        fixed, rate = self.trees[params_key(params)][:2]
        return fixed * columns / self.columns + rate * rows * columns

    def predict(self, params: dict[str, Any], rows: int, trees: int) -> float:
        """Scoring `rows` rows with `trees` trees: a part per row (converting it) and one per row x tree."""
        per_row, per_tree = self.trees[params_key(params)][2:]
        return rows * (per_row + per_tree * trees)

    def binning(self, rows: int, raw: int, extra: int, frame_rows: int) -> float:
        """Binning `rows` rows of `raw` + `extra` columns; the engineered view first computes its
        per-era figures over every row of the frame (`frame_rows`)."""
        fixed = self.bin_fixed * (raw + extra) / self.columns
        return fixed + rows * (raw * self.bin_raw + extra * self.bin_extra) + (self.inputs * frame_rows if extra else 0)

    def per_era(self, kind: str, eras: int, rows_per_era: float, columns: int) -> float:
        """`eras` per-era computations of `kind`: "scoring" (every validation figure of one model, FNC
        and feature exposure among them) or "projection" (neutralizing a blend), each a least-squares
        fit on the era's rows x features, measured once at that very shape (`measure_era`)."""
        key = (kind, max(2, round(rows_per_era)), columns)
        if key not in self.eras:
            self.eras[key] = self.measure_era(*key)
        return eras * self.eras[key]

    @property
    def columns(self) -> int:
        return self.features + self.extra["all"]


def params_key(params: dict[str, Any]) -> tuple:
    """LightGBM settings as far as they change what a tree costs (the learning rate does not)."""
    ignored = ("seed", "num_threads", "verbosity", "deterministic", "force_col_wise", "learning_rate")
    return tuple(sorted((k, str(v)) for k, v in params.items() if k not in ignored))


def thin(frame: EraFrame, eras: np.ndarray, rows_per_era: int) -> EraFrame:
    """The first `rows_per_era` rows of each of `eras` (a copy): many eras, few rows."""
    slices = frame.era_slices()
    rows = np.concatenate(
        [np.arange(slices[e].start, min(slices[e].stop, slices[e].start + rows_per_era)) for e in eras]
    )
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
    sample kept, so that `add` can measure the settings and members of other options)."""

    def __init__(self, prep: Prepared, load_seconds: float):
        with threadpool_limits(1):
            self.measure(prep, load_seconds)
            self.add(prep)

    def measure(self, prep: Prepared, load_seconds: float) -> None:
        eras = prep.train.era_order[np.unique(np.linspace(0, len(prep.train.era_order) - 1, SAMPLE_ERAS).astype(int))]
        per_era = int(min(len(prep.train) / len(prep.train.era_order), max(50, SAMPLE_ROWS // len(eras))))
        self.sample, self.half = thin(prep.train, eras, per_era), thin(prep.train, eras, per_era // 2)
        self.target = prep.config.target
        pipeline = FeaturePipeline(prep.groups, missing="keep", clusters=True, group_stats=True)
        pipeline_seconds = timed(pipeline.fit, [(self.sample, self.sample.era_order)])
        costs = Costs(len(prep.features), extra_columns(pipeline), len(prep.train) / len(prep.train.era_order))
        costs.load, costs.pipeline_fixed = load_seconds, pipeline_seconds
        matrices_mb = (prep.train.features.nbytes + prep.validation.features.nbytes) / 2**20
        costs.base_mb = current_rss_mb() - (0 if prep.config.spill_dir else matrices_mb)
        self.costs = costs
        self.datasets = calibrate_binning(costs, self.sample, self.half, pipeline)
        costs.transform = timed(pipeline.matrix, self.sample.features, self.sample.eras) / len(self.sample)
        mixing = FeaturePipeline(prep.groups, clusters=False, group_stats=False, mixing=True)
        mixing.targets = [self.target, *aux_targets(prep.train, self.target, "_20")]
        costs.mixers = timed(mixing.fit, [(self.sample, self.sample.era_order)]) / len(self.sample)
        costs.measure_era = lambda kind, rows, columns: measure_era(prep, kind, rows, columns)

    def add(self, prep: Prepared) -> Costs:
        """Measure what `prep`'s members need and is not measured yet: their LightGBM settings (and the
        probes') and their neural members' epochs."""
        with threadpool_limits(1):
            self.measure_members(prep)
        return self.costs

    def measure_members(self, prep: Prepared) -> None:
        for params in lightgbm_settings(prep):
            if params_key(params) not in self.costs.trees:
                self.costs.trees[params_key(params)] = calibrate_trees(
                    params, self.datasets, self.sample, self.half, self.target
                )
        for member in prep.members:
            if neural(member) and member.name not in self.costs.epochs:
                self.costs.epochs[member.name] = calibrate_epoch(member, self.sample)


def extra_columns(pipeline: FeaturePipeline) -> dict[str, int]:
    """The feature pipeline's columns beyond the raw features, with each transform of the ablation
    left out (group mixers: one per group, as group statistics are three)."""
    clusters = len(pipeline.part_names_["clusters"])
    groups = len(pipeline.part_names_["group_stats"]) // 3
    return {
        "all": clusters + 4 * groups,
        "no_clusters": 4 * groups,
        "no_group_stats": clusters + groups,
        "no_mixing": clusters + 3 * groups,
        "raw": 0,
    }


def calibrate_binning(costs: Costs, sample: EraFrame, half: EraFrame, pipeline: FeaturePipeline) -> dict:
    """Binning's fixed part (the bin sample) and its cost per raw value, from two sizes; per
    engineered value; and the engineered view's per-era figures per frame row. Returns the binned
    engineered datasets of both sizes for the trees."""
    binned, seconds = {}, {}
    for name, frame, view in (
        ("raw", sample, None),
        ("raw_half", half, None),
        ("engineered", sample, pipeline),
        ("engineered_half", half, pipeline),
    ):
        names = frame.feature_names if view is None else view.feature_names_
        rows = Rows.of(view, [(frame, frame.era_order)], 1, names, 0)
        start = time.process_time()
        binned[name] = rows.bin()
        seconds[name] = time.process_time() - start
    width, extra = costs.features, len(pipeline.feature_names_) - costs.features
    fixed, costs.bin_raw = line(len(half) * width, seconds["raw_half"], len(sample) * width, seconds["raw"])
    costs.bin_fixed = fixed * costs.columns / width
    costs.inputs = timed(pipeline.inputs, sample) / len(sample)
    engineered = seconds["engineered"] - seconds["raw"] - costs.inputs * len(sample)
    costs.bin_extra = max(0.0, engineered) / (len(sample) * max(1, extra))
    return {"full": (binned["engineered"], sample), "half": (binned["engineered_half"], half), "pipeline": pipeline}


def lightgbm_settings(prep: Prepared) -> list[dict[str, Any]]:
    """Every LightGBM setting the build trains: its members' and the probes'."""
    found = [m.estimator.lgb_params() for m in prep.members if isinstance(getattr(m, "estimator", None), LGBMModel)]
    return found + [LGBMModel(PROBE["params"]).lgb_params()]


def calibrate_trees(params: dict[str, Any], datasets: dict, sample: EraFrame, half: EraFrame, target: str) -> tuple:
    """(fixed seconds, seconds per row x column) of one tree with `params` on one thread, from
    `CALIBRATION_TREES` trees at two sample sizes, and prediction's seconds per row and per row x
    tree (from one tree and all of them)."""
    params = params | {"num_threads": 1}
    per_tree = {}
    for name in ("full", "half"):
        dataset, frame = datasets[name]
        dataset = labelled(dataset, frame.targets[target].to_numpy())
        start = time.process_time()
        model = LGBMModel()
        model.booster_ = lgb.train(params, dataset, num_boost_round=CALIBRATION_TREES)
        per_tree[name] = (time.process_time() - start) / CALIBRATION_TREES
    columns = datasets["full"][0].num_feature()
    rows, rows_half = len(sample), len(half)
    fixed, rate = line(rows_half * columns, per_tree["half"], rows * columns, per_tree["full"])
    x = datasets["pipeline"].matrix(sample.features, sample.eras)
    one = timed(booster_predict, model.booster_, x, 1) / len(x)
    every = timed(booster_predict, model.booster_, x) / len(x)
    per_row, per_tree = line(1, one, CALIBRATION_TREES, every)
    return fixed, rate, per_row, per_tree


def neural(member: Any) -> bool:
    """Whether a member trains a network for epochs (MLP, TSMixer-Ext)."""
    return hasattr(getattr(member, "estimator", None), "max_epochs")


def calibrate_epoch(member: Any, sample: EraFrame) -> tuple[float, float]:
    """(seconds per row of one epoch, peak MB above the process's RSS) of a neural member."""
    trial = member.untrained(threads=1)
    trial.estimator.set_params(max_epochs=1)
    reset_peak()
    before = current_rss_mb()
    seconds = timed(trial.fit, [sample], None, "holdout")
    rows = len(sample) * (1 - 1 / 4) / max(1, trial.era_stride)
    return seconds / rows, max(0.0, peak_rss_mb() - before)


def measure_era(prep: Prepared, kind: str, rows: int, columns: int) -> float:
    """CPU seconds of one era's scoring (`validation_figures`, with every target of the validation
    data) or neutralization (`feature_projection`) at `rows` x `columns`, on random data."""
    rng = np.random.default_rng(0)
    features = rng.integers(0, 5, size=(rows, columns), dtype=np.int8)
    scores = rng.normal(size=rows)
    with threadpool_limits(1):
        if kind == "projection":
            return timed(feature_projection, scores, features, np.zeros(rows, dtype=object))
        targets = pd.DataFrame({t: rng.integers(0, 5, rows) / 4 for t in prep.validation.targets.columns})
        ids = np.array([f"id{k}" for k in range(rows)], dtype=object)
        era = EraFrame(prep.validation.path, ids, np.full(rows, "0001", dtype=object), features, [], targets)
        return timed(validation_figures, scores, era, np.arange(rows), prep.config.target)


# ---------------------------------------------------------------------------------------------------
# The plan's items


@dataclass
class Task:
    """One fit or task the runner runs: one-thread seconds of its trees (`cpu`, which scale with
    threads) and of the rest (`serial`), and the memory it holds at its peak."""

    cpu: float
    serial: float
    memory_mb: float

    def seconds(self, threads: int) -> float:
        return self.cpu / speedup(threads) + self.serial


@dataclass
class Item:
    """One line of the plan: its fits (or tasks) on rows x features with their work (trees, epochs),
    the runner's tasks, the one-thread seconds it takes in the build's own process (`parent`) and
    the memory that needs there beyond the interpreter and the int8 matrices."""

    stage: str
    name: str
    fits: int
    rows: int
    features: int
    work: str
    tasks: list[Task] = field(default_factory=list)
    parent: float = 0.0
    memory_mb: float = 0.0

    def seconds(self, threads: int) -> float:
        return self.parent + sum(task.seconds(threads) for task in self.tasks)


def lpt_makespan(durations: Sequence[float], slots: int) -> float:
    """Wall time of independent tasks on `slots` processes, each next-longest to the least loaded."""
    loads = [0.0] * max(1, slots)
    for duration in sorted(durations, reverse=True):
        loads[loads.index(min(loads))] += duration
    return max(loads)


class Planner:
    """The items of the build `prep` sets up, at `size`, costed with `costs`."""

    def __init__(self, prep: Prepared, size: Size, costs: Costs):
        self.prep, self.size, self.costs, self.config = prep, size, costs, prep.config
        self.width = size.features / costs.features
        eras = size.eras()
        self.folds = walk_forward_folds(eras, self.config.cv_folds, prep.embargo, self.config.cv_max_train_eras)
        self.scored = holdout_eras(eras, size.eras("validation"), prep.embargo)
        self.groups = len(set(prep.groups.values()))
        self.binned: set[tuple] = set()

    def items(self) -> list[Item]:
        stages = (self.loading, self.search, self.feature_choice, self.cv, self.stability, self.holdout, self.refit)
        return [item for stage in stages for item in stage()] + self.output()

    def columns(self, member: Any, extra: str = "all") -> tuple[int, int]:
        """(raw, engineered) columns a LightGBM member (or a probe, member None) reads at this size."""
        raw = self.size.features if member is None or member.features is None else len(member.features) * self.width
        engineered = member is None or member.engineered
        return round(raw), round(self.costs.extra[extra] * self.width) if engineered else 0

    def lgbm_task(
        self, key: tuple, params: dict, rounds: int, parts: list[tuple[str, np.ndarray]], target: str, columns: tuple
    ) -> tuple[Task, int]:
        """A LightGBM fit on `parts` (split, strided eras), binning its dataset when no fit of the
        stage has (bin once); returns the task and its labelled rows."""
        rows = sum(self.size.rows(eras, split) for split, eras in parts)
        labelled_rows = round(rows * self.size.known.get(target, 1.0))
        raw, extra = columns
        frame_rows = sum(self.size.rows(self.size.eras(split), split) for split in {split for split, _ in parts})
        binning = 0.0 if key in self.binned else self.costs.binning(rows, raw, extra, frame_rows)
        self.binned.add(key)
        cpu = rounds * self.costs.tree(params, labelled_rows, raw + extra)
        memory = (rows * (raw + extra) * BYTES_PER_BIN + BIN_SAMPLE_ROWS * (raw + extra) * 16) / 2**20
        return Task(cpu, binning, memory), labelled_rows

    def cv_tasks(self, key: tuple, params: dict, rounds: int, stride: int, target: str, columns: tuple) -> list[Task]:
        """One task per fold: the fit and its staged prediction of the fold's scored eras."""
        tasks = []
        for k, (train_eras, val_eras) in enumerate(self.folds):
            task, _ = self.lgbm_task((*key, k), params, rounds, [("train", train_eras[::stride])], target, columns)
            scored = self.size.rows(val_eras)
            task.serial += self.costs.predict(params, scored, rounds)
            if columns[1]:
                task.serial += self.costs.transform * scored * sum(columns) / self.costs.columns
            task.memory_mb += scored * sum(columns) * 4 / 2**20
            tasks.append(task)
        return tasks

    def member_view(self, member: Any) -> tuple:
        """Which binned dataset a LightGBM member reads (the members that share one bin it once)."""
        subset = None if member.features is None else tuple(member.features)
        return ("engineered" if member.engineered else "raw", subset, member.era_stride)

    def pipeline_fit(self, eras: Sequence[str], mixing: bool = True, split_rows: int | None = None) -> float:
        """One-thread seconds of a feature pipeline fitted on `eras` (with its group mixers or not)."""
        rows = split_rows if split_rows is not None else self.size.rows(eras)
        return self.costs.pipeline_fixed * self.width**2 + (self.costs.mixers * rows * self.width if mixing else 0.0)

    def loading(self) -> list[Item]:
        rows = sum(self.size.train.values()) + sum(self.size.validation.values())
        data_rows = len(self.prep.train) + len(self.prep.validation)
        seconds = self.costs.load * rows * self.size.features / (data_rows * self.costs.features)
        return [
            Item("prepare", "load train and validation (int8)", 2, rows, self.size.features, "parquet", parent=seconds)
        ]

    def search(self) -> list[Item]:
        """--tsmixer-search: trials of TSMixer-Ext's CV on 2 folds of the first fold's training eras."""
        trials = self.config.tsmixer_search
        member = next((m for m in self.prep.members if getattr(m, "kind", "") == "tsmixer"), None)
        if not trials or member is None:
            return []
        eras = self.folds[0][0]
        folds = walk_forward_folds(eras, 2, self.prep.embargo)
        epochs = member.estimator.max_epochs
        per_trial = sum(self.neural_seconds(member, train, epochs) for train, _ in folds)
        seconds = min(trials * per_trial, self.config.tsmixer_search_budget)
        rows = self.size.rows(eras)
        return [
            Item(
                "search_members",
                f"{member.name} search",
                trials * 2,
                rows,
                self.size.features,
                f"{epochs} epochs",
                [Task(0, seconds, 0)],
            )
        ]

    def neural_seconds(self, member: Any, eras: Sequence[str], epochs: int, split_rows: int | None = None) -> float:
        """A neural fit of `epochs` on `eras` (or `split_rows` rows), over --torch-processes processes."""
        rows = split_rows if split_rows is not None else self.size.rows(list(eras)[:: member.era_stride])
        return self.costs.epochs[member.name][0] * rows * epochs * self.width / self.config.torch_processes

    def probes(self, stage: str, name: str, variants: Sequence[str]) -> Item:
        """Probe CVs (`PROBE`), one per variant of the feature pipeline, each its own binned view."""
        rounds = min(PROBE["rounds"], self.config.num_boost_round or PROBE["rounds"])
        params = LGBMModel(PROBE["params"]).lgb_params()
        stride = self.config.era_stride or PROBE["era_stride"]
        tasks = []
        for k, variant in enumerate(variants):
            tasks += self.cv_tasks((stage, k), params, rounds, stride, self.config.target, self.columns(None, variant))
        rows = self.size.rows(self.folds[-1][0][::stride])
        return Item(stage, name, len(tasks), rows, sum(self.columns(None)), f"{rounds} trees", tasks)

    def feature_choice(self) -> list[Item]:
        if not any(member.uses_pipeline for member in self.prep.members):
            return []
        seconds = sum(self.pipeline_fit(train) for train, _ in self.folds)
        rows = self.size.rows(self.folds[-1][0])
        fitted = Item(
            "choose_features",
            "fold feature pipelines (group mixers)",
            len(self.folds),
            rows,
            self.size.features,
            "fit",
            parent=seconds,
        )
        return [fitted, self.probes("choose_features", "probe CVs of the pipeline's ablation", ABLATION)]

    def cv(self) -> list[Item]:
        self.binned = set()
        items = [self.member_cv(member) for member in self.prep.members]
        oof_eras = len({era for _, val in self.folds for era in val})
        blend = Item(
            "cross_validate",
            "blend weights and neutralization",
            1,
            0,
            self.size.features,
            "least squares",
            parent=2 * self.costs.per_era("projection", oof_eras, self.size.rows_per_era, self.size.features),
        )
        return [*items, blend]

    def member_cv(self, member: Any) -> Item:
        rows = self.size.rows(self.folds[-1][0][:: member.era_stride])
        if neural(member):
            epochs, memory = member.estimator.max_epochs, self.costs.epochs[member.name][1]
            tasks = [Task(0.0, self.neural_seconds(member, train, epochs), memory) for train, _ in self.folds]
            work = f"{epochs} epochs"
            return Item("cross_validate", f"{member.name} CV", len(tasks), rows, self.size.features, work, tasks)
        if not isinstance(getattr(member, "estimator", None), LGBMModel):
            return Item(
                "cross_validate",
                f"{member.name} CV (a kind of your own: not costed)",
                len(self.folds),
                rows,
                self.size.features,
                "?",
            )
        columns = self.columns(member)
        estimator = member.estimator
        tasks = self.cv_tasks(
            ("cv", self.member_view(member)),
            estimator.lgb_params(),
            estimator.num_boost_round,
            member.era_stride,
            member.train_target,
            columns,
        )
        return Item(
            "cross_validate",
            f"{member.name} CV",
            len(tasks),
            rows,
            sum(columns),
            f"{estimator.num_boost_round} trees",
            tasks,
        )

    def stability(self) -> list[Item]:
        fitted = Item(
            "check_stability",
            "fold feature pipelines (no mixers) and feature stability",
            len(self.folds),
            self.size.rows(self.folds[-1][0]),
            self.size.features,
            "fit",
            parent=sum(self.pipeline_fit(train, mixing=False) for train, _ in self.folds),
        )
        return [fitted, self.probes("check_stability", "probe CVs with and without unstable features", STABILITY)]

    def member_fits(self, stage: str, members: Sequence[Any], parts: list[tuple[str, np.ndarray]]) -> list[Item]:
        """Each member trained on every era of `parts` (the holdout's or the refit's)."""
        self.binned = set()
        items = []
        for member in members:
            rows = sum(self.size.rows(eras[:: member.era_stride], split) for split, eras in parts)
            if neural(member):
                epochs = member.estimator.max_epochs
                seconds = self.neural_seconds(member, [], epochs, split_rows=rows)
                task = Task(0.0, seconds, self.costs.epochs[member.name][1])
                items.append(
                    Item(stage, f"{member.name} {stage}", 1, rows, self.size.features, f"{epochs} epochs", [task])
                )
            elif isinstance(getattr(member, "estimator", None), LGBMModel):
                estimator, columns = member.estimator, self.columns(member)
                strided = [(split, eras[:: member.era_stride]) for split, eras in parts]
                task, labelled_rows = self.lgbm_task(
                    (stage, self.member_view(member)),
                    estimator.lgb_params(),
                    estimator.num_boost_round,
                    strided,
                    member.train_target,
                    columns,
                )
                items.append(
                    Item(
                        stage,
                        f"{member.name} {stage}",
                        1,
                        labelled_rows,
                        sum(columns),
                        f"{estimator.num_boost_round} trees",
                        [task],
                    )
                )
        return items

    def holdout(self) -> list[Item]:
        eras = self.size.eras()
        pipeline = Item(
            "score_holdout",
            "feature pipeline on train eras",
            1,
            self.size.rows(eras),
            self.size.features,
            "fit",
            parent=self.pipeline_fit(eras),
        )
        fits = self.member_fits("score_holdout", self.prep.members, [("train", eras)])
        return [pipeline, *fits, self.scoring()]

    def predict_seconds(self, rows: int) -> float:
        """Every member's scores of `rows` validation rows (LightGBM at its cap on trees)."""
        seconds = 0.0
        for member in self.prep.members:
            if isinstance(getattr(member, "estimator", None), LGBMModel):
                estimator = member.estimator
                seconds += self.costs.predict(estimator.lgb_params(), rows, estimator.num_boost_round)
                seconds += self.costs.transform * rows * self.width if member.engineered else 0.0
            elif neural(member):
                seconds += self.costs.epochs[member.name][0] * rows * self.width / 3
        return seconds

    def scoring(self) -> Item:
        """The validation figures of every member and the blend, and the permutation importance by
        group (the ensemble, neutralized, once per group and once as it is)."""
        rows = self.size.rows(self.scored, "validation")
        per_era = rows / max(1, len(self.scored))
        figures = (len(self.prep.members) + 1) * self.costs.per_era(
            "scoring", len(self.scored), per_era, self.size.features
        )
        projection = self.costs.per_era("projection", len(self.scored), per_era, self.size.features)
        permutation = (self.groups + 1) * (self.predict_seconds(rows) + projection)
        seconds = self.predict_seconds(rows) + figures + permutation
        work = f"{len(self.prep.members) + 1} models, {self.groups} groups"
        return Item(
            "score_holdout",
            "validation scores and permutation importance",
            1,
            rows,
            self.size.features,
            work,
            parent=seconds,
        )

    def refit(self) -> list[Item]:
        if not self.config.refit:
            return []
        parts = [("train", self.size.eras()), ("validation", self.size.eras("validation"))]
        rows = sum(self.size.rows(eras, split) for split, eras in parts)
        pipeline = Item(
            "refit",
            "feature pipeline on train and validation eras",
            1,
            rows,
            self.size.features,
            "fit",
            parent=self.pipeline_fit([], split_rows=rows),
        )
        return [pipeline, *self.member_fits("refit", self.prep.members, parts)]

    def output(self) -> list[Item]:
        live = round(self.size.rows_per_era)
        verify = FIXED_SECONDS["export"] + self.predict_seconds(live)
        return [
            Item(
                "export",
                "write and verify the pickle (a live era)",
                1,
                live,
                self.size.features,
                "predict",
                parent=verify,
            ),
            Item(
                "write_build_report",
                "report.json, plots, report.html",
                1,
                0,
                0,
                "plots",
                parent=FIXED_SECONDS["write_build_report"],
            ),
        ]


# ---------------------------------------------------------------------------------------------------
# The plan


@dataclass
class Plan:
    """A build's items on a machine of `cores` cores with `jobs` processes (see the module docstring)."""

    items: list[Item]
    costs: Costs
    size: Size
    cores: int
    jobs: int
    threads: int
    in_memory: bool
    assumptions: list[str]

    @property
    def threads_per_fit(self) -> int:
        return self.threads if self.jobs == 1 else threads_per_job(self.threads, self.jobs)

    def stage_items(self, stage: str) -> list[Item]:
        return [item for item in self.items if item.stage == stage]

    def stage_seconds(self, stage: str) -> float:
        items = self.stage_items(stage)
        durations = [task.seconds(self.threads_per_fit) for item in items for task in item.tasks]
        run = sum(durations) if self.jobs == 1 else lpt_makespan(durations, self.jobs)
        return sum(item.parent for item in items) + run

    def stage_memory(self, stage: str) -> tuple[float, float]:
        """(this process's peak MB, one worker's peak MB or 0) in `stage`."""
        items = self.stage_items(stage)
        size = self.size
        matrices = (sum(size.train.values()) + sum(size.validation.values())) * size.features / 2**20
        tasks = max((task.memory_mb for item in items for task in item.tasks), default=0.0)
        parent_items = max((item.memory_mb for item in items), default=0.0)
        parent = self.costs.base_mb + (matrices if self.in_memory else 0.0) + parent_items
        if self.jobs == 1:
            return parent + tasks, 0.0
        return parent, (self.costs.base_mb + tasks) if tasks else 0.0

    @property
    def stages(self) -> list[str]:
        return list(dict.fromkeys(item.stage for item in self.items))

    @property
    def total_seconds(self) -> float:
        return sum(self.stage_seconds(stage) for stage in self.stages)

    @property
    def peak_rss_mb(self) -> float:
        """The machine's peak: this process and, with --jobs, every worker at its peak."""
        return max(parent + self.jobs * worker for parent, worker in map(self.stage_memory, self.stages))

    def to_json(self) -> dict[str, Any]:
        stages = {}
        for stage in self.stages:
            parent, worker = self.stage_memory(stage)
            items = [
                {
                    "name": item.name,
                    "fits": item.fits,
                    "rows": item.rows,
                    "features": item.features,
                    "work": item.work,
                    "seconds_one_thread": round(item.seconds(1), 2),
                }
                for item in self.stage_items(stage)
            ]
            stages[stage] = {"seconds": round(self.stage_seconds(stage), 2), "peak_rss_mb": round(parent, 1)}
            stages[stage] |= {"worker_peak_rss_mb": round(worker, 1)} if worker else {}
            stages[stage]["items"] = items
        return {
            "total_seconds": round(self.total_seconds, 1),
            "total_hours": round(self.total_seconds / 3600, 2),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "machine": {"cores": self.cores, "jobs": self.jobs, "threads_per_fit": self.threads_per_fit},
            "size": {
                "train_rows": sum(self.size.train.values()),
                "train_eras": len(self.size.train),
                "validation_rows": sum(self.size.validation.values()),
                "validation_eras": len(self.size.validation),
                "features": self.size.features,
            },
            "stages": stages,
            "assumptions": self.assumptions,
            "calibration": calibration_json(self.costs),
        }

    def table(self) -> str:
        """The plan as printed: one line per item, a total per stage, the total."""
        lines = [
            f"plan: {self.size.features} features, {sum(self.size.train.values()):,} training rows in "
            f"{len(self.size.train)} eras, {sum(self.size.validation.values()):,} validation rows; {self.cores} cores, "
            f"--jobs {self.jobs}, {self.threads_per_fit} threads per fit",
            f"{'stage / item':<58} {'fits':>5} {'rows':>10} {'feat':>5} {'work':>12} {'seconds':>9} {'peak MB':>8}",
        ]
        for stage in self.stages:
            parent, worker = self.stage_memory(stage)
            memory = f"{parent:>8.0f}" + (f" + {self.jobs} x {worker:.0f}" if worker else "")
            lines.append(f"{stage:<58} {'':>5} {'':>10} {'':>5} {'':>12} {self.stage_seconds(stage):>9.0f} {memory}")
            for item in self.stage_items(stage):
                lines.append(
                    f"  {item.name[:56]:<56} {item.fits:>5} {item.rows:>10,} {item.features:>5} {item.work[:12]:>12} "
                    f"{item.seconds(self.threads_per_fit):>9.0f}"
                )
        lines.append(
            f"{'total':<58} {'':>5} {'':>10} {'':>5} {'':>12} {self.total_seconds:>9.0f} {self.peak_rss_mb:>8.0f}"
            f"   ({self.total_seconds / 3600:.2f} h)"
        )
        lines += [f"assuming {text}" for text in self.assumptions]
        return "\n".join(lines)


def calibration_json(costs: Costs) -> dict[str, Any]:
    skipped = ("trees", "epochs", "eras", "measure_era")
    fields_ = {f.name: getattr(costs, f.name) for f in dataclasses.fields(costs) if f.name not in skipped}
    return fields_ | {
        "trees": {
            str(dict(key).get("learning_rate")) + f" {dict(key).get('num_leaves')} leaves": list(v)
            for key, v in costs.trees.items()
        },
        "epochs": {name: list(v) for name, v in costs.epochs.items()},
        "per_era": {f"{kind} {rows} x {columns}": seconds for (kind, rows, columns), seconds in costs.eras.items()},
        "tree_parallel": TREE_PARALLEL,
    }


ASSUMPTIONS = [
    "the holdout and refit train each LightGBM member's cap on trees (they train the CV's choice, at most that)",
    "--torch-processes N divides a neural fit's time by N (data-parallel; measured on this machine for N = 1 only)",
    "every member is refitted (the blend leaves out those it gives no weight)",
    "neural members train their maximum epochs (they stop early when their early-stopping eras stop improving)",
    "the feature pipeline keeps every transform its ablation tries",
]


def make_plan(prep: Prepared, costs: Costs, size: Size, cores: int) -> Plan:
    """The plan of the build `prep` sets up, at `size`, on `cores` cores."""
    config = prep.config
    threads = config.threads or cores
    in_memory = config.spill_dir is None and config.jobs == 1
    return Plan(Planner(prep, size, costs).items(), costs, size, cores, config.jobs, threads, in_memory, ASSUMPTIONS)


@dataclass(frozen=True)
class PlanFor:
    """What to plan for: a hypothetical size (training rows and eras, raw features; None: the
    data's) and a machine of `cores` cores (None: this one)."""

    rows: int | None = None
    features: int | None = None
    eras: int | None = None
    cores: int | None = None


def calibrated(config: BuildConfig, target: PlanFor) -> tuple[Prepared, Calibration, Size, int]:
    """The build's `prepare`, the costs measured on its data, the size and cores to plan for."""
    config.validate()
    start = time.process_time()
    prep = prepare(config)
    calibration = Calibration(prep, time.process_time() - start)
    size = Size.of(prep).scaled(target.rows, target.features, target.eras)
    return prep, calibration, size, target.cores or os.cpu_count() or 1


def plan_build(config: BuildConfig, target: PlanFor = PlanFor()) -> Plan:
    """Load the data as the build would, calibrate on a sample of it, and plan the build."""
    prep, calibration, size, cores = calibrated(config, target)
    return make_plan(prep, calibration.costs, size, cores)


# Presets from the most to the least costly: --time-budget tries the cheaper ones last.
PRESET_ORDER = ("large", "standard", "demo", "example")
TREE_SCALES = (1.0, 0.5, 0.25)
ERA_STRIDES = (None, 2, 4)


def budget_candidates(config: BuildConfig) -> Iterator[tuple[BuildConfig, list[str]]]:
    """The build's settings from the largest down, each with the changes it makes: fewer trees at a
    larger learning rate first, then a longer era stride, then fewer CV folds, then a cheaper preset."""
    known = config.preset in PRESET_ORDER
    cheaper = [p for p in PRESET_ORDER[PRESET_ORDER.index(config.preset) + 1 :] if p in PRESETS] if known else []
    presets = [config.preset, *cheaper]
    for preset in presets:
        for folds in range(config.cv_folds, min(config.cv_folds, 2) - 1, -1):
            for stride in ERA_STRIDES if config.era_stride is None else (config.era_stride,):
                for scale in TREE_SCALES:
                    candidate = dataclasses.replace(
                        config, preset=preset, cv_folds=folds, era_stride=stride, tree_scale=config.tree_scale * scale
                    )
                    changes = [
                        f"{option} {new}"
                        for option, old, new in (
                            ("--preset", config.preset, preset),
                            ("--cv-folds", config.cv_folds, folds),
                            ("--era-stride", config.era_stride, stride),
                            ("--tree-scale", config.tree_scale, candidate.tree_scale),
                        )
                        if old != new
                    ]
                    yield candidate, changes


def fit_budget(config: BuildConfig, target: PlanFor = PlanFor()) -> tuple[BuildConfig, list[str], Plan]:
    """--time-budget: the first of `budget_candidates` whose plan fits in `config.time_budget` hours,
    the changes it makes (logged) and its plan; an error naming the smallest plan when none fits."""
    budget = config.time_budget * 3600
    prep, calibration, size, cores = calibrated(config, target)
    asked = None
    for candidate, changes in budget_candidates(config):
        setup = (
            prep
            if not changes
            else set_up(
                candidate,
                prep.data_dir,
                prep.features,
                prep.train,
                prep.validation,
                prep.missing_feature_eras,
                prep.bins,
            )
        )
        plan = make_plan(setup, calibration.add(setup), size, cores)
        asked = asked or plan
        if plan.total_seconds <= budget:
            logger.info(
                "--time-budget %.2f h: the build as asked plans %.2f h; %s (plan %.2f h)",
                config.time_budget,
                asked.total_seconds / 3600,
                "taking " + ", ".join(changes) if changes else "nothing changed",
                plan.total_seconds / 3600,
            )
            return candidate, changes, plan
    raise ValueError(
        f"--time-budget {config.time_budget:g} h: even the smallest settings tried ({', '.join(changes)}) plan "
        f"{plan.total_seconds / 3600:.2f} h on {cores} cores; give a larger budget, more cores (--jobs) or less data"
    )
