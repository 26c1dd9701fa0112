"""The build behind `build_model.py`: data -> model -> validation figures -> verified pickle -> report."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from pipeline import data as nd
from pipeline.analysis import (
    ROLLING_WINDOW,
    feature_era_corr,
    feature_stability,
    fold_table,
    gain_importance,
    permutation_by_group,
    rolling_corr,
    validation_figures,
)
from pipeline.artifacts import Artifacts, SavedMember, artifacts_dir_for, era_fingerprints, save_artifacts
from pipeline.blend import choose_neutralization, cross_fold_blend, fit_weights
from pipeline.cv import EraWalkForward, default_embargo, holdout_eras
from pipeline.distributed import DaskLGBMTrainer, dask_trainer
from pipeline.ensemble import (
    PRESETS,
    PROBE,
    LGBMSpec,
    MemberSpec,
    NeuralSpec,
    aux_targets,
    member_specs,
    member_targets,
    oof_matrix,
)
from pipeline.evaluate import CVResult, cv_lgbm
from pipeline.features import RAW_FEATURES, FeaturePipeline
from pipeline.metrics import summarize
from pipeline.models.lgbm import LGBMMember
from pipeline.report import search_table, summary_table, write_report
from pipeline.runtime import blend_ranks, ensemble_scores, make_predict
from pipeline.tuning import best_settings
from pipeline.verify import VerificationReport, write_verified_pickle

logger = logging.getLogger(__name__)

CACHE_ENV = "NUMERAI_PIPELINE_CACHE"
# Feature stability is measured on at most about this many training eras, evenly spaced.
TEMPORAL_ERAS = 120
COMPLETE_MARKER = ".complete"
# Forward-chained folds of the TSMixer-Ext search: each trial trains one network per fold.
SEARCH_FOLDS = 2


@dataclass
class BuildConfig:
    """Everything a build depends on; saved in the report so a build can be repeated."""

    data_dir: Path | None = None
    out: Path = Path("model.pkl")
    report_dir: Path | None = None
    feature_set: str = "all"
    features: list[str] | None = None
    target: str = nd.MAIN_TARGET
    preset: str = "demo"
    embargo: int | None = None
    cv_folds: int = 3
    cv_max_train_eras: int | None = None
    era_stride: int | None = None
    num_boost_round: int | None = None
    drop_unstable: bool = False
    refit: bool = True
    neutralization: float | None = None
    seed: int = 0
    threads: int = 0
    dask_scheduler: str | None = None
    dask_local: int | None = None
    torch_processes: int = 1
    spill_dir: Path | None = None
    # Hyperparameter search of the TSMixer-Ext member (0 trials: its preset settings, no search).
    tsmixer_search: int = 0
    tsmixer_search_budget: float = 3600.0
    # Weekly refresh (`pipeline.refresh`): continue the model saved in this artifacts directory.
    init_model: Path | None = None
    refresh_trees: float = 0.1
    refresh_epochs: int = 3
    refresh_test_eras: int = 4


@dataclass
class BuildResult:
    model_path: Path
    report_path: Path
    models: dict[str, dict[str, Any]]
    verification: VerificationReport
    summary: dict[str, Any] = field(default_factory=dict)
    artifacts_path: Path | None = None
    search: dict[str, Any] | None = None


def cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV, Path.home() / ".cache" / "numerai-pipeline")).expanduser()


def default_data_dir() -> Path:
    """The embedded default data: the default synthetic world, generated once and cached."""
    from pipeline import synthetic

    # Keyed by the generator's source, so a changed generator never reuses a stale world.
    version = synthetic.generator_digest()
    target = cache_root() / f"synthetic-default-{version}"
    if not (target / COMPLETE_MARKER).is_file():
        logger.info("generating the default synthetic Numerai world into %s (once)", target)
        synthetic.write_world(target, synthetic.DEFAULT_WORLD)
        (target / COMPLETE_MARKER).write_text("ok\n")
    return target


def live_path_for(data_dir: Path, scratch: Path, validation: nd.EraFrame) -> Path:
    """live.parquet when the data has one; else the newest validation era, shaped like a live file."""
    live = data_dir / "live.parquet"
    if live.is_file():
        return live
    rows = validation.select_eras([validation.era_order[-1]])
    frame = pd.DataFrame(validation.features[rows], columns=validation.feature_names)
    frame.index = pd.Index(validation.ids[rows], name=nd.ID_COL)
    frame.insert(0, nd.ERA_COL, validation.eras[rows])
    path = scratch / "live_standin.parquet"
    frame.to_parquet(path)
    logger.info("%s has no live.parquet; verifying on validation era %s instead", data_dir, validation.era_order[-1])
    return path


def pickle_state(features: list[str], members: list[tuple[MemberSpec, float]], neutralization: float) -> dict[str, Any]:
    """The plain data the predict closure holds: feature names, exported members, neutralization."""
    return {
        "feature_names": features,
        "members": [spec.export(weight) for spec, weight in members],
        "neutralization": neutralization,
    }


def write_pickle(state: dict[str, Any], out: Path, data_dir: Path, validation: nd.EraFrame) -> VerificationReport:
    """Write the predict closure over `state` to `out`, verified on the data's live file (or a stand-in)."""
    with tempfile.TemporaryDirectory() as scratch:
        live = live_path_for(data_dir, Path(scratch), validation)
        return write_verified_pickle(make_predict(state), out, live)


