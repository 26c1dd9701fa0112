"""Weekly refresh (`build_model.py --init-model DIR`): continue the previous build's members on the
eras whose labels arrived since, instead of retraining from scratch, and measure what that is worth.

- LightGBM members keep every tree and grow `--refresh-trees` (a share of the trees the CV chose)
  more, fitted on the new eras only (`lgb.train(init_model=previous booster)`).
- Neural members (MLP, TSMixer-Ext) are fine-tuned from their weights on the new eras for
  `--refresh-epochs` epochs at a tenth of their learning rate, without early stopping (a week's eras
  leave none to hold out).
- The feature pipeline, blend weights and neutralization are kept: they were chosen on hundreds of
  out-of-fold eras, and the few new eras (seen in training, with no out-of-fold predictions) could
  only make those choices noisier. A full build re-chooses them.

The comparison holds out the newest `--refresh-test-eras` labelled eras and an embargo before them,
and scores on that span (a) the previous model as it is, (b) the previous model refreshed on the new
eras before the embargo, (c) a full retrain with the previous build's settings on every era before
the embargo. None of the three trains on the span; the shipped pickle is then refreshed on every new
labelled era.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from pipeline import data as nd
from pipeline.artifacts import (
    ArtifactError,
    Artifacts,
    SavedMember,
    era_fingerprints,
    labelled_eras,
    load_artifacts,
)
from pipeline.build import (
    BuildResult,
    export,
    load_data,
    preset_targets,
    write_outputs_report,
)
from pipeline.config import BuildConfig
from pipeline.features import SETTINGS, FeaturePipeline
from pipeline.members import RefreshSettings, predict_rows
from pipeline.metrics import per_era_corr, summarize
from pipeline.outputs import BuildOutputs, OutputPaths, terminate_as_exit
from pipeline.report import refresh_table
from pipeline.runtime import ensemble_scores
from pipeline.synthetic import default_data_dir

logger = logging.getLogger(__name__)

FINE_TUNE_LR_FACTOR = 0.1
SHOWN = 5


def span(eras: Sequence[str]) -> list:
    """[first, last, count] of a sorted list of eras."""
    return [eras[0], eras[-1], len(eras)]


def _listing(names: Sequence[str]) -> str:
    return ", ".join(names[:SHOWN]) + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


def check_options(previous: Artifacts, config: BuildConfig, requested: list[str]) -> None:
    """The refresh must ask for what the previous build was asked for: same preset, target and feature set."""
    where = f"--init-model {config.init_model}"
    problems = [
        f"{option} {getattr(config, key)!r} where the previous build had {previous.settings[key]!r}"
        for key, option in (("preset", "--preset"), ("target", "--target"))
        if getattr(config, key) != previous.settings[key]
    ]
    if requested != previous.requested_features:
        before = set(previous.requested_features)
        missing = [f for f in previous.requested_features if f not in set(requested)]
        extra = [f for f in requested if f not in before]
        detail = (
            f"{len(missing)} of the previous model's features are not in it ({_listing(missing)}), "
            f"{len(extra)} of its features are new ({_listing(extra)})"
            if missing or extra
            else "the same names in another order"
        )
        problems.append(
            f"the features (--feature-set {config.feature_set!r}{' / --features' if config.features else ''}) resolve "
            "to "
            f"{len(requested)} names where the previous model had {len(previous.requested_features)}: {detail}"
        )
    if problems:
        raise ArtifactError(
            f"{where} does not match this refresh: {'; '.join(problems)}. Refresh with the previous build's options, "
            "or run a full build without --init-model"
        )


def check_history(previous: Artifacts, frames: Sequence[nd.EraFrame], data_dir: Path) -> None:
    """The eras the previous model was trained on must still be in the data, row for row."""
    current = era_fingerprints(frames, previous.eras)
    missing = [e for e in previous.eras if e not in current]
    changed = [e for e in previous.eras if e in current and current[e] != previous.eras[e]]
    if missing or changed:
        parts = ([f"{len(missing)} of them are missing or unlabelled ({_listing(missing)})"] if missing else []) + (
            [f"{len(changed)} have other rows or ids ({_listing(changed)})"] if changed else []
        )
        raise ArtifactError(
            f"{data_dir} is not the data the previous model (--init-model, {len(previous.eras)} eras through "
            f"{previous.last_era}) was trained on: {'; '.join(parts)}. Run a full build without --init-model"
        )


def refresh_settings(config: BuildConfig) -> RefreshSettings:
    return RefreshSettings(trees=config.refresh_trees, epochs=config.refresh_epochs, lr_factor=FINE_TUNE_LR_FACTOR)


def continue_members(
    members: Sequence[SavedMember], frames: Sequence[nd.EraFrame], allowed: Sequence[str], config: BuildConfig
) -> tuple[list[SavedMember], dict[str, dict[str, Any]]]:
    """Copies of `members` trained further on their new eras within `allowed`: the eras after each
    member's last one where its own target is resolved (a 60-day target resolves later). Returns the
    members and what was done to each."""
    allowed_set = set(allowed)
    refreshed, steps = [], {}
    for saved in members:
        member = copy.deepcopy(saved.member)
        eras = [e for e in labelled_eras(frames, member.train_target) if e > saved.last_era and e in allowed_set]
        if not eras:
            steps[member.name] = {"skipped": f"no new era with {member.train_target} resolved"}
            refreshed.append(replace(saved, member=member))
            continue
        parts = [(frame, [e for e in eras if e in set(frame.era_order)]) for frame in frames]
        parts = [(frame, part) for frame, part in parts if part]
        steps[member.name] = member.continue_training(parts, refresh_settings(config)) | {"eras": span(eras)}
        refreshed.append(replace(saved, member=member, last_era=eras[-1]))
        logger.info(
            "%s: refreshed on %d eras %s..%s: %s", member.name, len(eras), eras[0], eras[-1], steps[member.name]
        )
    return refreshed, steps


def retrain(
    previous: Artifacts, frames: Sequence[nd.EraFrame], eras: Sequence[str], config: BuildConfig
) -> list[SavedMember]:
    """The previous build's members trained from scratch on `eras`, with its settings (the CV's trees,
    its feature pipeline settings, refitted on those eras): a full build without a new CV."""
    wanted = set(eras)
    parts = [f.subset([e for e in f.era_order if e in wanted]) for f in frames if wanted & set(f.era_order)]
    pipeline = FeaturePipeline(previous.pipeline.groups, **{k: getattr(previous.pipeline, k) for k in SETTINGS})
    pipeline.fit([(f, f.era_order) for f in parts])
    retrained = []
    for saved in previous.members:
        member = saved.member.untrained(config.threads, config.torch_processes)
        member.fit(parts, pipeline, "full retrain")
        retrained.append(SavedMember(member, saved.weight, max(eras)))
    return retrained


def compare(
    previous: Artifacts, frames: Sequence[nd.EraFrame], eras: Sequence[str], embargo: int, config: BuildConfig
) -> dict[str, Any]:
    """Per-era CORR of the previous, refreshed and fully retrained models on the newest labelled eras,
    which none of them trains on; `{"skipped": why}` when the new eras are too few for that."""
    n_test = config.refresh_test_eras
    test, fit_eras = list(eras[-n_test:]), list(eras[: max(0, len(eras) - n_test - embargo)])
    if not fit_eras or fit_eras[-1] <= previous.last_era:
        new = [e for e in eras if e > previous.last_era]
        reason = (
            f"needs at least {n_test + embargo + 1} new labelled eras after {previous.last_era} ({n_test} held out "
            f"(--refresh-test-eras), an embargo of {embargo} before them and one to refresh on); the data has "
            f"{len(new)}"
        )
        logger.warning("comparison skipped: %s", reason)
        return {"skipped": reason}
    logger.info(
        "comparison: held-out eras %s..%s; previous model trained through %s; refreshed and retrained through %s "
        "(embargo %d)",
        test[0],
        test[-1],
        previous.last_era,
        fit_eras[-1],
        embargo,
    )
    rows = [(frame, frame.select_eras(test)) for frame in frames]
    x = np.concatenate([frame.features[r] for frame, r in rows])
    test_eras = np.concatenate([frame.eras[r] for frame, r in rows])
    y = np.concatenate([frame.targets[config.target].to_numpy()[r] for frame, r in rows])
    candidates = {
        "previous": list(previous.members),
        "refreshed": continue_members(previous.members, frames, fit_eras, config)[0],
        "full_retrain": retrain(previous, frames, fit_eras, config),
    }
    models, members = {}, {}
    for label, saved in candidates.items():
        scores = np.column_stack([np.concatenate([predict_rows(m.member, f, r) for f, r in rows]) for m in saved])
        for member, column in zip(saved, scores.T, strict=True):
            members.setdefault(member.member.name, {})[label] = summarize(per_era_corr(column, y, test_eras))
        weights = np.array([m.weight for m in saved])
        columns = nd.feature_columns(previous.feature_names, previous.neutralizers)
        blended = ensemble_scores(scores, weights, x, test_eras, previous.neutralization, columns)
        per_era = per_era_corr(blended, y, test_eras)
        models[label] = {"validation": summarize(per_era), "validation_per_era": per_era}
    return {
        "test_eras": span(test),
        "embargo": embargo,
        "previous_trained_through": previous.last_era,
        "trained_through": fit_eras[-1],
        "models": models,
        "members": members,
    }


def refresh(config: BuildConfig) -> BuildResult:
    """Continue the model in `config.init_model` on the new labelled eras of the data; write a verified
    pickle, new artifacts and a report comparing it with the previous model and a full retrain, all
    three replacing what `--out` held together (`BuildOutputs`)."""
    if config.init_model is None:
        raise ValueError("a refresh needs --init-model DIR (the <out>_artifacts directory of a previous build)")
    config.validate()
    paths = OutputPaths.for_build(config.out, config.report_dir)
    with terminate_as_exit(), BuildOutputs(paths) as outputs, threadpool_limits(config.threads or None):
        result = _refresh(config, outputs)
        outputs.commit()
    return result


def load_new_data(
    previous: Artifacts, config: BuildConfig, data_dir: Path
) -> tuple[list[str], list[nd.EraFrame], list[str], list[str]]:
    """The data of the refresh, checked against the previous model: features, the two splits, every
    labelled era and the new ones."""
    check_options(previous, config, config.features or nd.resolve_features(data_dir, config.feature_set))
    _, targets, _ = preset_targets(config, data_dir)
    features, train, validation = load_data(replace(config, features=previous.feature_names), data_dir, targets)
    frames = [train, validation]
    absent = [m.member.train_target for m in previous.members if m.member.train_target not in train.targets.columns]
    if absent:
        raise ArtifactError(f"{data_dir}: the previous model's members train on {absent}, which train.parquet lacks")
    check_history(previous, frames, data_dir)
    eras = sorted(set(train.era_order) | set(validation.era_order))
    new = [e for e in eras if e > previous.last_era]
    if not new:
        raise ValueError(
            f"no new labelled eras in {data_dir}: the previous model (--init-model {config.init_model}) was trained "
            f"through era {previous.last_era}, the data's newest labelled era is {eras[-1]}. Download the new data "
            "first; an era's targets are published about four weeks after it is live"
        )
    return features, frames, eras, new


def _refresh(config: BuildConfig, outputs: BuildOutputs) -> BuildResult:
    previous = load_artifacts(config.init_model, config.threads)
    data_dir = Path(config.data_dir) if config.data_dir is not None else default_data_dir()
    features, frames, eras, new = load_new_data(previous, config, data_dir)
    embargo = previous.embargo if config.embargo is None else config.embargo
    logger.info(
        "refresh of %s (trained through %s) on %d new eras %s..%s",
        config.init_model,
        previous.last_era,
        len(new),
        new[0],
        new[-1],
    )
    comparison = compare(previous, frames, eras, embargo, config)
    members, steps = continue_members(previous.members, frames, eras, config)
    record = {"init_model": config.init_model, "data_dir": data_dir, "new_eras": span(new), "members": steps}
    artifacts = replace(
        previous,
        members=members,
        eras=previous.eras | era_fingerprints(frames, new),
        history=previous.history + [record],
    )
    verification = export(data_dir, frames[1], artifacts, outputs)
    refresh_report = {
        "init_model": config.init_model,
        "previous_trained_through": previous.last_era,
        "new_eras": span(new),
        "members": steps,
        "kept": "the previous build's feature pipeline, blend weights and neutralization",
        "weights": {m.member.name: m.weight for m in members},
        "comparison": {k: v for k, v in comparison.items() if k != "models"},
    }
    summary = {
        "data_dir": data_dir,
        "features": len(features),
        "train": {"rows": len(frames[0]), "eras": len(frames[0].era_order)},
        "validation": {"rows": len(frames[1]), "eras": len(frames[1].era_order)},
        "embargo": embargo,
        "pickle": f"the previous model refreshed on every new labelled era ({new[0]}..{new[-1]})",
    }
    models = comparison.get("models", {})
    sections = {"models": models, "refresh": refresh_report, "data": summary}
    report_path = write_outputs_report(outputs, config, embargo, features, verification, sections)
    summary |= {"artifacts": outputs.paths.artifacts, "refresh": refresh_report}
    return BuildResult(config.out, report_path, models, verification, summary, outputs.paths.artifacts)


def format_refresh(result: BuildResult) -> str:
    """What a refresh prints: what each member got, the comparison, the verification, where files went."""
    return "\n".join(
        [
            refresh_table(result.summary["refresh"], result.models),
            "",
            result.verification.summary(),
            f"report: {result.report_path}",
            f"refresh artifacts: {result.artifacts_path}",
        ]
    )
