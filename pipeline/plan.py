"""The cost plan of a build, before any training: `python build_model.py plan [the build's options]`.

The plan takes the build's own pieces: `prepare` loads the data and makes the preset's members and
the CV folds exactly as the build does, and each member's fits follow from its own settings (target,
era stride, feature subset, trees, epochs) on those folds. What each fit costs on this machine is
measured on a sample of the data first (`pipeline.calibration`), so `--rows/--features/--eras` plan
a size the data does not have (Numerai's full data).

Cores: a fit on T threads takes the one-thread time of its trees divided by Amdahl's speedup with
the parallel share `TREE_PARALLEL` (binning, prediction and the neural members, which train on one
torch thread, run on one thread); with `--jobs J` each stage's fits run as J processes of cores / J
threads, longest first, and once no fit waits the running ones' trees grow onto the idle processes'
cores (`schedule.makespan`), after the work the build does in its own process (feature pipelines,
blending, scoring), whose least squares run on all of the build's threads with the parallel share
`BLAS_PARALLEL` (the refit's pipeline and the holdout's scores run beside the workers' fits instead,
on one worker's threads: `Item.beside`; the CV of the members no search touches queued behind the
search's first round: `Item.behind`). Where the build cannot know in advance what it will choose,
the plan assumes: the holdout and refit at `CHOSEN_SHARE` of the CV's cap on trees, every member
refitted, the neural members at their maximum epochs, all of the feature pipeline's transforms kept
(`Plan.assumptions`): an upper bound. `plan --choices REPORT` costs an earlier build's choices
instead (`pipeline.plan_choices`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from pipeline.analysis import PERMUTATION_ROWS
from pipeline.build import Prepared, prepare
from pipeline.calibration import Calibration, Costs, Size, View, neural
from pipeline.config import BuildConfig
from pipeline.cv import holdout_eras, walk_forward_folds
from pipeline.evaluate import checkpoints
from pipeline.feature_choice import PIPELINE_CONFIGS, TEMPORAL_ERAS
from pipeline.members.lgbm_search import survivors
from pipeline.models.lgbm import BIN_SAMPLE_ROWS, LGBMModel
from pipeline.plan_choices import (
    CHOICES,
    NO_CHOICES,
    Choices,
    chosen_among,
    chosen_trees,
    first_binning,
    kept_names,
    replace_name,
)
from pipeline.presets import PROBE
from pipeline.schedule import Item, Plan, Task
from pipeline.searches import gbdt_trials

logger = logging.getLogger(__name__)

# LightGBM's bytes per binned value: 4-bit bins of 5-valued features plus the push buffer that
# FinishLoad keeps (bench.memory, bench.scale); float features' 8-bit bins with their buffer.
BYTES_PER_BIN = 1.1
# The feature pipeline's configurations (`pipeline.feature_choice`), one probe CV each, and the two probe
# CVs of the stability check (the chosen configuration without group mixers: `Choices.stability_pipeline`).
# tests/test_plan.py checks these against the fits a build makes.
ABLATION = tuple(PIPELINE_CONFIGS)
STABILITY_PROBES = 2
# Seconds of work that does not grow with the data: verification's child process, the plots (2.4-2.8 s
# and 2.9-3.2 s in the builds of bench.scale and the default build).
FIXED_SECONDS = {"export": 3.0, "write_build_report": 3.5}


# ---------------------------------------------------------------------------------------------------
# The plan's items


class Planner:
    """The items of the build `prep` sets up, at `size`, costed with `costs`."""

    def __init__(self, prep: Prepared, size: Size, costs: Costs, choices: Choices = NO_CHOICES):
        self.prep, self.size, self.costs, self.config, self.choices = prep, size, costs, prep.config, choices
        self.width = size.features / costs.features
        eras = size.eras()
        self.folds = walk_forward_folds(eras, self.config.cv_folds, prep.embargo, self.config.cv_max_train_eras)
        self.scored = holdout_eras(eras, size.eras("validation"), prep.embargo)
        self.groups = len(set(prep.groups.values()))
        self.binned: set[tuple] = set()
        # The searched members' trials; after the search the build fits the `search` trials it keeps
        # (known only then: each planned at the trials' mean cost, unless `choices` says which).
        self.trials = gbdt_trials(prep, self.size.rows(self.folds[len(self.folds) // 2][0]))
        self.fitted = [fit for member in prep.members for fit in self.after_search(member)]

    def after_search(self, member: Any) -> list[tuple[list[Any], int]]:
        """The members a preset's `member` becomes after the search, as (trials to choose among, how
        many): itself; its trials' `search` best; or the kept trials `choices` names."""
        if member.name not in self.trials:
            return [([member], 1)]
        folds, kept = self.choices.searches.get(member.name, ((), ()))
        if len(folds) != len(self.trials[member.name]) or not kept:
            return [(self.trials[member.name], member.search)]
        return [([replace_name(self.trials[member.name][k.trial], k.name)], 1) for k in kept]

    def trees(self, member: Any) -> int:
        """A LightGBM member's trees in the holdout and refit: as an earlier build chose, else `chosen_trees`."""
        chosen = self.choices.trees.get(member.name)
        return chosen_trees(member) if chosen is None else max(1, min(chosen, member.estimator.num_boost_round))

    def items(self) -> list[Item]:
        stages = (
            self.loading,
            self.search,
            self.feature_choice,
            self.stability,
            self.search_gbdt,
            self.cv,
            self.holdout,
        )
        return [item for stage in stages for item in stage()] + self.output()

    def columns(self, member: Any, extra: str | None = None) -> View:
        """The columns a LightGBM member (or a probe, member None) reads at this size, with the
        feature pipeline's `extra` transforms (default: the chosen ones)."""
        extra = extra or self.choices.pipeline
        raw = self.size.features if member is None or member.features is None else len(member.features) * self.width
        if member is not None and not member.engineered:
            return View(round(raw), 0, False)
        mixers = PIPELINE_CONFIGS[extra]["mixing"]
        return View(round(raw), round(self.costs.extra[extra] * self.width), mixers)

    def lgbm_task(
        self, key: tuple, params: dict, rounds: int, parts: list[tuple[str, np.ndarray]], target: str, view: View
    ) -> tuple[Task, int]:
        """A LightGBM fit on `parts` (split, strided eras), binning its dataset when no fit of the
        stage has (bin once); returns the task and its labelled rows."""
        rows = sum(self.size.rows(eras, split) for split, eras in parts)
        labelled_rows = round(rows * self.size.known.get(target, 1.0))
        frame_rows = sum(self.size.rows(self.size.eras(split), split) for split in {split for split, _ in parts})
        binning = 0.0 if key in self.binned else self.costs.binning(rows, view, frame_rows)
        self.binned.add(key)
        cpu = rounds * self.costs.tree(params, labelled_rows, view.width)
        memory = (rows * view.width * BYTES_PER_BIN + BIN_SAMPLE_ROWS * view.width * 16) / 2**20
        return Task(cpu, binning + self.costs.setup(params, view.width), memory, binning), labelled_rows

    def cv_tasks(self, key: tuple, params: dict, rounds: int, stride: int, target: str, view: View) -> list[Task]:
        """One task per fold: the fit and its staged prediction of the fold's scored eras (`cv_lgbm`)."""
        tasks = []
        for k, (train_eras, val_eras) in enumerate(self.folds):
            task, _ = self.lgbm_task((*key, k), params, rounds, [("train", train_eras[::stride])], target, view)
            scored = self.size.rows(val_eras)
            staged = self.costs.predict(params, scored, rounds, len(checkpoints(rounds)))
            task.serial += staged + self.costs.transforming(scored, view)
            task.memory_mb += scored * view.width * 4 / 2**20
            tasks.append(task)
        return tasks

    def member_view(self, member: Any) -> tuple:
        """Which binned dataset a LightGBM member reads (the members that share one bin it once; a
        benchmark member bins its own, with the benchmark's rank as one more column)."""
        subset = None if member.features is None else tuple(member.features)
        return (member.kind, "engineered" if member.engineered else "raw", subset, member.era_stride)

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
                "search_tsmixer",
                f"{member.name} search",
                trials * 2,
                rows,
                self.size.features,
                f"{epochs} epochs",
                [Task(0, seconds, 0)],
            )
        ]

    def neural_memory(self, member: Any) -> float:
        """A neural fit's peak MB: its batches of whole eras at this size's rows per era."""
        return self.costs.epochs[member.name][1] * self.size.rows_per_era

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
        return Item(stage, name, len(tasks), rows, self.columns(None).width, f"{rounds} trees", tasks)

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

    def search_gbdt(self) -> list[Item]:
        """The LightGBM search in its rounds of successive halving (`lgbm_search.survivors`): every
        trial's first fold at its own settings, then each later fold of the trials still in, at the
        trials' mean trees of that fold and the binning the survivors are expected to need
        (`chosen_among`), or the survivors `choices` names at their own; the datasets it bins are the
        CV's too (dropped after the CV)."""
        self.binned = set()
        items = []
        for member in self.prep.members:
            if member.name not in self.trials:
                continue
            trials = self.trials[member.name]
            folds = [self.member_cv(trial, "search_gbdt") for trial in trials]
            views = [self.member_view(trial) for trial in trials]
            rows = [[self.size.rows(train[:: trial.era_stride]) for train, _ in self.folds] for trial in trials]
            items += [
                replace(item, name=f"{item.name} fold 1", fits=1, rows=fold_rows[0], tasks=item.tasks[:1])
                for item, fold_rows in zip(folds, rows, strict=True)
            ]
            fitted = self.choices.searches.get(member.name, ((),))[0]
            for k, count in enumerate(survivors(len(trials), member.search, len(self.folds))[1:], start=1):
                tasks = [item.tasks[k] for item in folds]
                mean_rows = round(np.mean([fold_rows[k] for fold_rows in rows]))
                if len(fitted) == len(trials):
                    alive = [i for i, n in enumerate(fitted) if n > k]
                    name = f"{member.name} fold {k + 1}: {len(alive)} of {len(trials)} trials (as chosen before)"
                    tasks = first_binning([tasks[i] for i in alive], [views[i] for i in alive], tasks, views)
                else:
                    name = f"{member.name} fold {k + 1}: {count} of {len(trials)} trials (their mean)"
                    tasks = [chosen_among(tasks, views, count)] * count
                items.append(replace(folds[0], name=name, fits=len(tasks), rows=mean_rows, tasks=tasks, round=k))
        return items

    def cv(self) -> list[Item]:
        """The CV of every member the search did not find (the search's CV is its members' own), queued
        behind the search's first round where there is a search (`searches.search_gbdt`: on a runner
        that runs fits elsewhere; `Plan.stage_seconds`)."""
        behind = "search_gbdt" if self.trials and self.config.gbdt_search_budget is None else ""
        items = [
            replace(self.member_cv(member), behind=behind)
            for member in self.prep.members
            if member.name not in self.trials
        ]
        oof_eras = len({era for _, val in self.folds for era in val})
        blend = Item(
            "cross_validate",
            "blend weights and neutralization",
            1,
            0,
            self.size.features,
            "least squares",
            blas=2 * self.costs.per_era("projection", oof_eras, self.size.rows_per_era, self.size.features),
        )
        return [*items, blend]

    def neural_cv_tasks(self, member: Any) -> list[Task]:
        """A neural member's CV: a fit per fold, or chained (`chain_epochs`): the first fold's fit, then
        one task fine-tuning on each later fold's new eras."""
        epochs, memory = member.estimator.max_epochs, self.neural_memory(member)
        if not getattr(member, "chain_epochs", 0):
            return [Task(0.0, self.neural_seconds(member, train, epochs), memory) for train, _ in self.folds]
        seconds = self.neural_seconds(member, self.folds[0][0], epochs)
        for (before, _), (train, _) in zip(self.folds, self.folds[1:], strict=False):
            seconds += self.neural_seconds(
                member, [era for era in train if era not in set(before)], member.chain_epochs
            )
        return [Task(0.0, seconds, memory)]

    def member_cv(self, member: Any, stage: str = "cross_validate") -> Item:
        rows = self.size.rows(self.folds[-1][0][:: member.era_stride])
        if neural(member):
            tasks = self.neural_cv_tasks(member)
            work = f"{member.estimator.max_epochs} epochs"
            return Item(stage, f"{member.name} CV", len(self.folds), rows, self.size.features, work, tasks)
        if not isinstance(getattr(member, "estimator", None), LGBMModel):
            return Item(
                stage,
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
            stage,
            f"{member.name} CV",
            len(tasks),
            rows,
            columns.width,
            f"{estimator.num_boost_round} trees",
            tasks,
        )

    def stability(self) -> list[Item]:
        fitted = Item(
            "check_stability",
            "fold feature pipelines (no mixers) and feature stability",
            STABILITY_PROBES * len(self.folds),
            self.size.rows(self.folds[-1][0]),
            self.size.features,
            "fit",
            parent=self.stability_seconds(),
        )
        probes = (self.choices.stability_pipeline,) * STABILITY_PROBES
        return [fitted, self.probes("check_stability", "probe CVs with and without unstable features", probes)]

    def stability_seconds(self) -> float:
        """The features' per-era CORR over at most `TEMPORAL_ERAS` training eras, and fold pipelines
        (no mixers) for the probes with and without the flagged features."""
        eras = min(TEMPORAL_ERAS, len(self.size.train))
        era_corr = self.costs.era_corr * eras * self.size.rows_per_era * self.size.features
        return era_corr + STABILITY_PROBES * sum(self.pipeline_fit(train, mixing=False) for train, _ in self.folds)

    def member_fits(
        self, stage: str, parts: list[tuple[str, np.ndarray]], seen: Sequence[str], shipped: bool = False
    ) -> list[Item]:
        """Each member (`shipped`: each the blend weights) trained on every era of `parts` (the holdout's
        or the refit's); a chained neural member fine-tunes on the eras it has not `seen`; a searched
        member's kept trials at the trials' mean cost."""
        self.binned = set()
        items = []
        for group, kept in self.fitted:
            if len(group) > 1:
                items += self.kept_fits(stage, parts, group, kept, shipped)
                continue
            member = group[0]
            if shipped and not self.choices.ships(member.name):
                continue
            if neural(member):
                epochs, seen_eras = member.estimator.max_epochs, set()
                if getattr(member, "chain_epochs", 0):
                    epochs, seen_eras = member.chain_epochs, set(seen)
                new = [(split, [era for era in eras if era not in seen_eras]) for split, eras in parts]
                rows = sum(self.size.rows(eras[:: member.era_stride], split) for split, eras in new)
                seconds = self.neural_seconds(member, [], epochs, split_rows=rows)
                task = Task(0.0, seconds, self.neural_memory(member))
                items.append(
                    Item(stage, f"{member.name} {stage}", 1, rows, self.size.features, f"{epochs} epochs", [task])
                )
            elif isinstance(getattr(member, "estimator", None), LGBMModel):
                task, rows = self.lgbm_fit(stage, member, parts)
                work = f"{self.trees(member)} trees"
                items.append(Item(stage, f"{member.name} {stage}", 1, rows, self.columns(member).width, work, [task]))
        return items

    def lgbm_fit(
        self, stage: str, member: Any, parts: list[tuple[str, np.ndarray]], trees: int | None = None
    ) -> tuple[Task, int]:
        """A LightGBM member's fit on every era of `parts` at its planned trees (or `trees`)."""
        strided = [(split, eras[:: member.era_stride]) for split, eras in parts]
        key = (stage, self.member_view(member))
        params, view = member.estimator.lgb_params(), self.columns(member)
        trees = trees or self.trees(member)
        return self.lgbm_task(key, params, trees, strided, member.train_target, view)

    def kept_fits(
        self, stage: str, parts: list[tuple[str, np.ndarray]], trials: list[Any], kept: int, shipped: bool
    ) -> list[Item]:
        """The `kept` members a search keeps of `trials` (which ones, the CV decides; `shipped`: those of
        them the blend weights), each at the trials' mean cost of trees, and together binning the views
        `kept` trials drawn from `trials` are expected to need (a view is binned once whichever kept
        trials share it); later items bin their own."""
        before = set(self.binned)
        fits = [self.lgbm_fit(stage, trial, parts, chosen_trees(trial)) for trial in trials]
        self.binned = before
        names = [name for name in kept_names(trials, kept) if self.choices.ships(name) or not shipped]
        task = chosen_among([task for task, _ in fits], [self.member_view(trial) for trial in trials], len(names))
        rows, width = round(np.mean([rows for _, rows in fits])), self.columns(trials[0]).width
        work = "trials' trees"
        return [Item(stage, f"{name} {stage} (a trial's mean)", 1, rows, width, work, [task]) for name in names]

    def holdout(self) -> list[Item]:
        """Stages score_holdout and refit: with --jobs 1 one after the other; with --jobs the refit's
        pipeline fitted while the holdout's fits run, its fits while this process scores."""
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
        fits = self.member_fits("score_holdout", [("train", eras)], self.folds[-1][0])
        refit_pipeline, refits = self.refit_items()
        if self.config.jobs == 1:
            return [pipeline, *refit_pipeline, *fits, self.scoring(), *refits]
        return [
            pipeline,
            *(replace(item, round=1) for item in fits),
            *(replace(item, round=1, beside=True) for item in refit_pipeline),
            *(replace(item, stage="score_holdout", round=2) for item in refits),
            replace(self.scoring(), round=2, beside=True),
        ]

    def predict_seconds(self, rows: int, shipped: bool = False) -> float:
        """Every member's (`shipped`: each the blend weights) scores of `rows` rows at its planned trees."""
        seconds = 0.0
        for group, kept in self.fitted:
            names = kept_names(group, kept) if len(group) > 1 else [group[0].name]
            for member in group:
                share = sum(self.choices.ships(name) or not shipped for name in names) / len(group)
                if isinstance(getattr(member, "estimator", None), LGBMModel):
                    trees = self.trees(member) if len(group) == 1 else chosen_trees(member)
                    seconds += share * self.costs.predict(member.estimator.lgb_params(), rows, trees)
                    seconds += share * self.costs.transforming(rows, self.columns(member))
                elif neural(member):
                    seconds += share * self.costs.epochs[member.name][2] * rows * self.width
        return seconds

    @property
    def members(self) -> int:
        """The members the build scores after its searches."""
        return sum(kept for _, kept in self.fitted)

    def scoring(self) -> Item:
        """The validation figures of every member and the blend, and the permutation importance by
        group (the ensemble, neutralized, once per group and once as it is); the figures' per-era least
        squares (FNC, exposure) and the permutation's projections on BLAS threads, as the blend's."""
        rows = self.size.rows(self.scored, "validation")
        per_era = rows / max(1, len(self.scored))
        figures = self.costs.per_era("scoring", len(self.scored), per_era, self.size.features, self.members + 1)
        # The permutation importance scores a sample of the rows (`analysis.era_sample`).
        sampled = min(rows, max(PERMUTATION_ROWS, 100 * len(self.scored)))
        sampled_per_era = sampled / max(1, len(self.scored))
        projection = self.costs.per_era("projection", len(self.scored), sampled_per_era, self.size.features)
        seconds = self.predict_seconds(rows) + (self.groups + 1) * self.predict_seconds(sampled, shipped=True)
        work = f"{self.members + 1} models, {self.groups} groups"
        return Item(
            "score_holdout",
            "validation scores and permutation importance",
            1,
            rows,
            self.size.features,
            work,
            parent=seconds,
            blas=figures + (self.groups + 1) * projection,
        )

    def refit_items(self) -> tuple[list[Item], list[Item]]:
        """The refit's feature pipeline (fitted in stage score_holdout) and its fits."""
        if not self.config.refit:
            return [], []
        parts = [("train", self.size.eras()), ("validation", self.size.eras("validation"))]
        rows = sum(self.size.rows(eras, split) for split, eras in parts)
        pipeline = Item(
            "score_holdout",
            "feature pipeline on train and validation eras",
            1,
            rows,
            self.size.features,
            "fit",
            parent=self.pipeline_fit([], split_rows=rows),
        )
        return [pipeline], self.member_fits("refit", parts, self.size.eras(), shipped=True)

    def output(self) -> list[Item]:
        live = round(self.size.rows_per_era)
        verify = FIXED_SECONDS["export"] + self.predict_seconds(live, shipped=True)
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