def report_dir_for(config: BuildConfig) -> Path:
    return Path(config.report_dir) if config.report_dir else config.out.with_name(config.out.stem + "_report")


def load_data(config: BuildConfig, data_dir: Path) -> tuple[list[str], nd.EraFrame, nd.EraFrame]:
    """Training rows with the targets the members learn; validation rows with every target."""
    features = config.features or nd.resolve_features(data_dir, config.feature_set)
    logger.info("data %s: %d features, target %r, preset %r", data_dir, len(features), config.target, config.preset)
    targets = nd.target_names(data_dir)
    if config.target not in targets:
        targets = [config.target] + targets
    train = nd.load_split(
        data_dir / "train.parquet",
        features,
        member_targets(config.preset, targets, config.target),
        data_type="train",
        spill_dir=config.spill_dir,
    )
    available = nd.parquet_columns(data_dir / "validation.parquet")
    validation = nd.load_split(
        data_dir / "validation.parquet",
        features,
        [config.target] + [t for t in targets if t != config.target and t in available],
        data_type="validation",
        spill_dir=config.spill_dir,
    )
    for split in (train, validation):
        logger.info(
            "%s: %d labelled rows in %d eras, %.0f MB int8%s (%d unlabelled or other rows left out)",
            split.path.name,
            len(split),
            len(split.era_order),
            split.features.nbytes / 2**20,
            f" in a file in {config.spill_dir}" if config.spill_dir else "",
            split.dropped_rows,
        )
    return features, train, validation


def member_features(spec: MemberSpec, features: list[str]) -> dict[str, str]:
    """How many of the build's raw features a member over a feature subset sees, for the report."""
    subset = spec.features if isinstance(spec, LGBMSpec) else None
    return {} if subset is None else {"raw_features": f"{len(subset)} of {len(features)}"}


def probe_cv(
    frame: nd.EraFrame, folds: list, pipelines: list[FeaturePipeline], config: BuildConfig, label: str
) -> pd.Series:
    """Per-era CV CORR of the quick LightGBM probe on the features of the fold `pipelines`;
    only differences between probes matter."""
    probe = LGBMMember(
        PROBE["params"],
        min(PROBE["rounds"], config.num_boost_round or PROBE["rounds"]),
        seed=config.seed,
        num_threads=config.threads,
    )
    return cv_lgbm(
        probe,
        frame,
        config.target,
        folds,
        config.era_stride or PROBE["era_stride"],
        f"probe {label}",
        pipelines=pipelines,
    ).per_era


def fold_pipelines(frame: nd.EraFrame, folds: list, groups: dict[str, str], settings: dict) -> list[FeaturePipeline]:
    """One feature pipeline per fold, fitted on that fold's training eras only."""
    return [FeaturePipeline(groups, **settings).fit([(frame, train_eras)]) for train_eras, _ in folds]


