"""The build behind `build_model.py`, stage by stage:

    prepare -> search_tsmixer -> choose_features -> check_stability -> search_gbdt -> cross_validate
      -> score_holdout -> refit -> export -> write_build_report

(the two searches live in `pipeline.searches`)

Each stage is a function with typed inputs and outputs; `build` runs them in order inside
`BuildOutputs` (the lock on `--out`, and outputs replaced together), and the weekly refresh
(`pipeline.refresh`) reuses `load_data`, `export` and `write_outputs_report`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from pipeline import data as nd
from pipeline import synthetic
from pipeline.analysis import (
    ROLLING_WINDOW,
    era_sample,
    fold_table,
    gain_importance,
    permutation_by_group,
    rolling_corr,
    validation_figures,
)
from pipeline.artifacts import Artifacts, SavedMember, era_fingerprints, save_artifacts
from pipeline.benchmarks import attach_benchmarks, live_files
from pipeline.binning import DatasetCache
from pipeline.blend import choose_blend, choose_neutralization, cross_fold_predictions, fit_blend
from pipeline.config import BuildConfig
from pipeline.cv import check_embargo, default_embargo, holdout_eras, walk_forward_folds
from pipeline.distributed import dask_runner
from pipeline.evaluate import CVResult
from pipeline.feature_choice import choose_feature_pipeline, fold_pipelines, temporal_analysis
from pipeline.features import RAW_FEATURES, FeaturePipeline
from pipeline.members import KINDS, Member, MemberContext, MemberEntry, kinds_with
from pipeline.members.benchmark import predict_rows
from pipeline.metrics import per_era_corr, summarize
from pipeline.objective import check_objective, numerai_figures, objective_target, paid_rows
from pipeline.outputs import BuildOutputs, OutputPaths, terminate_as_exit
from pipeline.parallel import InProcess, Runner, active, current, local_runner, start_cv_members, start_fits
from pipeline.presets import REFERENCE_MEMBER, make_members, member_targets, preset_entries
from pipeline.report import add_timings, search_table, summary_table, write_report
from pipeline.resources import Timings
from pipeline.runtime import PickleState, blend_ranks, ensemble_scores, make_predict
from pipeline.searches import search_gbdt, search_tsmixer
from pipeline.targets import aux_targets
from pipeline.verify import VerificationReport, file_sha256, write_verified_pickle

logger = logging.getLogger(__name__)

Fold = tuple[np.ndarray, np.ndarray]


@dataclass
class BuildResult:
    model_path: Path
    report_path: Path
    models: dict[str, dict[str, Any]]
    verification: VerificationReport
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts_path: Path | None = None
    search: dict[str, Any] | None = None


def load_data(
    config: BuildConfig, data_dir: Path, train_targets: list[str], spill_dir: Path | None = None
) -> tuple[list[str], nd.EraFrame, nd.EraFrame]:
    """Training rows with `train_targets` (the main target first); validation rows with every target;
    both with the chosen benchmark model's predictions when the data has them. The int8 matrices are
    files in `spill_dir` (default --spill-dir) when given."""
    spill_dir = spill_dir or config.spill_dir
    features = config.features or nd.resolve_features(data_dir, config.feature_set)
    logger.info("data %s: %d features, target %r, preset %r", data_dir, len(features), config.target, config.preset)
    train = nd.load_split(data_dir / "train.parquet", features, train_targets, data_type="train", spill_dir=spill_dir)
    targets = [config.target] + [t for t in nd.target_names(data_dir) if t != config.target]
    available = nd.parquet_columns(data_dir / "validation.parquet")
    validation = nd.load_split(
        data_dir / "validation.parquet",
        features,
        [t for t in targets if t == config.target or t in available],
        data_type="validation",
        spill_dir=spill_dir,
    )
    nd.check_disjoint_ids(train, validation)
    attach_benchmarks(data_dir, config.benchmark_model, train, validation)
    for split in (train, validation):
        logger.info(
            "%s: %d labelled rows in %d eras, %.0f MB int8%s (%d unlabelled or other rows left out)",
            split.path.name,
            len(split),
            len(split.era_order),
            split.features.nbytes / 2**20,
            f" in a file in {spill_dir}" if spill_dir else "",
            split.dropped_rows,
        )
    return features, train, validation


def user_entries(kinds: dict[str, type[Member]]) -> list[MemberEntry]:
    """One preset entry per member class of the user's own (`--member`), named after its kind."""
    return [MemberEntry(kind, kind) for kind in kinds if kind not in KINDS]


