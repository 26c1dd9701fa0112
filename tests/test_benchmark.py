"""The build's two-argument pickle: a member that learns the target relative to Numerai's benchmark
model and reads its live predictions, verified as numerai-predict runs it, refreshed and uploaded."""

from __future__ import annotations

import inspect
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline.artifacts import load_artifacts
from pipeline.build import load_data, oof_matrix
from pipeline.cli import main
from pipeline.config import BuildConfig
from pipeline.cv import walk_forward_folds
from pipeline.data import feature_columns
from pipeline.evaluate import CVResult
from pipeline.feature_choice import fold_pipelines
from pipeline.features import RAW_FEATURES
from pipeline.images import sidecar_path
from pipeline.members import BenchmarkMember, MemberContext
from pipeline.members.benchmark import residual_to_benchmark
from pipeline.presets import DEMO_DEEP, PRESETS, benchmark_member
from pipeline.runtime import ensemble_scores, rank_within_groups
from pipeline.synthetic import earlier_world
from pipeline.verify import file_sha256, verify_pickle
from tests.test_upload import good_pickle, numerai  # noqa: F401  (fixtures)

BENCHMARK = "v53_lgbm_ender20"
OPTIONS = ["--trees", "40", "--threads", "1", "--embargo", "2", "--preset", "example"]


