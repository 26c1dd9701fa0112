"""Choices a build makes per data set on its own CV (issue 17): the LightGBM settings search, era
weights, the feature pipeline chosen whole, chained neural fits."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from pipeline import data as nd
from pipeline.binning import DatasetCache
from pipeline.cv import EraWalkForward
from pipeline.feature_choice import simplest_within_noise
from pipeline.features import FeaturePipeline
from pipeline.members import LightGBMMember, MemberContext, MemberEntry, MLPMember, lgbm_search
from pipeline.parallel import active
from pipeline.presets import DEMO_DEEP
from pipeline.weighting import EraBoost, EraWeighting
from tests.recording import Recording


@pytest.fixture(scope="module")
def train(tiny_world: Path) -> nd.EraFrame:
    features = nd.resolve_features(tiny_world, "all")
    targets = [t for t in nd.target_names(tiny_world) if t == "target" or t.endswith("_20")]
    return nd.load_split(tiny_world / "train.parquet", features, targets, data_type="train")


def test_era_weights_decay_with_age_and_a_window_keeps_the_newest() -> None:
    eras = [f"{e:04d}" for e in range(1, 11)]
    half = EraWeighting(half_life=0.2).era_weights(eras)
    assert half[-1] == 1.0 and half[-3] == pytest.approx(0.5), "an era 2 of 10 eras older weighs half"
    window = EraWeighting(window=0.3).era_weights(eras)
    assert window.tolist() == [0.0] * 7 + [1.0] * 3
    weigh = EraWeighting(window=0.5).for_eras(eras)
    np.testing.assert_array_equal(weigh(np.array(["0001", "0010", "0006"], dtype=object)), [0.0, 1.0, 1.0])
    assert EraWeighting().for_eras(eras) is None, "no weighting, no weights"
    with pytest.raises(ValueError, match="window must be a share of the fit's eras in \\(0, 1\\], got 2"):
        EraWeighting(window=2)


def test_era_boosting_weighs_the_eras_a_fit_gets_wrong() -> None:
    """In a world where every fourth era's signal has the other sign, the objective's weights come to
    favour exactly those eras, with a mean weight of 1 (times the rows' own fixed weights)."""
    rng = np.random.default_rng(0)
    eras = np.repeat(np.arange(20), 300)
    x = rng.normal(size=(len(eras), 5))
    flipped = eras % 4 == 0
    y = (0.5 + 0.1 * x[:, 0] * np.where(flipped, -1, 1) + rng.normal(0, 0.2, len(eras))).astype(np.float32)
    dataset = lgb.Dataset(x, label=y).construct()
    boost = EraBoost(2.0, eras, every=20)
    params = {"learning_rate": 0.05, "verbosity": -1, "deterministic": True, "num_threads": 1, "seed": 0}
    booster = lgb.Booster(params | {"objective": "none"}, dataset)
    for _ in range(100):
        booster.update(fobj=boost)
    assert boost.calls == 100
    boosted = np.flatnonzero(boost.era_weight > 1)
    assert set(np.flatnonzero(np.bincount(eras[flipped]))) <= set(boosted.tolist())
    assert np.average(boost.era_weight, weights=np.bincount(eras)) == pytest.approx(1.0)
    _, hessians = boost(booster.predict(x), dataset)
    np.testing.assert_allclose(hessians, boost.era_weight[eras])
    with pytest.raises(ValueError, match="boost must be a weight above 1"):
        EraWeighting(boost=1.0)
    assert EraWeighting(boost=2.0).for_eras(["0001"]) is None, "era boosting has no fixed weights"


def test_weighted_fits_share_the_bins_but_not_the_weights(train: nd.EraFrame) -> None:
    cache = DatasetCache(seed=0)
    eras = train.era_order[:20]
    plain = cache.dataset(None, [(train, eras)], 1, "target", train.feature_names)
    weighted = cache.dataset(
        None, [(train, eras)], 1, "target", train.feature_names, EraWeighting(window=0.5).for_eras(eras)
    )
    assert cache.binned == 1 and cache.reused == 1, "binned once"
    assert plain.get_weight() is None, "the shared dataset carries no weights"
    weights = weighted.get_weight()
    assert weights is not None and (weights == 0).sum() > 0 and set(np.unique(weights)) == {0.0, 1.0}


def test_the_search_tries_the_recipes_first_and_keeps_the_best_trials(train: nd.EraFrame, tiny_world: Path) -> None:
    groups = nd.feature_groups(tiny_world, train.feature_names)
    folds = EraWalkForward(n_splits=2, embargo=2, min_train_eras=12).era_folds(train.era_order)
    pipelines = [FeaturePipeline(groups, mixing=False).fit([(train, tr)]) for tr, _ in folds]
    entry = MemberEntry("gbdt", "lightgbm", DEMO_DEEP, rounds=20, search=2)
    base = LightGBMMember.from_entry(entry, "target", MemberContext(train, "target", threads=1, bins=DatasetCache()), 0)
    runner = Recording()
    with active(runner):
        kept, table = lgbm_search.search(base, train, folds, "target", pipelines, 2, 5, 600.0, seed=0)
    second_round = [name.split()[0] for name in runner.submitted if name.endswith("fold 2")]
    first_round = {name: runner.train_seconds[f"{name} fold 1"] for name in second_round}
    assert second_round == sorted(second_round, key=lambda name: -first_round[name]), "longest first"
    assert len(table) == 5 and sorted(table["trial"]) == [0, 1, 2, 3, 4]
    first = table.set_index("trial")
    assert (first.loc[0, "max_depth"], first.loc[0, "feature_fraction"]) == (6, 0.3), "the entry's own settings"
    assert (first.loc[1, "max_depth"], first.loc[1, "era_stride"]) == (5, 4), "Numerai's example"
    assert (first.loc[2, "max_depth"], first.loc[2, "num_leaves"]) == (10, 1024), "Numerai's deep recipe"
    assert first.loc[3, "boost"] == 2.0 and first.loc[3, "max_depth"] == 6, "the entry's own, era-boosted"
    assert first.loc[4, "rate"] == 0.25 and first.loc[4, "max_depth"] == 6, "the entry's own, at a slower rate"
    assert first.loc[[0, 1, 2, 3], "rate"].eq(1.0).all() and first.loc[[0, 1, 2, 4], "boost"].isna().all()
    assert [member.name for member, _ in kept] == ["gbdt_1", "gbdt_2"]
    assert lgbm_search.survivors(5, 2, 2) == [5, 4] and lgbm_search.survivors(16, 2, 3) == [16, 8, 4]
    assert sorted(table["folds"]) == [1, 2, 2, 2, 2], "successive halving: the worst first fold stops there"
    rows = lgbm_search.fit_rows(train, folds)
    trials = lgbm_search.candidates(base, rows, 0, 5)

    def alone(number: int, on: list):
        member = lgbm_search.trial_member(base, trials[number], number, rows)
        return member.cross_validate(train, on, "target", pipelines)

    first_fold = [alone(number, folds[:1]).per_era.mean() for number in range(5)]
    pruned = table[table["folds"] == 1].iloc[0]
    assert pruned["trial"] == int(np.argmin(first_fold)) and not pruned["kept"], "the worst on the first fold"
    assert pruned["cv_corr_mean"] == pytest.approx(min(first_fold))
    whole = table[table["folds"] == 2]
    best = table[table["kept"]]["cv_corr_mean"].tolist()
    assert best == sorted(whole["cv_corr_mean"], reverse=True)[:2], "the two best whole CVs are kept"
    assert [result.per_era.mean() for _, result in kept] == pytest.approx(best)
    for member, result in kept:
        assert member.estimator.num_boost_round == result.chosen["num_boost_round"], "trees the CV chose"
        shown, params = member.chosen(), member.estimator.params
        assert [shown[k] for k in ("learning_rate", "max_depth")] == [params["learning_rate"], params["max_depth"]]
        number = int(table.loc[table["cv_corr_mean"] == result.per_era.mean(), "trial"].iloc[0])
        pd.testing.assert_series_equal(alone(number, folds).per_era, result.per_era, check_names=False)
    quick, _ = lgbm_search.search(base, train, folds, "target", pipelines, 1, 5, 0.0, seed=0)
    assert len(quick) == 1, "a spent budget still runs the first trial"


def test_a_trial_maps_onto_lightgbm_parameters() -> None:
    trial = lgbm_search.Trial.of(
        lgbm_search.NUMERAI_DEEP | {"rate": 1.0, "era_stride": 1, "half_life": 0.5} | {"window": None, "boost": None}
    )
    params = trial.params(DEMO_DEEP, rows=250_000)
    assert (params["max_depth"], params["num_leaves"], params["min_data_in_leaf"]) == (10, 1024, 1000)
    assert params["learning_rate"] == DEMO_DEEP["learning_rate"], "the entry's learning rate stays"
    slower = lgbm_search.Trial.of(dict(trial.settings) | lgbm_search.SLOWER).params(DEMO_DEEP, rows=250_000)
    assert slower["learning_rate"] == DEMO_DEEP["learning_rate"] / 4 and slower["max_depth"] == 10
    assert "bagging_freq" not in params, "the deep recipe takes no bagging"
    assert trial.weighting(400) == EraWeighting(half_life=0.5, boost_every=80)


def test_the_simplest_pipeline_stays_unless_another_beats_it_beyond_noise() -> None:
    rng = np.random.default_rng(0)
    eras = pd.Index([f"{e:04d}" for e in range(60)], name="era")
    base = pd.Series(rng.normal(0.02, 0.02, 60), index=eras)
    noise = rng.normal(0, 0.01, 60)
    slightly = base + noise - noise.mean() + 0.0002
    clearly = base + 0.01 + rng.normal(0, 0.002, 60)
    assert simplest_within_noise({"raw": base, "more": slightly})[0] == "raw"
    chosen, comparison = simplest_within_noise({"raw": base, "more": slightly, "much more": clearly})
    assert chosen == "much more" and comparison["difference"] > comparison["standard_error"]


def test_chained_neural_fits_only_add_eras_before_each_fold(train: nd.EraFrame) -> None:
    folds = EraWalkForward(n_splits=3, embargo=2, min_train_eras=12).era_folds(train.era_order)
    params = {"hidden": (8,), "max_epochs": 2, "patience": 1, "eras_per_batch": 4, "chain_epochs": 1}
    member = MLPMember.from_entry(
        MemberEntry("mlp", "mlp", params), "target", MemberContext(train, "target", embargo=2), 0
    )
    tuned = []
    original = member.estimator.fine_tune

    def recording(frame, eras, epochs, lr):
        tuned.append(list(eras))
        return original(frame, eras, epochs, lr)

    member.estimator.fine_tune = recording
    result = member.cross_validate(train, folds, "target", [])
    assert len(tuned) == 2, "only the first fold fits from scratch"
    for eras, (train_eras, _) in zip(tuned, folds[1:], strict=True):
        assert set(eras) <= set(train_eras), "a chained fit sees only its fold's training eras"
    assert result.chosen["chained_epochs"] == 1 and np.isfinite(result.per_era).all()
    member.fit([train], None, "holdout")
    assert member.seen_eras_ == set(train.era_order), "the holdout fit catches up on every training era"
