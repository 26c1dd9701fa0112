"""--jobs: fits as spawned worker processes that map the int8 matrices and share binned datasets, with
the same results as one process; the stages' timings in the report."""

from __future__ import annotations

import contextlib
import json
import pickle
from dataclasses import replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest
from threadpoolctl import threadpool_limits

from pipeline import build as build_module
from pipeline import data as nd
from pipeline import parallel
from pipeline.binning import DatasetCache
from pipeline.build import BuildConfig, FeatureChoice, build, cross_validate, prepare
from pipeline.cli import main
from pipeline.feature_choice import fold_pipelines
from pipeline.features import FeaturePipeline
from pipeline.members.benchmark import predict_rows
from pipeline.models.lgbm import EXAMPLE_PARAMS, LGBMModel
from pipeline.parallel import (
    FileFrames,
    Fit,
    FitPlan,
    InProcess,
    active,
    fit_members,
    local_runner,
    mapped_file,
    opened,
    run_plan,
    start_fits,
    task_payload,
    train_fit,
)
from pipeline.resources import ThreadShare, threads_per_job
from pipeline.searches import search_gbdt
from pipeline.weighting import EraWeighting
from tests.recording import Deferred, Recording

SETTINGS = {"missing": "nan", "clusters": True, "group_stats": True, "mixing": False}


def stage_results(tiny_world: Path, jobs: int) -> tuple[dict, dict, dict]:
    """The demo preset's CV (LightGBM members, one weighted by recency, one era-boosted, the benchmark member and
    the chained neural members) and holdout predictions."""
    config = BuildConfig(data_dir=tiny_world, num_boost_round=30, threads=2, cv_folds=2, jobs=jobs)
    recording = contextlib.nullcontext(Recording()) if jobs == 1 else None
    with recording or local_runner(config.jobs, config.threads, None) as runner, active(runner):
        prep = prepare(config, runner)
        weighted = next(member for member in prep.members if member.name == "lgbm_gbdt")
        weighted.weighting = EraWeighting(half_life=0.3)
        boosted = next(member for member in prep.members if member.name == "lgbm_aux20")
        boosted.weighting = EraWeighting(boost=2.0)
        choice = FeatureChoice(fold_pipelines(prep.train, prep.folds, prep.groups, SETTINGS), SETTINGS, {})
        cv = cross_validate(prep, choice, {}, [])
        fit_members(prep.members, [prep.train], choice.fold_pipelines[-1], "holdout")
        rows = np.arange(len(prep.validation))
        predictions = {member.name: predict_rows(member, prep.validation, rows) for member in prep.members}
        binning = {"binned": prep.bins.binned, "reused": prep.bins.reused, "peak": runner.take_peak_mb()}
        binning["order"] = runner.submitted if jobs == 1 else []
    return cv.results, predictions, binning


def test_two_jobs_give_the_cv_and_predictions_of_one(tiny_world: Path) -> None:
    one, predicted_one, binned_one = stage_results(tiny_world, 1)
    two, predicted_two, binned_two = stage_results(tiny_world, 2)
    assert {"lgbm_example", "lgbm_gbdt", "lgbm_aux20", "mlp", "tsmixer_ext"} <= set(one)
    for name, result in one.items():
        pd.testing.assert_series_equal(two[name].per_era, result.per_era, check_exact=True, obj=name)
        assert two[name].chosen == result.chosen, name
        assert np.array_equal(predicted_two[name], predicted_one[name]), name
    assert binned_two["peak"] > 0 and binned_one["peak"] == 0, "two jobs trained in workers, one job here"
    neural = ["member_cv(mlp)", "member_cv(tsmixer_ext)"]
    assert binned_one["order"][:2] == neural, "the neural members' whole CVs start before the LightGBM fits"
    # Members on the same view and rows share one binned dataset, in workers as in one process.
    assert binned_two["binned"] == binned_one["binned"] > 0 and binned_two["reused"] == binned_one["reused"]