def preset_targets(
    config: BuildConfig, data_dir: Path
) -> tuple[tuple[MemberEntry, ...], list[str], dict[str, type[Member]]]:
    """The entries of the build's preset and `--member`s, the target columns they train on (the main
    target first) and the member kinds they are made of."""
    kinds = kinds_with(config.members)
    entries = preset_entries(config.preset, user_entries(kinds))
    targets = [config.target] + [t for t in nd.target_names(data_dir) if t != config.target]
    return entries, member_targets(entries, targets, config.target, kinds), kinds


@dataclass
class Prepared:
    """Stage `prepare`: the data, the members the preset asks for, the CV folds and the scored eras."""

    config: BuildConfig
    data_dir: Path
    requested_features: list[str]
    features: list[str]
    train: nd.EraFrame
    validation: nd.EraFrame
    groups: dict[str, str]
    members: list[Member]
    embargo: int
    folds: list[Fold]
    scored_eras: np.ndarray
    missing_feature_eras: int
    bins: DatasetCache


def prepare(config: BuildConfig, runner: Runner | None = None) -> Prepared:
    """The data as the build's `runner` needs it (default: this process), members, folds, scored eras."""
    runner = runner or InProcess(config.spill_dir)
    data_dir = Path(config.data_dir) if config.data_dir is not None else synthetic.default_data_dir()
    _, targets, _ = preset_targets(config, data_dir)
    features, train, validation = load_data(config, data_dir, targets, runner.matrix_dir)
    missing = int(train.missing_feature_eras().to_numpy().sum())
    logger.info("missing-feature marker (all 2 in an era): %d feature-eras in train", missing)
    return set_up(config, data_dir, features, train, validation, missing, runner.cache(config.seed))


def set_up(
    config: BuildConfig,
    data_dir: Path,
    features: list[str],
    train: nd.EraFrame,
    validation: nd.EraFrame,
    missing: int,
    bins: DatasetCache,
) -> Prepared:
    """`prepare` on loaded data: the members the options ask for, the embargo, the CV folds and the
    scored validation eras (`pipeline.plan` sets up other options on the same data this way)."""
    entries, _, kinds = preset_targets(config, data_dir)
    feature_sets = nd.read_features_json(data_dir)["feature_sets"]
    # 16 eras when a 60-day target is trained on: the entries asked for it and the data has one.
    embargo = config.embargo if config.embargo is not None else default_embargo(list(train.targets.columns))
    context = MemberContext(
        frame=train,
        main_target=config.target,
        seed=config.seed,
        threads=config.threads,
        num_boost_round=config.num_boost_round,
        era_stride=config.era_stride,
        feature_sets=feature_sets,
        processes=config.torch_processes,
        embargo=embargo,
        bins=bins,
        tree_scale=config.tree_scale,
    )
    members = make_members(entries, context, kinds)
    check_embargo(train.era_order, validation.era_order, embargo)
    folds = walk_forward_folds(train.era_order, config.cv_folds, embargo, config.cv_max_train_eras)
    check_objective(config.scoring(), train, [va for _, va in folds])
    logger.info(
        "members: %s; %d CV folds, embargo %d eras",
        ", ".join(f"{m.name} ({m.train_target})" for m in members),
        len(folds),
        embargo,
    )
    return Prepared(
        config,
        data_dir,
        list(features),
        features,
        train,
        validation,
        nd.feature_groups(data_dir, features),
        members,
        embargo,
        folds,
        holdout_eras(train.era_order, validation.era_order, embargo),
        missing,
        bins,
    )


@dataclass
class FeatureChoice:
    """Stage `choose_features`: one fitted pipeline per CV fold, the chosen settings and the ablation."""

    fold_pipelines: list[FeaturePipeline]
    settings: dict[str, Any]
    report: dict[str, Any]