@pytest.fixture(scope="module")
def earlier(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return earlier_world(tiny_world, tmp_path_factory.mktemp("earlier") / "world", eras_back=8)


@pytest.fixture(scope="module")
def benchmark_build(earlier: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build whose one member is the benchmark member, so the pickle ships it (on the earlier world,
    so that a refresh has new eras)."""
    out = tmp_path_factory.mktemp("benchmark_build") / "model.pkl"
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(PRESETS, "example", (benchmark_member(DEMO_DEEP, 60, era_stride=1),))
        assert main(["--data-dir", str(earlier), "--out", str(out), "--objective", "payout", *OPTIONS]) == 0
    return out


def test_residual_to_benchmark_leaves_what_the_benchmark_does_not_explain() -> None:
    rng = np.random.default_rng(0)
    eras = np.repeat(["0001", "0002", "0003"], 200)
    benchmark = rng.random(600)
    target = 0.6 * benchmark + rng.normal(0, 0.3, 600) + np.repeat([0.0, 1.0, -1.0], 200)
    target[5], benchmark[7] = np.nan, np.nan
    residual = residual_to_benchmark(target, benchmark, eras)
    assert np.isnan(residual[[5, 7]]).all() and np.isfinite(np.delete(residual, [5, 7])).all()
    for era in np.unique(eras):
        rows = (eras == era) & ~np.isnan(residual)
        assert abs(np.corrcoef(residual[rows], benchmark[rows])[0, 1]) < 1e-12, "no benchmark left, per era"
        assert abs(residual[rows].mean()) < 1e-12, "the intercept is fitted per era"
    half = residual_to_benchmark(target, benchmark, eras, proportion=0.5)
    np.testing.assert_allclose(half, (target + residual) / 2)


def test_the_two_argument_pickle_verifies_and_predicts_as_its_member(benchmark_build: Path, tiny_world: Path) -> None:
    predict = pd.read_pickle(benchmark_build)
    assert list(inspect.signature(predict).parameters) == ["live_features", "live_benchmark_models"]
    report = verify_pickle(benchmark_build, tiny_world / "live.parquet")
    assert report.ok and report.parameters == 2, report.summary()
    record = json.loads(sidecar_path(benchmark_build).read_text())
    assert record["sha256"] == file_sha256(benchmark_build) and record["parameters"] == 2
    assert record["images"]["Python 3.11"]["match"] == "exact", "the build records what it verified"

    live = pd.read_parquet(tiny_world / "live.parquet")
    benchmarks = pd.read_parquet(tiny_world / "live_benchmark_models.parquet")
    shuffled = benchmarks.sample(frac=1.0, random_state=0)
    got = predict(live, shuffled)["prediction"]
    artifacts = load_artifacts(benchmark_build.with_name("model_artifacts"))
    (saved,) = artifacts.members
    assert isinstance(saved.member, BenchmarkMember) and saved.member.benchmark_name == BENCHMARK
    x, eras = live[artifacts.feature_names].to_numpy(np.float32), live["era"].to_numpy()
    scores = saved.member.predict(x, eras, benchmarks.loc[live.index, BENCHMARK].to_numpy())[:, None]
    columns = feature_columns(artifacts.feature_names, artifacts.neutralizers)
    blended = ensemble_scores(scores, np.ones(1), x, eras, artifacts.neutralization, columns)
    np.testing.assert_allclose(got.to_numpy(), rank_within_groups(blended, eras), rtol=0, atol=1e-12)
    assert got.index.equals(live.index), "aligned by id, whatever the benchmark file's row order"

    report = json.loads(benchmark_build.with_name("model_report").joinpath("report.json").read_text())
    paid = report["models"]["ensemble"]["numerai"]
    assert {"corr", "bmc", "payout"} <= set(paid["cv"]) and {"corr", "bmc", "payout"} <= set(paid["validation"])
    corr, bmc, payout = (paid["validation"][score]["mean"] for score in ("corr", "bmc", "payout"))
    assert payout == pytest.approx(0.5 * corr + 2 * bmc), "every validation era has a benchmark here"
    assert paid["cv"]["objective"] == "payout (0.5 x CORR + 2 x BMC)"


def test_a_missing_benchmark_column_is_a_clear_error(benchmark_build: Path, tiny_world: Path, tmp_path: Path) -> None:
    live = tmp_path / "live.parquet"
    shutil.copy(tiny_world / "live.parquet", live)
    benchmarks = pd.read_parquet(tiny_world / "live_benchmark_models.parquet")
    benchmarks.rename(columns={BENCHMARK: "v52_lgbm_ender20"}).to_parquet(tmp_path / "live_benchmark_models.parquet")
    report = verify_pickle(benchmark_build, live)
    assert not report.ok
    assert any(f"lack the column(s) {BENCHMARK}" in p and "v52_lgbm_ender20" in p for p in report.problems), (
        report.problems
    )
    benchmarks.reset_index(drop=True).to_parquet(tmp_path / "by_position.parquet")
    report = verify_pickle(benchmark_build, live, benchmarks_path=tmp_path / "by_position.parquet")
    assert any("share no id with the live features" in p for p in report.problems), report.problems


def test_a_refresh_continues_the_benchmark_member(benchmark_build: Path, tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "refreshed.pkl"
    artifacts = benchmark_build.with_name("model_artifacts")
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(PRESETS, "example", (benchmark_member(DEMO_DEEP, 60, era_stride=1),))
        args = ["--data-dir", str(tiny_world), "--out", str(out), "--objective", "payout", *OPTIONS]
        assert main([*args, "--init-model", str(artifacts)]) == 0
    steps = json.loads((tmp_path / "refreshed_report" / "report.json").read_text())["refresh"]["members"]
    assert steps["lgbm_benchmark"]["trees_added"] > 0
    assert verify_pickle(out, tiny_world / "live.parquet").ok


def test_upload_downloads_the_live_benchmarks_for_a_two_argument_pickle(
    numerai,  # noqa: F811
    benchmark_build: Path,
    good_pickle: Path,  # noqa: F811
) -> None:
    for pickle, wanted in ((benchmark_build, True), (good_pickle, False)):
        numerai.requests_seen.clear()
        assert main(["upload", str(pickle), "--model-name", "my_model", "--no-wait"]) == 0
        gets = [url for method, url, _ in numerai.requests_seen if method == "GET"]
        assert any(url.endswith("v5.3/live.parquet") for url in gets)
        assert any(url.endswith("v5.3/live_benchmark_models.parquet") for url in gets) == wanted, gets
    assert numerai.uploads["model.pkl"] == good_pickle.read_bytes()


def test_the_member_trains_and_scores_only_where_the_benchmark_covers(tiny_world: Path, tmp_path: Path) -> None:
    world = tmp_path / "world"
    shutil.copytree(tiny_world, world)
    train = pd.read_parquet(world / "train_benchmark_models.parquet")
    first_covered = sorted(train["era"].unique())[12]
    train[train["era"] >= first_covered].to_parquet(world / "train_benchmark_models.parquet")
    _, frame, _ = load_data(BuildConfig(data_dir=world), world, ["target"])
    covered = ~frame.benchmark.isna().to_numpy()
    assert covered.any() and not covered.all() and (frame.eras[covered] >= first_covered).all()

    folds = walk_forward_folds(frame.era_order, 3, 2)
    pipelines = fold_pipelines(frame, folds, {name: "ungrouped" for name in frame.feature_names}, RAW_FEATURES)
    context = MemberContext(frame, "target", threads=1, num_boost_round=30)
    member = BenchmarkMember.from_entry(benchmark_member(DEMO_DEEP, 30, 1), "target", context, seed=0)
    result = member.cross_validate(frame, folds, "target", pipelines)
    scored = ~np.isnan(result.oof)
    assert scored.any() and not (scored & ~covered).any(), "no prediction where the benchmark has none"
    assert result.chosen["trees_chosen_on"] == "BMC" and result.per_era.index.min() >= first_covered

    every_row = np.zeros(len(frame))
    every_row[: len(frame) // 2] = np.nan
    _, blend_rows = oof_matrix({"other": CVResult("other", result.per_era, every_row, {}, result.curve), "b": result})
    assert (blend_rows == (scored & ~np.isnan(every_row))).all(), "the blend is fitted where every member scored"
