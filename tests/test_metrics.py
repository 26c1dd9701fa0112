from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from numerai_tools.scoring import numerai_corr

from pipeline.metrics import (
    max_drawdown,
    paired_difference,
    per_era_bmc,
    per_era_bmc_columns,
    per_era_corr,
    per_era_corr_columns,
    summarize,
)


def test_per_era_corr_equals_numerai_tools_on_each_era() -> None:
    rng = np.random.default_rng(0)
    eras = np.repeat(["0001", "0002", "0003"], 200)
    target = rng.choice([0, 0.25, 0.5, 0.75, 1], size=600, p=[0.05, 0.2, 0.5, 0.2, 0.05])
    prediction = target + rng.normal(0, 1, 600)
    target[5] = np.nan
    scores = per_era_corr(pd.Series(prediction), pd.Series(target), pd.Series(eras))
    assert list(scores.index) == ["0001", "0002", "0003"]
    for era in scores.index:
        rows = (eras == era) & ~np.isnan(target)
        frame = pd.DataFrame({"p": prediction[rows]}, index=np.flatnonzero(rows))
        expected = numerai_corr(frame, pd.Series(target[rows], index=frame.index, name="target")).iloc[0]
        assert scores[era] == pytest.approx(expected, abs=1e-12)


def test_the_searches_corr_of_many_columns_is_numerai_corr() -> None:
    """The numpy arithmetic the searches use equals numerai_tools on ties, integer and continuous
    predictions, a constant column, NaN targets and NaN predictions."""
    rng = np.random.default_rng(3)
    eras = np.repeat(["0001", "0002", "0003", "0004"], [150, 200, 7, 300])
    target = rng.choice([0, 0.25, 0.5, 0.75, 1], size=len(eras))
    target[[3, 170]] = np.nan
    columns = [target + rng.normal(0, 1, len(eras)), rng.integers(0, 5, len(eras)), np.ones(len(eras))]
    predictions = np.column_stack([*columns, rng.normal(0, 1, len(eras))])
    predictions[400, 3] = np.nan
    scores = per_era_corr_columns(predictions, target, eras)
    assert list(scores.index) == ["0001", "0002", "0003", "0004"] and scores.shape == (4, 4)
    for era in scores.index:
        rows = (eras == era) & ~np.isnan(target)
        frame = pd.DataFrame(predictions[rows], index=np.flatnonzero(rows))
        expected = numerai_corr(frame, pd.Series(target[rows], index=frame.index, name="target")).to_numpy()
        np.testing.assert_allclose(scores.loc[era].to_numpy(), expected, rtol=0, atol=1e-12)
    assert scores[2].isna().all()


def test_summary_figures() -> None:
    per_era = pd.Series([0.02, -0.01, 0.03, -0.04, 0.01])
    figures = summarize(per_era)
    assert figures["mean"] == pytest.approx(0.002)
    assert figures["std"] == pytest.approx(np.std(per_era.to_numpy()))
    assert figures["sharpe"] == pytest.approx(0.002 / np.std(per_era.to_numpy()))
    assert figures["max_drawdown"] == pytest.approx(0.04)
    assert figures["eras"] == 5
    assert max_drawdown(pd.Series([0.01, 0.02])) == 0.0


def one_era_data(seed: int = 1, n: int = 300, f: int = 6):
    rng = np.random.default_rng(seed)
    features = rng.integers(0, 5, size=(n, f)).astype(np.int8)
    target = rng.choice([0, 0.25, 0.5, 0.75, 1], size=n)
    prediction = features[:, 0] + rng.normal(0, 2, n)
    benchmark = rng.random(n)
    return features, target, prediction, benchmark


def test_other_per_era_metrics_equal_numerai_tools() -> None:
    from numerai_tools.scoring import (
        correlation_contribution,
        tie_broken_rank_correlation,
    )

    from pipeline.metrics import per_era_benchmark_corr, per_era_bmc

    features, target, prediction, benchmark = one_era_data()
    eras = np.array(["0001"] * len(target))
    index = pd.RangeIndex(len(target))
    p = pd.DataFrame({"prediction": prediction}, index=index)
    t = pd.Series(target, index=index, name="target")
    b = pd.Series(benchmark, index=index, name="benchmark")
    assert per_era_bmc(prediction, target, benchmark, eras)["0001"] == pytest.approx(
        correlation_contribution(p, b, t).iloc[0]
    )
    assert per_era_benchmark_corr(prediction, benchmark, eras)["0001"] == pytest.approx(
        tie_broken_rank_correlation(b, p["prediction"])
    )