def choose_features(prep: Prepared) -> FeatureChoice:
    """The feature pipeline, chosen on the CV when a member reads it; raw features otherwise."""
    if not any(member.uses_pipeline for member in prep.members):
        pipelines = fold_pipelines(prep.train, prep.folds, prep.groups, RAW_FEATURES)
        return FeatureChoice(pipelines, dict(RAW_FEATURES), {"chosen": RAW_FEATURES})
    mixer_targets = [prep.config.target, *aux_targets(prep.train, prep.config.target, "_20")]
    pipelines, settings, report = choose_feature_pipeline(
        prep.train, prep.folds, prep.groups, prep.config, mixer_targets
    )
    return FeatureChoice(pipelines, settings, report)


@dataclass
class CrossValidation:
    """Stage `cross_validate`: each member's out-of-fold figures, the blend weights and neutralization
    chosen on them (on --objective), and the blend's honest (cross-fold) CV: its CORR per era and its
    predictions on the training rows every member scored (`scored`)."""

    results: dict[str, CVResult]
    weights: np.ndarray
    neutralization: float
    neutralization_table: pd.DataFrame
    neutralization_cross_fold: dict[str, Any] | None
    blend_per_era: pd.Series
    blend_rule: str
    blend_rules: pd.DataFrame
    neutralizer: str
    neutralizer_names: list[str] | None
    blend_oof: np.ndarray
    scored: np.ndarray


def oof_matrix(results: dict[str, CVResult]) -> tuple[np.ndarray, np.ndarray]:
    """Out-of-fold predictions of every member as rows x members, on the rows every member scored."""
    stacked = np.column_stack([r.oof for r in results.values()])
    scored = ~np.isnan(stacked).any(axis=1)
    return stacked[scored], scored


def cross_validate(
    prep: Prepared,
    choice: FeatureChoice,
    searched: dict[str, CVResult],
    unstable: list[str],
    started: Callable[[], dict[str, CVResult]] | None = None,
) -> CrossValidation:
    """Every member's out-of-fold CV (members found by a search keep the search's; `started`: collects
    the others' when the search started them), then the blend and its neutralization (against all
    features, the `unstable` ones or a feature group)."""
    config, train = prep.config, prep.train
    if started is None:
        pending = [member for member in prep.members if member.name not in searched]
        started = start_cv_members(pending, train, prep.folds, config.target, choice.fold_pipelines)
    fresh = started()
    for name, result in fresh.items():
        logger.info("%s: CV chose %s, CV CORR %.4f", name, result.chosen, result.per_era.mean())
    results: dict[str, CVResult] = {m.name: searched.get(m.name) or fresh[m.name] for m in prep.members}
    oof, scored = oof_matrix(results)
    eras, y = train.eras[scored], objective_target(config.scoring(), train, np.flatnonzero(scored), config.target)
    logger.info("blend chosen on %s, on the %d CV eras all members scored", config.scoring().describe(), len(set(eras)))
    fold_eras = [va for _, va in prep.folds]
    reference = next((k for k, member in enumerate(prep.members) if member.name == REFERENCE_MEMBER), None)
    rule, rules, fold_weights = choose_blend(oof, y, eras, fold_eras, reference)
    weights = fit_blend(oof, y, eras, rule, reference)
    blended = blend_ranks(oof, weights, eras)
    sets = neutralizer_sets(prep, unstable, exposed_groups(blended, train.features[scored], prep))
    columns = {
        name: None if names is None else nd.feature_columns(train.feature_names, names) for name, names in sets.items()
    }
    choice = choose_neutralization(blended, train.features[scored], y, eras, columns, fold_eras=fold_eras)
    proportion, neutralizer = choice.proportion, choice.neutralizer
    if choice.cross_fold is not None:
        logger.info(
            "neutralization picked on the other folds (%s): %+.4f ± %.4f against none",
            ", ".join(choice.cross_fold["fold_picks"]),
            choice.cross_fold["vs_none"],
            choice.cross_fold["se"],
        )
    if config.neutralization is not None:
        logger.info("neutralization %.2f as asked (the CV preferred %.2f)", config.neutralization, proportion)
        proportion, neutralizer = config.neutralization, "all features"
    x = train.features[scored]
    blend_oof, _ = cross_fold_predictions(
        oof, y, eras, fold_eras, x, proportion, rule, reference, columns[neutralizer], fold_weights
    )
    blend_cv = per_era_corr(blend_oof, train.targets[config.target].to_numpy()[scored], eras)
    logger.info(
        "blend %r (cross-fold CV %s): weights %s, neutralization %.2f against %s",
        rule,
        {name: round(float(m), 4) for name, m in rules["mean"].items()},
        {name: round(float(w), 3) for name, w in zip(results, weights, strict=True)},
        proportion,
        neutralizer,
    )
    return CrossValidation(
        results,
        weights,
        proportion,
        choice.table,
        choice.cross_fold,
        blend_cv,
        rule,
        rules,
        neutralizer,
        sets[neutralizer],
        blend_oof,
        scored,
    )