def test_the_search_queues_the_other_members_cv_behind_its_first_round(tiny_world: Path) -> None:
    """On a runner whose fits run elsewhere, the CV of the members no search touches is submitted once the
    search's first round is, before its second (so that its fits fill the slots the rounds leave idle),
    and gives the CV that runs after the search on one process."""
    results, events = {}, []
    for runner in (InProcess(), Deferred(events=events)):
        config = BuildConfig(data_dir=tiny_world, num_boost_round=20, threads=2, cv_folds=2, gbdt_search_trials=3)
        with active(runner):
            prep = prepare(config, runner)
            choice = FeatureChoice(fold_pipelines(prep.train, prep.folds, prep.groups, SETTINGS), SETTINGS, {})
            prep, searched, _, others = search_gbdt(prep, choice)
            assert (others is not None) == runner.concurrent, "started early only where fits run elsewhere"
            results[runner.concurrent] = cross_validate(prep, choice, searched, [], others).results
    assert set(results[True]) == set(results[False]) >= {"lgbm_example", "lgbm_aux20", "mlp", "tsmixer_ext"}
    for name, result in results[False].items():
        pd.testing.assert_series_equal(results[True][name].per_era, result.per_era, check_exact=True, obj=name)
        assert results[True][name].chosen == result.chosen, name
    trial = [event.startswith("lgbm_gbdt_") for event in events]
    second_round = trial.index(True, 3)
    assert trial[:3] == [True] * 3 and second_round > 3 and not any(trial[3:second_round]), events
    assert all(trial[second_round:]) and "member_cv(tsmixer_ext)" in events[3:second_round], events


def test_a_build_with_two_jobs_writes_the_pickle_of_one(tiny_world: Path, tmp_path: Path) -> None:
    live = pd.read_parquet(tiny_world / "live.parquet")
    predictions, reports = {}, {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}" / "model.pkl"
        options = ["--data-dir", str(tiny_world), "--out", str(out), "--preset", "example", "--trees", "30"]
        member = ["--member", "tests/ridge_member.py:RidgeMember"]
        assert main([*options, *member, "--cv-folds", "2", "--threads", "2", "--jobs", str(jobs)]) == 0
        predictions[jobs] = pd.read_pickle(out)(live)
        reports[jobs] = json.loads((out.parent / "model_report" / "report.json").read_text())
    pd.testing.assert_frame_equal(predictions[2], predictions[1], check_exact=True)
    assert reports[2]["models"]["ridge"]["cv"] == reports[1]["models"]["ridge"]["cv"], "a member of one's own, here"
    timings = reports[2]["timings"]
    assert timings["jobs"] == 2 and set(timings["stages"]) >= {"prepare", "cross_validate", "refit", "export"}
    assert timings["stages"]["cross_validate"]["worker_peak_rss_mb"] > 0
    assert all(stage["seconds"] >= 0 and stage["peak_rss_mb"] > 0 for stage in timings["stages"].values())
    assert abs(timings["total_seconds"] - sum(s["seconds"] for s in timings["stages"].values())) < 0.1


def test_the_refit_runs_beside_the_holdout_scores_and_changes_none_of_them(
    tiny_world: Path, tmp_path: Path, monkeypatch
) -> None:
    """With fits elsewhere the refit's start before the holdout is scored; the members must score
    with their holdout state until the refit is collected."""
    runner, scored = Deferred(), build_module.validation_figures

    def validation_figures(*args, **kwargs):
        runner.events.append("validation scores")
        return scored(*args, **kwargs)

    monkeypatch.setattr(build_module, "validation_figures", validation_figures)
    config = BuildConfig(data_dir=tiny_world, num_boost_round=30, cv_folds=2, threads=1, gbdt_search_trials=2)
    with monkeypatch.context() as patched:
        patched.setattr(build_module, "fit_runner", lambda config: contextlib.nullcontext(runner))
        beside = build(replace(config, out=tmp_path / "beside" / "model.pkl"))
    after = build(replace(config, out=tmp_path / "after" / "model.pkl"))
    refits = [k for k, event in enumerate(runner.events) if event.endswith(" refit")]
    assert refits and refits[0] < runner.events.index("validation scores")
    for name, figures in after.models.items():
        assert beside.models[name]["validation"] == figures["validation"], name
    live = pd.read_parquet(tiny_world / "live.parquet")
    pd.testing.assert_frame_equal(pd.read_pickle(beside.model_path)(live), pd.read_pickle(after.model_path)(live))