def choose_feature_pipeline(
    frame: nd.EraFrame, folds: list, groups: dict[str, str], config: BuildConfig, mixer_targets: list[str]
) -> tuple[list[FeaturePipeline], dict, dict]:
    """The missing-value policy and the transforms, each kept only if the probe's CV CORR is higher
    with it than without. Returns the chosen fold pipelines, their settings and the ablation table."""
    full = {
        "missing": "keep",
        "clusters": True,
        "group_stats": True,
        "mixing": True,
        "targets": mixer_targets,
        "seed": config.seed,
    }
    fitted = fold_pipelines(frame, folds, groups, full)
    variants = {
        "all transforms": {},
        "missing features as NaN": {"missing": "nan"},
        "without cluster means": {"clusters": False},
        "without group statistics": {"group_stats": False},
        "without group mixers": {"mixing": False},
        "raw features only": RAW_FEATURES,
    }
    scores = {
        label: probe_cv(frame, folds, [p.variant(**changes) for p in fitted], config, label)
        for label, changes in variants.items()
    }
    means = {label: per_era.mean() for label, per_era in scores.items()}
    base = means["all transforms"]
    chosen = {
        "missing": "nan" if means["missing features as NaN"] > base else "keep",
        "clusters": bool(means["without cluster means"] <= base),
        "group_stats": bool(means["without group statistics"] <= base),
        "mixing": bool(means["without group mixers"] <= base),
    }
    logger.info(
        "feature pipeline: probe CV CORR %s; chosen %s", {k: round(float(v), 4) for k, v in means.items()}, chosen
    )
    report = {
        "ablation": {label: summarize(per_era) for label, per_era in scores.items()},
        "ablation_model": f"LightGBM probe: {PROBE['params']}, trees chosen on the CV",
        "chosen": chosen,
    }
    return [p.variant(**chosen) for p in fitted], full | chosen, report


