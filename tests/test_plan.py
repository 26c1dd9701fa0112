"""The cost plan: from the build's own members and folds, the fits the build makes, a hypothetical size
and machine, --json, and --time-budget choosing smaller settings."""

from __future__ import annotations

import contextlib
import json
import logging
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from pipeline import budget as budget_module
from pipeline import build as build_module
from pipeline.budget import fit_budget
from pipeline.build import BuildConfig, build, prepare
from pipeline.calibration import BINNING_ROWS, Calibration, Size, View, repeated
from pipeline.cli import main
from pipeline.members.lgbm import scaled_trees
from pipeline.models.lgbm import BIN_SAMPLE_ROWS
from pipeline.parallel import InProcess
from pipeline.plan import PlanFor, chosen_among, make_plan
from pipeline.plan_choices import read_choices
from pipeline.resources import Timings
from pipeline.schedule import BLAS_PARALLEL, Task, makespan, rounds_makespan, speedup

OPTIONS = {"num_boost_round": 10, "threads": 1, "cv_folds": 2}


@pytest.fixture(scope="module")
def calibrated(tiny_world: Path) -> tuple:
    prep = prepare(BuildConfig(data_dir=tiny_world, **OPTIONS))
    return prep, Calibration(prep, 1.0)


def lightgbm_fits(plan) -> Counter:
    """The plan's LightGBM fits per stage that the runner runs one by one (the benchmark member's fits
    read the benchmark column and run whole)."""
    return Counter(
        {
            stage: sum(
                len(item.tasks)
                for item in plan.stage_items(stage)
                if item.work.endswith("trees") and not item.name.startswith("lgbm_benchmark")
            )
            for stage in plan.stages
        }
    )


def test_the_plan_counts_the_fits_the_build_makes(tiny_world: Path, tmp_path: Path, monkeypatch, calibrated) -> None:
    prep, calibration = calibrated
    # Six trials over two folds: successive halving fits the second fold of the best four only.
    prep = replace(prep, config=replace(prep.config, gbdt_search_trials=6))
    planned = lightgbm_fits(make_plan(prep, calibration.add(prep), Size.of(prep), 2))
    assert planned["search_gbdt"] == 6 + 4
    made, stage = Counter(), {"now": None}
    staged = Timings.stage

    @contextlib.contextmanager
    def recording_stage(self, name):
        stage["now"] = name
        with staged(self, name):
            yield

    class Recording(InProcess):
        def submit_fit(self, fit, cache):
            made[stage["now"]] += 1
            return super().submit_fit(fit, cache)

    monkeypatch.setattr(Timings, "stage", recording_stage)
    monkeypatch.setattr(build_module, "fit_runner", lambda config: contextlib.nullcontext(Recording()))
    build(BuildConfig(data_dir=tiny_world, out=tmp_path / "model.pkl", gbdt_search_trials=6, **OPTIONS))
    assert made["choose_features"] > 0 and made["check_stability"] > 0, "probes of the feature pipeline"
    assert made["search_gbdt"] > 0, "the demo's LightGBM search"
    for name in ("search_gbdt", "choose_features", "cross_validate", "check_stability", "score_holdout"):
        assert planned[name] == made[name], name
    assert 0 < made["refit"] <= planned["refit"], "the plan refits every member, the build those it ships"
    # With the build's own choices (plan --choices), the plan makes the fits and trees the build made.
    choices = read_choices(tmp_path / "model_report", prep.config.preset)
    chosen = make_plan(prep, calibration.add(prep), Size.of(prep), 2, choices)
    assert lightgbm_fits(chosen)["refit"] == made["refit"] and choices.describe() in chosen.assumptions
    report = json.loads((tmp_path / "model_report" / "report.json").read_text())["models"]
    for item in chosen.stage_items("refit"):
        name = item.name.removesuffix(" refit")
        if item.work.endswith(" trees"):
            assert item.work == f"{report[name]['chosen']['num_boost_round']} trees", name
    assert {item.name.removesuffix(" refit") for item in chosen.stage_items("refit")} == choices.shipped
    raw = make_plan(prep, calibration.costs, Size.of(prep), 2, replace(choices, pipeline="raw features"))
    searched = {item.features for item in raw.stage_items("search_gbdt")}
    assert searched == {raw.size.features}, "the search reads the chosen pipeline's columns: the raw features"