def test_a_started_fit_leaves_the_member_as_it_was_until_collected(tiny_world: Path) -> None:
    prep = prepare(BuildConfig(data_dir=tiny_world, num_boost_round=5, threads=1))
    member = next(m for m in prep.members if m.name == "lgbm_aux20")
    holdout, refit = (FeaturePipeline(prep.groups).fit([(f, f.era_order) for f in fs]) for fs in ([prep.train],) * 2)
    fit_members([member], [prep.train], holdout, "holdout")
    state = member.pipeline_, member.estimator.booster_
    with active(Deferred()):
        collect = start_fits([member], [prep.train, prep.validation], refit, "refit")
        assert member.pipeline_ is state[0] and member.estimator.booster_ is state[1], "scores as the holdout's"
        collect()
    assert member.pipeline_ is not state[0] and member.estimator.booster_ is not state[1]


def test_a_spilled_matrix_is_reopened_by_another_process(tmp_path: Path) -> None:
    matrix = nd.disk_matrix(tmp_path, (300, 7))
    matrix[:] = np.arange(2100).reshape(300, 7) % 5
    path, offset = mapped_file(matrix[100:])
    assert offset == 700
    reopened = np.memmap(path, dtype=np.int8, mode="r", offset=offset, shape=(200, 7))
    assert np.array_equal(reopened, matrix[100:])
    assert mapped_file(np.zeros((3, 3), dtype=np.int8)) is None, "anonymous memory is no file"


def test_tasks_send_frames_by_reference(tiny_world: Path, tmp_path: Path) -> None:
    features = nd.resolve_features(tiny_world, "all")
    frame = nd.load_split(tiny_world / "train.parquet", features, data_type="train", spill_dir=tmp_path)
    frames = FileFrames(tmp_path)
    payload = task_payload(frames.share, len, (frame, frame))
    assert len(payload) < frame.features.nbytes / 10, "without its matrix"
    assert len(frames.refs) == 1 and not list(tmp_path.glob("*.int8")), "shared once, its own file mapped"
    function, (first, second) = pickle.loads(payload)
    assert function is len and first is second is opened(frames.share(frame))
    assert np.array_equal(first.features, frame.features) and list(first.ids) == list(frame.ids)
    pd.testing.assert_frame_equal(first.targets, frame.targets)
    in_memory = nd.load_split(tiny_world / "train.parquet", features, data_type="train")
    frames.share(in_memory)
    assert len(list(tmp_path.glob("*.int8"))) == 1, "a matrix in anonymous memory is written to the scratch directory"


def test_a_fit_that_fails_in_a_worker_raises_here(tiny_world: Path) -> None:
    features = nd.resolve_features(tiny_world, "all")
    train = nd.load_split(tiny_world / "train.parquet", features, data_type="train")
    bad = Fit("bad", None, [(train, train.era_order)], 1, nd.MAIN_TARGET, features, {"objective": "nonsense"}, 3)
    with local_runner(2, 2, None) as runner:
        handle = runner.submit_fit(bad, runner.cache(0))
        with pytest.raises(lgb.basic.LightGBMError, match="nonsense"):
            handle.result()


def test_spilled_datasets_train_as_in_memory_ones(tiny_world: Path, tmp_path: Path) -> None:
    """A binary dataset loads with the parameters it was built with and gives the same trees."""
    features = nd.resolve_features(tiny_world, "all")
    train = nd.load_split(tiny_world / "train.parquet", features, data_type="train")
    model = LGBMModel(EXAMPLE_PARAMS | {"learning_rate": 0.1}, 20, seed=1, num_threads=1)
    texts = []
    for spill in (None, tmp_path):
        fit = Fit("f", None, [(train, train.era_order)], 2, nd.MAIN_TARGET, features, model.lgb_params(), 20)
        cache = DatasetCache(seed=0, spill_dir=spill)
        (fitted,) = run_plan(FitPlan([fit], list, cache), InProcess())
        texts.append(fitted.booster.model_to_string().split("parameters:")[0])
    assert texts[0] == texts[1] and list(tmp_path.glob("*.bin")), "written to and read from the spill directory"


