"""Which feature pipeline the LightGBM members read, chosen on the CV with a quick LightGBM probe, and
which features are unstable over the training eras. Only training eras are looked at."""

from __future__ import annotations

import logging

import pandas as pd

from pipeline import data as nd
from pipeline.analysis import feature_era_corr, feature_stability
from pipeline.config import BuildConfig
from pipeline.evaluate import cv_lgbm
from pipeline.features import RAW_FEATURES, FeaturePipeline
from pipeline.metrics import paired_difference, summarize
from pipeline.models.lgbm import LGBMModel
from pipeline.presets import PROBE

logger = logging.getLogger(__name__)

# Feature stability is measured on at most about this many training eras, evenly spaced.
TEMPORAL_ERAS = 120


def probe_cv(
    frame: nd.EraFrame, folds: list, pipelines: list[FeaturePipeline], config: BuildConfig, label: str
) -> pd.Series:
    """Per-era CV CORR of the quick LightGBM probe on the features of the fold `pipelines`;
    only differences between probes matter."""
    probe = LGBMModel(
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


# Whole configurations of the feature pipeline, simplest first (each a variant of one fit per fold).
PIPELINE_CONFIGS: dict[str, dict] = {
    "raw features": dict(RAW_FEATURES),
    "raw features, missing as NaN": RAW_FEATURES | {"missing": "nan"},
    "cluster means": RAW_FEATURES | {"clusters": True},
    "cluster means, missing as NaN": RAW_FEATURES | {"missing": "nan", "clusters": True},
    "cluster means and group statistics": RAW_FEATURES | {"clusters": True, "group_stats": True},
    "all transforms": {"missing": "keep", "clusters": True, "group_stats": True, "mixing": True},
    "all transforms, missing as NaN": {"missing": "nan", "clusters": True, "group_stats": True, "mixing": True},
}
ALL_TRANSFORMS = "all transforms"


def simplest_within_noise(scores: dict[str, pd.Series]) -> tuple[str, dict]:
    """The first (simplest) candidate, unless the best one beats it by more than the standard error of
    their paired per-era difference; returns it and that comparison."""
    simplest = next(iter(scores))
    best = max(scores, key=lambda label: scores[label].mean())
    mean, se = paired_difference(scores[best], scores[simplest])
    chosen = best if best != simplest and mean > se else simplest
    return chosen, {"best": best, "simplest": simplest, "difference": mean, "standard_error": se}


def choose_feature_pipeline(
    frame: nd.EraFrame, folds: list, groups: dict[str, str], config: BuildConfig, mixer_targets: list[str]
) -> tuple[list[FeaturePipeline], dict, dict]:
    """The feature pipeline, chosen whole: every configuration of `PIPELINE_CONFIGS` scored by the probe's
    CV, and the simplest kept unless another beats it by more than its standard error (a leave-one-out
    ablation around all transforms cannot find a simpler best). Returns the chosen fold pipelines,
    their settings and the table."""
    full = {
        "missing": "keep",
        "clusters": True,
        "group_stats": True,
        "mixing": True,
        "targets": mixer_targets,
        "seed": config.seed,
    }
    fitted = fold_pipelines(frame, folds, groups, full)
    scores = {
        label: probe_cv(frame, folds, [p.variant(**changes) for p in fitted], config, label)
        for label, changes in PIPELINE_CONFIGS.items()
    }
    label, comparison = simplest_within_noise(scores)
    chosen = {key: PIPELINE_CONFIGS[label][key] for key in ("missing", "clusters", "group_stats", "mixing")}
    logger.info(
        "feature pipeline: probe CV CORR %s; chosen %r (%s)",
        {k: round(float(v.mean()), 4) for k, v in scores.items()},
        label,
        chosen,
    )
    report = {
        "ablation": {label: summarize(per_era) for label, per_era in scores.items()},
        "ablation_model": f"LightGBM probe: {PROBE['params']}, trees chosen on the CV",
        "configuration": label,
        "comparison": comparison,
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