def temporal_analysis(
    train: nd.EraFrame, config: BuildConfig, folds: list, groups: dict[str, str], settings: dict
) -> tuple[dict, list[str]]:
    """Feature stability over training eras, and the CV CORR of a quick LightGBM probe with and
    without the flagged features (the difference is what matters, so the probe is small and its
    pipeline `settings` should leave out the costly group mixers)."""
    eras = train.era_order[:: max(1, len(train.era_order) // TEMPORAL_ERAS)]
    stability = feature_stability(feature_era_corr(train, train.select_eras(eras), config.target))
    flagged = list(stability.index[stability["flagged"]])
    kept = [f for f in train.feature_names if f not in set(flagged)]
    scores = {
        label: probe_cv(frame, folds, fold_pipelines(frame, folds, groups, settings), config, label)
        for label, frame in (("with", train), ("without_flagged", train.with_features(kept)))
    }
    report = {
        "features": stability.reset_index().to_dict(orient="records"),
        "flagged": flagged,
        "ablation": {label: summarize(per_era) for label, per_era in scores.items()},
        "ablation_model": f"LightGBM probe: {PROBE['params']}, trees chosen on the CV",
    }
    logger.info(
        "temporal: %d unstable features flagged; probe CV CORR %.4f with them, %.4f without",
        len(flagged),
        scores["with"].mean(),
        scores["without_flagged"].mean(),
    )
    return report, kept


def walk_forward_folds(
    eras: np.ndarray, n_splits: int, embargo: int, max_train_eras: int | None = None
) -> list[tuple[np.ndarray, np.ndarray]]:
    """CV folds over the newer half of the training eras, expanding (or rolling, with
    `max_train_eras`); fewer folds (logged) when eras are few."""
    min_train = max(1, len(eras) // 2)
    possible = max(1, min(n_splits, len(eras) - min_train - embargo))
    if possible < n_splits:
        logger.warning("only %d training eras: %d CV fold(s) instead of %d", len(eras), possible, n_splits)
    splitter = EraWalkForward(
        n_splits=possible, embargo=embargo, min_train_eras=min_train, max_train_eras=max_train_eras
    )
    return splitter.era_folds(eras)


def tsmixer_search(
    frame: nd.EraFrame, specs: list[MemberSpec], folds: list, embargo: int, config: BuildConfig
) -> dict[str, Any]:
    """--tsmixer-search: a bounded random search over TSMixer-Ext's `DEFAULT_SPACE`, each trial scored
    by the member's own CV on SEARCH_FOLDS forward-chained, embargoed folds over the training eras of
    the build's first CV fold. The build's CV then scores the chosen member only on later eras, so its
    figures (which set the blend weights) are not flattered by the choice. Sets the member to the best
    trial and returns the report's entry: the eras and folds searched and one row per trial."""
    from pipeline.models.tsmixer import DEFAULT_SPACE

    spec = next(s for s in specs if isinstance(s, NeuralSpec) and s.estimator.kind == "tsmixer")
    eras = folds[0][0]
    try:
        search_folds = walk_forward_folds(eras, SEARCH_FOLDS, embargo)
    except ValueError as err:
        raise ValueError(
            f"--tsmixer-search searches the {len(eras)} training eras before the first CV fold's scored eras: {err}"
        ) from err
    logger.info(
        "%s: searching up to %d trials within %.0f s on eras %s..%s (%d folds, embargo %d)",
        spec.name,
        config.tsmixer_search,
        config.tsmixer_search_budget,
        eras[0],
        eras[-1],
        len(search_folds),
        embargo,
    )
    table = spec.tune(
        frame,
        search_folds,
        config.target,
        DEFAULT_SPACE,
        config.tsmixer_search,
        config.tsmixer_search_budget,
        config.seed,
    )
    chosen = best_settings(table, DEFAULT_SPACE)
    logger.info(
        "%s: search ran %d trials in %.0f s; chosen %s (CV CORR %.4f)",
        spec.name,
        len(table),
        table["seconds"].sum(),
        chosen,
        table["cv_corr_mean"].iloc[0],
    )
    return {
        "member": spec.name,
        "eras": [str(eras[0]), str(eras[-1]), len(eras)],
        "folds": fold_table(search_folds),
        "space": DEFAULT_SPACE,
        "trials_asked": config.tsmixer_search,
        "budget_s": config.tsmixer_search_budget,
        "trials": table.to_dict(orient="records"),
        "chosen": chosen,
    }


def build(config: BuildConfig) -> BuildResult:
    """CV, held-out validation, blend, refit, export and verify; raises before writing anything unverified.

    With --dask-scheduler or --dask-local the LightGBM members' holdout and refit training runs on
    that Dask cluster, open for the whole build (reached before any data is loaded). BLAS threads
    follow --threads too: oversubscribed BLAS made one least-squares fit 13x slower here."""
    if config.torch_processes < 1:
        raise ValueError(f"--torch-processes must be at least 1, got {config.torch_processes}")
    if config.era_stride is not None and config.era_stride < 1:
        raise ValueError(f"--era-stride must be at least 1, got {config.era_stride}")
    if config.neutralization is not None and not 0 <= config.neutralization <= 1:
        raise ValueError(f"--neutralization must be within 0..1, got {config.neutralization}")
    if config.spill_dir is not None and not Path(config.spill_dir).is_dir():
        raise ValueError(
            f"--spill-dir {config.spill_dir} is not a directory; expected one with room for the int8 feature matrix"
        )
    if config.tsmixer_search < 0:
        raise ValueError(
            f"--tsmixer-search must be a number of trials, at least 0 (0: no search), got {config.tsmixer_search}"
        )
    if not config.tsmixer_search_budget > 0:
        raise ValueError(
            f"--tsmixer-search-budget must be a positive number of seconds, got {config.tsmixer_search_budget}"
        )
    with_tsmixer = sorted(name for name, entries in PRESETS.items() if any(e.get("kind") == "tsmixer" for e in entries))
    if config.tsmixer_search and config.preset not in with_tsmixer:
        raise ValueError(
            f"--tsmixer-search needs a preset with a TSMixer-Ext member ({', '.join(with_tsmixer)}); preset "
            f"{config.preset!r} has none"
        )
    with threadpool_limits(config.threads or None), dask_trainer(config.dask_scheduler, config.dask_local) as trainer:
        return _build(config, trainer)


def _build(config: BuildConfig, trainer: DaskLGBMTrainer | None) -> BuildResult:
    data_dir = Path(config.data_dir) if config.data_dir is not None else default_data_dir()
    features, train, validation = load_data(config, data_dir)
    requested_features = list(features)
    groups = nd.feature_groups(data_dir, features)
    missing = train.missing_feature_eras()
    logger.info("missing-feature marker (all 2 in an era): %d feature-eras in train", int(missing.to_numpy().sum()))

    specs = member_specs(
        config.preset,
        train,
        config.target,
        config.num_boost_round,
        config.era_stride,
        config.seed,
        config.threads,
        feature_sets=nd.read_features_json(data_dir)["feature_sets"],
    )
    embargo = config.embargo if config.embargo is not None else default_embargo([s.train_target for s in specs])
    for spec in specs:
        if isinstance(spec, NeuralSpec):
            spec.embargo = embargo
            spec.processes = config.torch_processes
        elif trainer is not None:
            # Dask workers read raw parquet partitions, so cluster-trained members take raw features
            # (the CV too, so that it scores what is trained).
            spec.trainer, spec.engineered = trainer, False
    folds = walk_forward_folds(train.era_order, config.cv_folds, embargo, config.cv_max_train_eras)
    scored_eras = holdout_eras(train.era_order, validation.era_order, embargo)
    logger.info(
        "members: %s; %d CV folds, embargo %d eras",
        ", ".join(f"{s.name} ({s.train_target})" for s in specs),
        len(folds),
        embargo,
    )
    search = tsmixer_search(train, specs, folds, embargo, config) if config.tsmixer_search else None

    if any(isinstance(spec, LGBMSpec) and spec.engineered for spec in specs):
        mixer_targets = [config.target, *aux_targets(train, config.target, "_20")]
        pipelines, pipeline_settings, feature_report = choose_feature_pipeline(
            train, folds, groups, config, mixer_targets
        )
    else:
        pipeline_settings = RAW_FEATURES
        pipelines, feature_report = fold_pipelines(train, folds, groups, RAW_FEATURES), {"chosen": RAW_FEATURES}
    cv: dict[str, CVResult] = {}
    for spec in specs:
        cv[spec.name] = spec.cross_validate(train, folds, config.target, pipelines)
        logger.info("%s: CV chose %s, CV CORR %.4f", spec.name, cv[spec.name].chosen, cv[spec.name].per_era.mean())
    oof, scored = oof_matrix(cv)
    oof_eras, oof_y = train.eras[scored], train.targets[config.target].to_numpy()[scored]
    weights = fit_weights(oof, oof_y, oof_eras)
    proportion, neutral_table = choose_neutralization(
        blend_ranks(oof, weights, oof_eras), train.features[scored], oof_y, oof_eras
    )
    if config.neutralization is not None:
        logger.info("neutralization %.2f as asked (the CV preferred %.2f)", config.neutralization, proportion)
        proportion = config.neutralization
    blend_cv, _ = cross_fold_blend(oof, oof_y, oof_eras, [va for _, va in folds], train.features[scored], proportion)
    logger.info(
        "blend weights %s, neutralization %.2f",
        {name: round(float(w), 3) for name, w in zip(cv, weights, strict=False)},
        proportion,
    )

    temporal, kept = temporal_analysis(train, config, folds, groups, pipeline_settings | {"mixing": False})
    if config.drop_unstable:
        features = kept
        train, validation = train.with_features(kept), validation.with_features(kept)

    val_rows = validation.select_eras(scored_eras)
    benchmark_file = data_dir / "validation_benchmark_models.parquet"
    benchmarks = nd.load_benchmarks(benchmark_file, validation.ids) if benchmark_file.is_file() else None
    models: dict[str, dict[str, Any]] = {}
    val_scores = []
    holdout_pipeline = FeaturePipeline(groups, **pipeline_settings).fit([(train, train.era_order)])
    for spec in specs:
        spec.fit([train], holdout_pipeline, "holdout")
        scores = spec.predict(validation.features[val_rows], validation.eras[val_rows])
        val_scores.append(scores)
        figures = validation_figures(scores, validation, val_rows, config.target, benchmarks)
        result = cv[spec.name]
        models[spec.name] = {
            "cv": summarize(result.per_era),
            "cv_per_era": result.per_era,
            "chosen": result.chosen
            | {"target": spec.train_target, "era_stride": spec.era_stride}
            | member_features(spec, features)
            | ({"searched": search["chosen"]} if search and search["member"] == spec.name else {}),
            "cv_curve": result.curve,
            **figures,
        }

    val_eras = validation.eras[val_rows]
    # Members the blend gives no weight are left out of the pickle (and of its refit).
    shipped = [(spec, w) for spec, w in zip(specs, weights, strict=False) if w > 0]

    def ensemble_on(x: np.ndarray) -> np.ndarray:
        stacked = np.column_stack([spec.predict(x, val_eras) for spec, _ in shipped])
        return ensemble_scores(stacked, np.array([w for _, w in shipped]), x, val_eras, proportion)

    ensemble_val = ensemble_scores(
        np.column_stack(val_scores), weights, validation.features[val_rows], val_eras, proportion
    )
    models["ensemble"] = {
        "cv": summarize(blend_cv),
        "cv_per_era": blend_cv,
        "chosen": {
            "weights": dict(zip(cv, weights, strict=False)),
            "neutralization": proportion,
            "neutralization_cv": neutral_table.to_dict(orient="index"),
        },
        **validation_figures(ensemble_val, validation, val_rows, config.target, benchmarks),
    }
    importance = gain_importance(next(g for spec in specs if (g := spec.gain()) is not None), groups)
    importance["permutation_by_group"] = permutation_by_group(
        ensemble_on, validation, val_rows, config.target, groups, seed=config.seed
    )

    final_pipeline, trained_on = holdout_pipeline, [train]
    if config.refit:
        logger.info(
            "refitting the blended members (%s) on all labelled eras (train and validation) with the CV's settings",
            ", ".join(spec.name for spec, _ in shipped),
        )
        final_pipeline = FeaturePipeline(groups, **pipeline_settings).fit(
            [(train, train.era_order), (validation, validation.era_order)]
        )
        trained_on = [train, validation]
        for spec, _ in shipped:
            spec.fit(trained_on, final_pipeline, "refit")
    verification = write_pickle(pickle_state(features, shipped, proportion), config.out, data_dir, validation)
    artifacts_path = save_artifacts(
        artifacts_dir_for(config.out),
        Artifacts(
            settings=asdict(config) | {"embargo": embargo},
            requested_features=requested_features,
            feature_names=features,
            pipeline=final_pipeline,
            members=[SavedMember.trained(spec, w, trained_on) for spec, w in shipped],
            neutralization=proportion,
            embargo=embargo,
            eras=era_fingerprints(trained_on, [e for frame in trained_on for e in frame.era_order]),
        ),
    )

    summary = {
        "data_dir": data_dir,
        "features": len(features),
        "train": {"rows": len(train), "eras": len(train.era_order), "rows_left_out": train.dropped_rows},
        "validation": {
            "rows": len(validation),
            "eras": len(validation.era_order),
            "rows_left_out": validation.dropped_rows,
            "scored_eras": [str(scored_eras[0]), str(scored_eras[-1]), len(scored_eras)],
        },
        "embargo": embargo,
        "missing_feature_eras_train": int(missing.to_numpy().sum()),
        "pickle": "refit on train and validation eras" if config.refit else "trained on train eras only",
        "artifacts": artifacts_path,
    }
    report_path = write_report(
        report_dir_for(config),
        {
            "models": models,
            "folds": fold_table(folds),
            "worst_eras": {name: figures.pop("worst_eras") for name, figures in models.items()},
            "rolling": {"window": ROLLING_WINDOW}
            | {
                name: rolling_corr(pd.concat([figures["cv_per_era"], figures["validation_per_era"]]))
                for name, figures in models.items()
            },
            "importance": importance,
            "feature_pipeline": feature_report,
            **({"tsmixer_search": search} if search else {}),
            "temporal": temporal,
            "data": summary,
            "settings": asdict(config) | {"features": len(features), "embargo": embargo},
            "feature_names": features,
            "verification": asdict(verification),
        },
    )
    return BuildResult(config.out, report_path, models, verification, summary, artifacts_path, search)


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