def test_fnc_and_exposure_of_many_models_equal_numerai_tools_model_by_model() -> None:
    """All models of an era scored in one call (one least squares) give each model's own
    feature_neutral_corr and max_feature_correlation; a constant feature column is skipped by exposure
    as numerai-tools' caller skips it, NaN targets leave FNC's rows only."""
    from numerai_tools.scoring import feature_neutral_corr, max_feature_correlation

    from pipeline.metrics import per_era_feature_exposure_columns, per_era_fnc_columns

    rng = np.random.default_rng(7)
    eras = np.repeat(["0001", "0002", "0003"], [250, 300, 180])
    features = rng.integers(0, 5, size=(len(eras), 8)).astype(np.int8)
    features[eras == "0002", 5] = 2
    target = rng.choice([0, 0.25, 0.5, 0.75, 1], size=len(eras))
    target[[4, 400]] = np.nan
    predictions = np.column_stack(
        [features[:, 0] + rng.normal(0, 2, len(eras)), rng.normal(size=len(eras)), rng.integers(0, 5, len(eras))]
    )
    fnc = per_era_fnc_columns(predictions, target, eras, features)
    exposure = per_era_feature_exposure_columns(predictions, eras, features)
    assert list(fnc.index) == list(exposure.index) == ["0001", "0002", "0003"] and fnc.shape == (3, 3)
    for era in fnc.index:
        for k in range(3):
            labelled = (eras == era) & ~np.isnan(target)
            index = pd.RangeIndex(labelled.sum())
            fx = pd.DataFrame(features[labelled].astype(np.float32), index=index)
            p = pd.DataFrame({"prediction": predictions[labelled, k]}, index=index)
            expected = feature_neutral_corr(p, fx, pd.Series(target[labelled], index=index, name="target")).iloc[0]
            assert fnc.loc[era, k] == pytest.approx(expected, abs=1e-12)
            rows = eras == era
            block = pd.DataFrame(features[rows].astype(np.float32))
            series = pd.Series(predictions[rows, k])
            exposed = max_feature_correlation(series, block.loc[:, block.std() > 0])[1]
            assert exposure.loc[era, k] == pytest.approx(exposed, abs=1e-10)
    assert exposure.loc["0001", 0] > 0.3 > exposure.loc["0001", 1], "the first model is built on feature 0"


def test_paired_difference_is_the_mean_and_standard_error_of_per_era_differences() -> None:
    a = pd.Series([0.03, 0.01, 0.05, np.nan], index=["e1", "e2", "e3", "e4"])
    b = pd.Series([0.02, 0.02, 0.01, 0.04], index=["e1", "e2", "e3", "e4"])
    mean, se = paired_difference(a, b)
    assert mean == pytest.approx(0.04 / 3) and se == pytest.approx(np.std([0.01, -0.01, 0.04], ddof=1) / np.sqrt(3))


def test_bmc_of_many_columns_is_numerai_tools_correlation_contribution() -> None:
    rng = np.random.default_rng(5)
    eras = np.repeat(["0001", "0002", "0003"], 400)
    targets = rng.integers(0, 5, len(eras)) / 4
    benchmark = rng.random(len(eras))
    noise = rng.random((len(eras), 3))
    predictions = np.column_stack([noise[:, 0], benchmark + noise[:, 1], np.round(noise[:, 2], 1)])
    targets[3], benchmark[10] = np.nan, np.nan
    fast = per_era_bmc_columns(predictions, targets, benchmark, eras)
    for k in range(predictions.shape[1]):
        reference = per_era_bmc(predictions[:, k], targets, benchmark, eras)
        np.testing.assert_allclose(fast[k].to_numpy(), reference.to_numpy(), rtol=1e-10, atol=1e-14)
    assert list(fast.index) == ["0001", "0002", "0003"]
    assert per_era_bmc_columns(predictions, targets, np.full(len(eras), np.nan), eras).shape == (0, 3)


def test_feature_era_corr_is_numerai_corr_of_each_feature(tiny_world) -> None:
    from pipeline import data as nd
    from pipeline.analysis import feature_era_corr

    features = nd.resolve_features(tiny_world, "all")
    frame = nd.load_split(tiny_world / "train.parquet", features, ["target"], data_type="train")
    first = frame.era_order[0]
    frame.features[frame.select_eras([first]), 0] = 2  # a feature constant in one era
    eras = frame.era_order[:3]
    table = feature_era_corr(frame, frame.select_eras(eras), "target")
    assert list(table.index) == list(eras) and list(table.columns) == frame.feature_names
    assert np.isnan(table.loc[first].iloc[0]) and table.iloc[1:, 0].notna().all()
    for era in eras:
        rows = frame.select_eras([era])
        y = frame.targets["target"].to_numpy(dtype=np.float64)[rows]
        block = pd.DataFrame(frame.features[rows][:, 1:].astype(np.float64))
        expected = numerai_corr(block, pd.Series(y, name="target")).to_numpy()
        np.testing.assert_allclose(table.loc[era].to_numpy()[1:], expected, rtol=0, atol=1e-12)


def test_the_permutation_sample_keeps_every_era_and_its_share() -> None:
    from pipeline.analysis import era_sample

    eras = np.repeat(["0001", "0002", "0003"], [1000, 3000, 50])
    rows = np.arange(len(eras))
    assert era_sample(rows, eras, cap=5000) is rows, "a small validation is scored whole"
    sample = era_sample(rows, eras, cap=1000, seed=1)
    counts = dict(zip(*np.unique(eras[sample], return_counts=True), strict=True))
    assert counts == {"0001": 247, "0002": 741, "0003": 50}, counts
    assert np.all(np.diff(sample) > 0) and np.array_equal(sample, era_sample(rows, eras, cap=1000, seed=1))