class Draining:
    """The workers' count of running tasks as a fit sees it: two for its first trees, then one (the
    stage's other fit has ended)."""

    def __init__(self) -> None:
        self.reads = 0

    @property
    def value(self) -> int:
        self.reads += 1
        return 2 if self.reads <= 5 else 1

    def get_lock(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


def test_a_fit_whose_threads_grow_between_trees_trains_the_trees_of_one_thread(tiny_world: Path, monkeypatch) -> None:
    features = nd.resolve_features(tiny_world, "all")
    train = nd.load_split(tiny_world / "train.parquet", features, data_type="train")
    params = LGBMModel(EXAMPLE_PARAMS | {"learning_rate": 0.1}, 30, seed=1, num_threads=1).lgb_params()
    fit = Fit("f", None, [(train, train.era_order)], 1, nd.MAIN_TARGET, features, params, 30)
    dataset = DatasetCache(seed=0).dataset(None, fit.parts, 1, fit.target, features)
    assert params["feature_fraction"] < 1, "feature fractions, which LightGBM's reset_parameter would redraw"
    alone, _ = train_fit(fit, dataset, threads=1)
    share = ThreadShare(Draining(), cores=2, threads=1)
    monkeypatch.setattr(parallel, "_SHARE", share)
    with threadpool_limits(1, user_api="openmp"):
        grown, _ = train_fit(fit, dataset, threads=1)
    assert share.running.reads > 5 and share.most == 2, "one thread for the first trees, then two"
    assert grown.model_to_string().split("parameters:")[0] == alone.model_to_string().split("parameters:")[0]


def test_a_stage_s_last_fit_grows_onto_an_idle_worker_s_cores(tiny_world: Path) -> None:
    features = nd.resolve_features(tiny_world, "all")
    train = nd.load_split(tiny_world / "train.parquet", features, data_type="train")
    params = LGBMModel(EXAMPLE_PARAMS | {"learning_rate": 0.1}, 20, seed=1, num_threads=1).lgb_params()
    fits = [Fit(f"f{k}", None, [(train, train.era_order)], 1, nd.MAIN_TARGET, features, params, 20) for k in (1, 2)]
    with local_runner(2, 2, None) as runner:
        alone = runner.submit_fit(fits[0], runner.cache(0)).result()
        side_by_side = [runner.submit_fit(fit, runner.cache(0)) for fit in fits]
        with runner.occupy():
            held = runner.submit_fit(fits[0], runner.cache(0)).result()
        side_by_side = [handle.result() for handle in side_by_side]
    assert alone.threads == 2, "alone on the workers, a fit takes both cores"
    assert held.threads == 1, "this process's own work holds the other worker's share"
    assert all(fitted.threads >= 1 for fitted in side_by_side)
    trees = {fitted.booster.model_to_string().split("parameters:")[0] for fitted in [alone, held, *side_by_side]}
    assert len(trees) == 1, "the same trees on one thread, on two, or on one and then two"


def test_options_of_jobs_that_cannot_work_are_named(tmp_path: Path) -> None:
    absent = tmp_path / "none"
    with pytest.raises(ValueError, match="--jobs must be at least 1 process, got 0"):
        build(BuildConfig(data_dir=absent, jobs=0))
    with pytest.raises(ValueError, match="--jobs runs fits as processes on this machine .* give one"):
        build(BuildConfig(data_dir=absent, jobs=2, dask_local=2))
    with pytest.raises(ValueError, match="--time-budget must be a positive number of hours, got -1"):
        build(BuildConfig(data_dir=absent, time_budget=-1))
    with pytest.raises(ValueError, match=r"--tree-scale must be within \(0, 1\]"):
        build(BuildConfig(data_dir=absent, tree_scale=0))
    assert threads_per_job(2, 2) == 1 and threads_per_job(16, 4) == 4 and threads_per_job(1, 3) == 1