# Feature groups the neutralization choice tries: those the blend is most exposed to.
NEUTRALIZER_GROUPS = 2


def exposed_groups(blended: np.ndarray, features: np.ndarray, prep: Prepared) -> list[str]:
    """The `NEUTRALIZER_GROUPS` feature groups with the largest mean absolute correlation between their
    features and the blend's out-of-fold ranks."""
    x = features.astype(np.float32)
    x -= x.mean(axis=0)
    x /= np.maximum(x.std(axis=0), 1e-6)
    b = (blended - blended.mean()) / max(float(blended.std()), 1e-12)
    exposure = np.abs(x.T @ b.astype(np.float32)) / len(b)
    group_of = np.array([prep.groups[name] for name in prep.train.feature_names])
    means = {group: float(exposure[group_of == group].mean()) for group in dict.fromkeys(group_of)}
    return sorted(means, key=lambda group: -means[group])[:NEUTRALIZER_GROUPS]


def neutralizer_sets(prep: Prepared, unstable: list[str], groups: list[str]) -> dict[str, list[str] | None]:
    """Feature sets the blend may be neutralized against: all features, the features flagged unstable
    over the training eras (unless --drop-unstable leaves them out), and each of `groups`."""
    sets: dict[str, list[str] | None] = {"all features": None}
    if unstable and not prep.config.drop_unstable:
        sets["unstable features"] = list(unstable)
    for group in groups:
        sets[f"group {group}"] = [name for name in prep.features if prep.groups[name] == group]
    return sets


def check_stability(prep: Prepared, choice: FeatureChoice) -> tuple[dict[str, Any], Prepared]:
    """Feature stability over training eras; with --drop-unstable, the data without the flagged features."""
    settings = choice.settings | {"mixing": False}
    temporal, kept = temporal_analysis(prep.train, prep.config, prep.folds, prep.groups, settings)
    if not prep.config.drop_unstable:
        return temporal, prep
    train, validation = prep.train.with_features(kept), prep.validation.with_features(kept)
    return temporal, replace(prep, features=kept, train=train, validation=validation)


@dataclass
class Holdout:
    """Stage `score_holdout`: every member and the blend trained on train eras and scored once on the
    validation eras after the embargo, with the members the blend ships."""

    models: dict[str, dict[str, Any]]
    pipeline: FeaturePipeline
    shipped: list[tuple[Member, float]]
    importance: dict[str, Any]


@dataclass
class RefitStart:
    """The refit as `train_holdout` started it: its frames, feature pipeline and fits (`collect`)."""

    frames: list[nd.EraFrame]
    pipeline: FeaturePipeline
    holdout_pipeline: FeaturePipeline
    collect: Callable[[], None]


def train_holdout(prep: Prepared, choice: FeatureChoice, cv: CrossValidation) -> RefitStart:
    """Every member trained on train eras for the holdout, the refit's feature pipeline fitted here
    meanwhile; then the refit of the members the blend ships is started: it needs the CV's choices,
    not the holdout's scores, so on --jobs or Dask it runs while this process scores the holdout."""
    groups, settings = prep.groups, choice.settings
    holdout_pipeline = FeaturePipeline(groups, **settings).fit([(prep.train, prep.train.era_order)])
    collect_holdout = start_fits(prep.members, [prep.train], holdout_pipeline, "holdout")
    frames, pipeline, shipped = [prep.train], holdout_pipeline, []
    if prep.config.refit:
        frames = [prep.train, prep.validation]
        with current().occupy():  # beside the holdout's fits, on one worker's share of the cores
            pipeline = FeaturePipeline(groups, **settings).fit([(f, f.era_order) for f in frames])
        shipped = [member for member, weight in zip(prep.members, cv.weights, strict=True) if weight > 0]
    collect_holdout()
    prep.bins.clear()
    if shipped:
        names = ", ".join(member.name for member in shipped)
        logger.info("refitting the blended members (%s) on train and validation eras with the CV's settings", names)
    return RefitStart(frames, pipeline, holdout_pipeline, start_fits(shipped, frames, pipeline, "refit"))