def test_choices_of_another_preset_or_no_report_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such file"):
        read_choices(tmp_path / "nowhere", "demo")
    (tmp_path / "report.json").write_text(
        json.dumps({"settings": {"preset": "standard"}, "models": {}, "feature_pipeline": {}})
    )
    with pytest.raises(ValueError, match="--preset 'standard'"):
        read_choices(tmp_path, "demo")
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON report"):
        read_choices(tmp_path / "report.json", "demo")


def test_the_plan_prints_one_json_object(tiny_world: Path, capsys) -> None:
    options = ["--data-dir", str(tiny_world), "--trees", "10", "--threads", "1", "--cv-folds", "2"]
    assert main(["plan", *options, "--json", "--rows", "20000", "--features", "60", "--eras", "50"]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["total_seconds"] > 0 and plan["peak_rss_mb"] > 0
    assert {"prepare", "choose_features", "cross_validate", "score_holdout", "refit", "export"} <= set(plan["stages"])
    size = plan["size"]
    assert (size["train_rows"], size["train_eras"], size["features"]) == (20000, 50, 60)
    assert size["validation_rows"] == size["validation_eras"] * 400 and size["validation_eras"] > 12
    cv = {item["name"]: item for item in plan["stages"]["cross_validate"]["items"]}
    assert cv["lgbm_example CV"]["fits"] == 2 and cv["lgbm_example CV"]["work"] == "10 trees"
    assert abs(plan["total_seconds"] - sum(s["seconds"] for s in plan["stages"].values())) < 1
    assert main(["plan", "--data-dir", str(tiny_world), "--rows", "0"]) == 1


def test_more_rows_cost_more_and_more_cores_less(calibrated) -> None:
    prep, calibration = calibrated
    size = Size.of(prep)
    small, large = (make_plan(prep, calibration.costs, size.scaled(r, None, 40), 2) for r in (40_000, 400_000))
    assert 5 < large.stage_seconds("cross_validate") / small.stage_seconds("cross_validate") < 11
    assert large.peak_rss_mb > small.peak_rss_mb
    neural = [
        [t.memory_mb for i in plan.stage_items("cross_validate") if i.work.endswith("epochs") for t in i.tasks]
        for plan in (small, large)
    ]
    assert neural[0] and neural[1] == pytest.approx([10 * m for m in neural[0]]), "batches of whole eras, 10x rows"
    wide = make_plan(prep, calibration.costs, size.scaled(400_000, 2748, 40), 2)
    assert wide.total_seconds > 10 * large.total_seconds
    many = make_plan(replace(prep, config=replace(prep.config, jobs=8, threads=0)), calibration.costs, wide.size, 16)
    assert many.threads_per_fit == 2 and many.total_seconds < wide.total_seconds
    tasks = [[t for i in many.stage_items("search_gbdt") if i.round == r for t in i.tasks] for r in (0, 1)]
    assert len(tasks[0]) == 8 and len(tasks[1]) == 4, "the demo's eight trials, the best four on the second fold"
    one_thread = [t.seconds(1) for i in wide.stage_items("search_gbdt") for t in i.tasks]
    assert wide.stage_seconds("search_gbdt") == pytest.approx(sum(one_thread)), "one after another"
    rounds = [makespan(round_, 8, 2, 16) for round_ in tasks]
    assert rounds_makespan(tasks, [], 8, 2, 16) == (pytest.approx(sum(rounds)),) * 2, "a round waits for the one before"
    cv = [t for i in many.stage_items("cross_validate") for t in i.tasks]
    assert cv and all(i.behind == "search_gbdt" for i in many.stage_items("cross_validate") if i.tasks)
    rounds_end, end = rounds_makespan(tasks, cv, 8, 2, 16)
    assert many.stage_seconds("search_gbdt") == pytest.approx(rounds_end), "the CV's fits queued behind round 1"
    blend = sum(i.own_seconds(16) for i in many.stage_items("cross_validate"))
    assert many.stage_seconds("cross_validate") == pytest.approx(end - rounds_end + blend)
    assert end < sum(rounds) + makespan(cv, 8, 2, 16), "the CV fills the slots the rounds leave idle"
    alone = sum(i.seconds(wide.threads_per_fit, wide.threads) for i in wide.stage_items("cross_validate"))
    assert wide.stage_seconds("cross_validate") == pytest.approx(alone), "--jobs 1: after the search, one by one"
    longest = [max(t.seconds(2) for t in round_) for round_ in tasks]
    fixed = [makespan(round_, 8, 2) for round_ in tasks]
    assert fixed == pytest.approx(longest), "eight fits side by side on threads that do not grow"
    assert sum(rounds) < sum(longest), "a round's last fits grow onto the idle workers' cores"
    blend = next(item for item in many.stage_items("cross_validate") if item.name.startswith("blend"))
    assert blend.blas > 0 and blend.parent == 0 and 0 < BLAS_PARALLEL < 1
    assert blend.own_seconds(16) == pytest.approx(blend.blas / speedup(16, BLAS_PARALLEL)), "BLAS on 16 threads"
    scoring = next(item for item in many.stage_items("score_holdout") if item.name.startswith("validation scores"))
    assert scoring.blas > 0 and scoring.parent > 0, "FNC's least squares on BLAS threads, predictions on one"
    for params, (_, _, per_row, per_tree, _) in calibration.costs.trees.items():
        assert 0 < per_row and 0 <= per_tree < per_row, f"prediction of {params}: a row's part, then each tree's"


def test_speedup_and_schedule() -> None:
    assert speedup(1) == 1 and 1 < speedup(2) < 2 and speedup(16) < 1 / (1 - 0.85)

    def serial(*seconds: float) -> list[Task]:
        return [Task(cpu=0.0, serial=s, memory_mb=0.0) for s in seconds]

    assert makespan(serial(4, 3, 3, 2), 2, 1) == 6 and makespan(serial(3, 3, 2, 2, 2), 2, 1) == 7, "longest first"
    assert makespan(serial(5, 1), 4, 1) == 5 and makespan([], 2, 1) == 0
    assert makespan(serial(5, 1), 2, 1, cores=2) == 5, "one-thread work does not grow"
    short, long = Task(cpu=2.0, serial=0.0, memory_mb=0.0), Task(cpu=6.0, serial=0.0, memory_mb=0.0)
    assert makespan([short, long], 2, 1) == 6
    assert makespan([short, long], 2, 1, cores=2) == pytest.approx(2 + 4 / speedup(2)), "alone, on both cores"
    binning = Task(cpu=2.0, serial=4.0, memory_mb=0.0)
    assert makespan([short, binning], 2, 1, cores=2) == pytest.approx(4 + 2 / speedup(2)), "bins, then grows"
    waiting = [short, long, short]
    assert makespan(waiting, 2, 1, cores=2) == pytest.approx(4 + 2 / speedup(2)), "no growing while one waits"
    assert rounds_makespan([serial(4, 1), serial(2)], serial(3), 2, 1) == (6, 6), "3 fills the slot 1 left"
    assert rounds_makespan([serial(4, 1), serial(2)], [], 2, 1) == (6, 6)
    assert rounds_makespan([serial(4, 1), serial(2)], serial(3, 3), 2, 1) == (6, 7), "round 2 behind the second"
    assert rounds_makespan([serial(1)], serial(5), 2, 1) == (1, 5) and rounds_makespan([], serial(2), 1, 1) == (0, 2)


def test_a_time_budget_takes_smaller_settings(tiny_world: Path, calibrated, caplog, monkeypatch) -> None:
    prep, calibration = calibrated
    config = BuildConfig(data_dir=tiny_world, **OPTIONS)
    planned = make_plan(prep, calibration.costs, Size.of(prep), 2).total_seconds
    # The costs measured once: each candidate is planned from the same measurements.
    monkeypatch.setattr(budget_module, "calibrated", lambda config, target: (prep, calibration, Size.of(prep), 2))
    with caplog.at_level(logging.INFO):
        chosen, changes, plan = fit_budget(replace(config, time_budget=planned * 0.8 / 3600), PlanFor(cores=2))
    assert changes and plan.total_seconds <= planned * 0.8
    assert "--time-budget" in caplog.text and changes[0] in caplog.text
    assert chosen.tree_scale < 1 or chosen.era_stride or chosen.cv_folds < config.cv_folds or chosen.preset != "demo"
    with pytest.raises(ValueError, match="--time-budget 1e-06 h: even the smallest settings"):
        fit_budget(replace(config, time_budget=1e-6), PlanFor(cores=2))


def test_a_tree_scale_trades_trees_for_learning_rate() -> None:
    assert scaled_trees(2000, {"learning_rate": 0.01, "max_depth": 5}, 0.5) == (
        1000,
        {"learning_rate": 0.02, "max_depth": 5},
    )
    assert scaled_trees(40, {}, 0.25) == (10, {"learning_rate": 0.04}), "the example's learning rate by default"


def test_the_plan_bins_each_dataset_the_build_bins(calibrated) -> None:
    prep, calibration = calibrated
    plan = make_plan(prep, calibration.costs, Size.of(prep), 2)
    for stage in ("cross_validate", "score_holdout", "refit"):
        benchmark = next(item for item in plan.stage_items(stage) if item.name.startswith("lgbm_benchmark"))
        assert all(task.binning > 0 for task in benchmark.tasks), f"{stage}: the benchmark member bins its own"
    kept = [item for item in plan.stage_items("refit") if item.name.endswith("(a trial's mean)")]
    assert len(kept) == 2 and all(task.binning > 0 for item in kept for task in item.tasks)


def test_fits_chosen_among_trials_bin_each_view_once() -> None:
    # A search's trials on one view: the first fit bins it, the others read its bins.
    same = [Task(1.0, 8.0 + 1.0, 0.0, 8.0)] + [Task(1.0, 1.0, 0.0, 0.0)] * 3
    chosen = chosen_among(same, [("view",)] * 4, 2)
    assert chosen.binning == pytest.approx(4.0) and chosen.serial == pytest.approx(1.0 + 4.0), "one binning for two"
    # Four views: two fits drawn from them need 1.75 of them on average (1 - (3/4)^2 each).
    distinct = [Task(1.0, 9.0, 0.0, 8.0)] * 4
    assert chosen_among(distinct, [(k,) for k in range(4)], 2).binning == pytest.approx(4 * (1 - 0.75**2) * 8 / 2)


def test_binning_is_timed_at_the_planned_fits_size(calibrated) -> None:
    prep, own = calibrated
    assert own.repeats(prep) == 1, "the data's own size: its sample as it is"
    full_size = Calibration(prep, 1.0, planned_rows=2_750_000)
    times = full_size.repeats(prep)
    assert len(own.sample) * times >= BINNING_ROWS > len(own.sample) * (times - 1)
    assert len(own.half) * times >= BINNING_ROWS // 2 >= BIN_SAMPLE_ROWS, "both sizes above LightGBM's bin sample"
    large = repeated(own.sample, times)
    assert list(large.era_order) == list(own.sample.era_order) and len(large) == times * len(own.sample)
    assert (np.diff(large.eras.astype(int)) >= 0).all(), "each era's rows kept together"
    assert [len(full_size.datasets[s][1]) for s in ("full", "half")] == [len(own.sample), len(own.half)], "trees"
    costs = full_size.costs
    assert costs.bin_raw > 0 and costs.bin_fixed >= 0 and costs.bin_extra > 0
    # Finding bins takes LightGBM's bin sample: it grows with the rows up to that sample, then stays.
    view = View(costs.features, 0, False)
    fixed = costs.bin_fixed * costs.features
    for rows in (BIN_SAMPLE_ROWS // 2, BIN_SAMPLE_ROWS, 10 * BIN_SAMPLE_ROWS):
        expected = fixed * min(rows, BIN_SAMPLE_ROWS) / BIN_SAMPLE_ROWS + rows * costs.features * costs.bin_raw
        assert costs.binning(rows, view, rows) == pytest.approx(expected)