ASSUMPTIONS = [
    "--torch-processes N divides a neural fit's time by N (data-parallel; measured on this machine for N = 1 only)",
    "with --jobs, this process's work beside the workers' fits (the refit's pipeline, the holdout's scores) "
    "takes the threads of one of them, and the refit's fits are counted in score_holdout, where they start",
    "with --jobs, once no fit waits, the running LightGBM fits grow onto the idle workers' cores (their trees "
    "at Amdahl's speedup, their binning on one thread)",
    "with --jobs, the CV of the members no search touches is queued behind the search's first round and the "
    "workers take tasks first come, first served (the CV's share of the wall time is what runs past the search)",
    "neural members train their maximum epochs (they stop early when their early-stopping eras stop improving)",
]


def make_plan(prep: Prepared, costs: Costs, size: Size, cores: int, choices: Choices = NO_CHOICES) -> Plan:
    """The plan of the build `prep` sets up, at `size`, on `cores` cores, with the CV's `choices`."""
    config = prep.config
    threads = config.threads or cores
    in_memory = config.spill_dir is None and config.jobs == 1
    assumed = CHOICES if choices.source is None else [choices.describe()]
    items = Planner(prep, size, costs, choices).items()
    return Plan(items, costs, size, cores, config.jobs, threads, in_memory, assumed + ASSUMPTIONS)


@dataclass(frozen=True)
class PlanFor:
    """What to plan for: a hypothetical size (training rows and eras, raw features; None: the
    data's), a machine of `cores` cores (None: this one) and the CV's `choices` (`plan --choices`)."""

    rows: int | None = None
    features: int | None = None
    eras: int | None = None
    cores: int | None = None
    choices: Choices = field(default_factory=Choices)


def calibrated(config: BuildConfig, target: PlanFor) -> tuple[Prepared, Calibration, Size, int]:
    """The build's `prepare`, the costs measured on its data, the size and cores to plan for."""
    config.validate()
    start = time.process_time()
    prep = prepare(config)
    size = Size.of(prep).scaled(target.rows, target.features, target.eras)
    calibration = Calibration(prep, time.process_time() - start, sum(size.train.values()))
    return prep, calibration, size, target.cores or os.cpu_count() or 1


def plan_build(config: BuildConfig, target: PlanFor = PlanFor()) -> Plan:
    """Load the data as the build would, calibrate on a sample of it, and plan the build."""
    prep, calibration, size, cores = calibrated(config, target)
    return make_plan(prep, calibration.costs, size, cores, target.choices)