def score_holdout(prep: Prepared, cv: CrossValidation, search: dict | None, pipeline: FeaturePipeline) -> Holdout:
    """Every member (trained by `train_holdout` with `pipeline`) and the blend scored on the validation eras."""
    config, validation = prep.config, prep.validation
    rows = validation.select_eras(prep.scored_eras)
    eras, x = validation.eras[rows], validation.features[rows]
    benchmarks = None if validation.benchmark is None else validation.benchmark.to_frame()
    objective, train = config.scoring(), prep.train
    paid = paid_rows(prep.data_dir, train, validation, rows, config.target)
    models = {}
    scores = [predict_rows(member, validation, rows) for member in prep.members]
    columns = nd.feature_columns(prep.features, cv.neutralizer_names)
    ensemble = ensemble_scores(np.column_stack(scores), cv.weights, x, eras, cv.neutralization, columns)
    names = [member.name for member in prep.members]
    figures = validation_figures(
        dict(zip([*names, "ensemble"], [*scores, ensemble], strict=True)), validation, rows, config.target, benchmarks
    )
    for member, predictions in zip(prep.members, scores, strict=True):
        result = cv.results[member.name]
        searched = {"searched": search["chosen"]} if search and search["member"] == member.name else {}
        models[member.name] = {
            "cv": summarize(result.per_era),
            "cv_per_era": result.per_era,
            "chosen": result.chosen | member.chosen() | searched,
            "cv_curve": result.curve,
            **figures[member.name],
            "numerai": numerai_figures(paid, objective, result.oof, predictions),
        }
    # Members the blend gives no weight are left out of the pickle (and of its refit).
    shipped = [(m, float(w)) for m, w in zip(prep.members, cv.weights, strict=True) if w > 0]

    sample = era_sample(rows, validation.eras, seed=config.seed)
    sample_eras, shipped_weights = validation.eras[sample], np.array([w for _, w in shipped])

    def ensemble_on(features: np.ndarray) -> np.ndarray:
        stacked = np.column_stack([predict_rows(member, validation, sample, features) for member, _ in shipped])
        return ensemble_scores(stacked, shipped_weights, features, sample_eras, cv.neutralization, columns)

    models["ensemble"] = {
        "cv": summarize(cv.blend_per_era),
        "cv_per_era": cv.blend_per_era,
        "chosen": {
            "weights": dict(zip(cv.results, cv.weights, strict=True)),
            "blend_rule": cv.blend_rule,
            "blend_rules_cv": cv.blend_rules.to_dict(orient="index"),
            "neutralization": cv.neutralization,
            "neutralizer": cv.neutralizer,
            "neutralization_cv": {
                f"{name}: {proportion:g}": figures
                for (name, proportion), figures in cv.neutralization_table.to_dict(orient="index").items()
            },
            "neutralization_cross_fold": cv.neutralization_cross_fold,
        },
        **figures["ensemble"],
    }
    blend_oof = np.full(len(train), np.nan)
    blend_oof[cv.scored] = cv.blend_oof
    models["ensemble"]["numerai"] = numerai_figures(paid, objective, blend_oof, ensemble)
    gains = next((gain for member in prep.members if (gain := member.importance()) is not None), None)
    importance = {} if gains is None else gain_importance(gains, prep.groups)
    importance["permutation_by_group"] = permutation_by_group(
        ensemble_on, validation, sample, config.target, prep.groups, seed=config.seed
    )
    importance["permutation_rows"] = len(sample)
    return Holdout(models, pipeline, shipped, importance)


@dataclass
class Refit:
    """Stage `refit`: the shipped members trained on every labelled era (or left on train eras)."""

    pipeline: FeaturePipeline
    trained_on: list[nd.EraFrame]
    members: list[SavedMember]


def refit(holdout: Holdout, started: RefitStart) -> Refit:
    """The refit `train_holdout` started, waited for."""
    started.collect()
    members = [SavedMember.trained(member, weight, started.frames) for member, weight in holdout.shipped]
    return Refit(started.pipeline, started.frames, members)


def pickle_state(
    features: list[str], members: list[SavedMember], neutralization: float, neutralizers: list[str] | None
) -> PickleState:
    """The plain data the predict closure holds: feature names, exported members, neutralization."""
    columns = nd.feature_columns(features, neutralizers)
    return {
        "feature_names": features,
        "members": [saved.member.export(saved.weight) for saved in members],
        "neutralization": neutralization,
        "neutralizer_columns": None if columns is None else columns.tolist(),
    }


def by_value_modules(members: list[SavedMember]) -> list[ModuleType]:
    """Modules of members of the user's own kinds: pickled by value, as Numerai's container lacks them."""
    names = {type(saved.member).__module__ for saved in members}
    return [sys.modules[name] for name in sorted(names) if name.split(".")[0] != "pipeline"]


def export(data_dir: Path, validation: nd.EraFrame, artifacts: Artifacts, outputs: BuildOutputs) -> VerificationReport:
    """Stage `export`: the pickle written to its staged path and verified on the data's live file and
    live benchmark models (or stand-ins), then the refresh artifacts; nothing reaches `--out` before
    `BuildOutputs.commit`."""
    features = artifacts.feature_names
    state = pickle_state(features, artifacts.members, artifacts.neutralization, artifacts.neutralizers)
    with tempfile.TemporaryDirectory() as scratch:
        live, benchmarks = live_files(data_dir, Path(scratch), validation)
        predict, modules = make_predict(state), by_value_modules(artifacts.members)
        staged = outputs.staged
        verification = write_verified_pickle(predict, staged.pickle, live, modules, benchmarks, staged.verified)
    verification.model_path = outputs.paths.pickle
    save_artifacts(outputs.staged.artifacts, replace(artifacts, pickle_sha256=file_sha256(outputs.staged.pickle)))
    return verification


def build_artifacts(prep: Prepared, cv: CrossValidation, fitted: Refit) -> Artifacts:
    return Artifacts(
        settings=asdict(prep.config) | {"embargo": prep.embargo},
        requested_features=prep.requested_features,
        feature_names=prep.features,
        pipeline=fitted.pipeline,
        members=fitted.members,
        neutralization=cv.neutralization,
        neutralizers=cv.neutralizer_names,
        embargo=prep.embargo,
        eras=era_fingerprints(fitted.trained_on, [e for frame in fitted.trained_on for e in frame.era_order]),
    )


def data_summary(prep: Prepared) -> dict[str, Any]:
    scored = prep.scored_eras
    return {
        "data_dir": prep.data_dir,
        "features": len(prep.features),
        "train": {"rows": len(prep.train), "eras": len(prep.train.era_order), "rows_left_out": prep.train.dropped_rows},
        "validation": {
            "rows": len(prep.validation),
            "eras": len(prep.validation.era_order),
            "rows_left_out": prep.validation.dropped_rows,
            "scored_eras": [str(scored[0]), str(scored[-1]), len(scored)],
        },
        "embargo": prep.embargo,
        "missing_feature_eras_train": prep.missing_feature_eras,
        "pickle": "refit on train and validation eras" if prep.config.refit else "trained on train eras only",
    }


def write_outputs_report(
    outputs: BuildOutputs,
    config: BuildConfig,
    embargo: int,
    features: list[str],
    verification: VerificationReport,
    sections: dict[str, Any],
) -> Path:
    """report.json, its plots and report.html into the staged report directory; shared by build and
    refresh: the given sections, then the settings, feature names and verification of the pickle (with
    its sha256, which the artifacts' manifest records too: the three outputs of one build match)."""
    sha256 = file_sha256(outputs.staged.pickle)
    sections["data"] = sections["data"] | {"artifacts": outputs.paths.artifacts, "pickle_sha256": sha256}
    write_report(
        outputs.staged.report,
        sections
        | {
            "settings": asdict(config) | {"features": len(features), "embargo": embargo},
            "feature_names": features,
            "verification": asdict(verification),
        },
    )
    return outputs.paths.report / "report.json"


def write_build_report(
    prep: Prepared,
    outputs: BuildOutputs,
    choice: FeatureChoice,
    holdout: Holdout,
    verification: VerificationReport,
    extra: dict[str, Any],
) -> Path:
    models = holdout.models
    return write_outputs_report(
        outputs,
        prep.config,
        prep.embargo,
        prep.features,
        verification,
        {
            "models": models,
            "folds": fold_table(prep.folds),
            "worst_eras": {name: figures.pop("worst_eras") for name, figures in models.items()},
            "rolling": {"window": ROLLING_WINDOW}
            | {
                name: rolling_corr(pd.concat([figures["cv_per_era"], figures["validation_per_era"]]))
                for name, figures in models.items()
            },
            "importance": holdout.importance,
            "feature_pipeline": choice.report,
            "data": data_summary(prep),
        }
        | extra,
    )


def build(config: BuildConfig) -> BuildResult:
    """CV, held-out validation, blend, refit, export and verify; `--out` gets the pickle, its artifacts
    and its report together or not at all.

    Fits run on the build's runner (`pipeline.parallel`): here, in `--jobs` worker processes, or on the
    Dask cluster of --dask-scheduler / --dask-local (reached before any data is loaded). BLAS threads
    follow --threads (oversubscribed, one least-squares fit ran many times slower); stage timings go to the report."""
    config.validate()
    paths = OutputPaths.for_build(config.out, config.report_dir)
    with (
        terminate_as_exit(),
        BuildOutputs(paths) as outputs,
        threadpool_limits(config.threads or None),
        fit_runner(config) as runner,
        active(runner),
    ):
        timings = Timings(runner)
        prep, search, gbdt_search, choice, cv, temporal, holdout, fitted = run_stages(config, runner, timings)
        with timings.stage("export"):
            verification = export(prep.data_dir, prep.validation, build_artifacts(prep, cv, fitted), outputs)
        with timings.stage("write_build_report"):
            extra = {"temporal": temporal, "gbdt_search": gbdt_search} | ({"tsmixer_search": search} if search else {})
            report_path = write_build_report(prep, outputs, choice, holdout, verification, extra)
        add_timings(outputs.staged.report / "report.json", timings.table())
        outputs.commit()
    summary = data_summary(prep) | {"artifacts": paths.artifacts, "timings": timings.table()}
    return BuildResult(config.out, report_path, holdout.models, verification, summary, paths.artifacts, search)


def fit_runner(config: BuildConfig) -> contextlib.AbstractContextManager[Runner]:
    """Where the build's fits run: the Dask cluster the options name, else `--jobs` processes here."""
    if config.dask_scheduler is not None or config.dask_local is not None:
        return dask_runner(config.dask_scheduler, config.dask_local)
    return local_runner(config.jobs, config.threads, config.spill_dir)


def run_stages(config: BuildConfig, runner: Runner, timings: Timings) -> tuple:
    """The build's stages up to the refit, each timed; the binned datasets dropped after the CV, the
    holdout and the refit."""
    with timings.stage("prepare"):
        prep = prepare(config, runner)
    with timings.stage("search_tsmixer"):
        search = search_tsmixer(prep)
    with timings.stage("choose_features"):
        choice = choose_features(prep)
    with timings.stage("check_stability"):
        temporal, stable = check_stability(prep, choice)
    with timings.stage("search_gbdt"):
        prep, searched, gbdt_search, others = search_gbdt(prep, choice)
    with timings.stage("cross_validate"):
        cv = cross_validate(prep, choice, searched, temporal["flagged"], others)
        prep = replace(stable, members=prep.members)
        prep.bins.clear()
    with timings.stage("score_holdout"):
        started = train_holdout(prep, choice, cv)
        # Beside the refit's fits this process takes the threads of one of them (`pipeline.plan`).
        with threadpool_limits(runner.threads if runner.concurrent else None), runner.occupy():
            holdout = score_holdout(prep, cv, search, started.holdout_pipeline)
    with timings.stage("refit"):
        fitted = refit(holdout, started)
        prep.bins.clear()
    bins = prep.bins
    logger.info("LightGBM datasets: %d binned in %.0f s, %d fits reused one", bins.binned, bins.seconds, bins.reused)
    return prep, search, gbdt_search, choice, cv, temporal, holdout, fitted


def format_result(result: BuildResult) -> str:
    return "\n".join(
        [
            summary_table(result.models),
            *(["", search_table(result.search)] if result.search else []),
            "",
            result.verification.summary(),
            f"report: {result.report_path}",
            f"refresh artifacts: {result.artifacts_path}",
        ]
    )
