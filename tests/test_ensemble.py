"""Members of the build: LightGBM and neural members share one protocol (CV, fit, predict, export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import data as nd
from pipeline import runtime
from pipeline.cv import EraWalkForward
from pipeline.features import FeaturePipeline
from pipeline.members import LightGBMMember, MemberContext, TSMixerMember
from pipeline.members.lgbm import features_without
from pipeline.models.lgbm import LGBMModel
from pipeline.presets import GROUP_HALVES, PRESETS, make_members, member_targets, preset_entries
from pipeline.runtime import make_predict
from pipeline.targets import best_aux_target


@pytest.fixture(scope="module")
def frames(tiny_world: Path) -> tuple[list[str], nd.EraFrame, nd.EraFrame]:
    features = nd.resolve_features(tiny_world, "all")
    targets = member_targets(PRESETS["standard"], nd.target_names(tiny_world), "target")
    train = nd.load_split(tiny_world / "train.parquet", features, targets, data_type="train")
    validation = nd.load_split(tiny_world / "validation.parquet", features, targets, data_type="validation")
    return features, train, validation


def check_member(spec, features, train, validation, live: pd.DataFrame, groups: dict[str, str]) -> None:
    folds = EraWalkForward(n_splits=2, embargo=2, min_train_eras=12).era_folds(train.era_order)
    pipelines = [FeaturePipeline(groups, missing="nan").fit([(train, tr)]) for tr, _ in folds]
    result = spec.cross_validate(train, folds, "target", pipelines)
    scored = ~np.isnan(result.oof)
    assert set(train.eras[scored]) == set(np.concatenate([va for _, va in folds])), "out-of-fold on every fold era"
    assert len(result.per_era) == sum(len(va) for _, va in folds)
    pipeline = FeaturePipeline(groups, missing="nan").fit(
        [(train, train.era_order), (validation, validation.era_order)]
    )
    spec.fit([train, validation], pipeline, "refit")
    predictions = make_predict({"feature_names": features, "members": [spec.export(1.0)]})(live)
    assert predictions["prediction"].between(0, 1).all() and predictions["prediction"].std() > 0
    expected = spec.predict(live[features].to_numpy(np.int8), live["era"].to_numpy())
    np.testing.assert_allclose(
        predictions["prediction"].to_numpy(),
        runtime.rank_within_groups(expected, live["era"].to_numpy()),
        atol=1e-12,
        err_msg="the pickle gives what the trained member gives",
    )


def test_lightgbm_member_protocol(frames, tiny_world: Path) -> None:
    features, train, validation = frames
    spec = LightGBMMember("lgbm", LGBMModel(num_boost_round=20, num_threads=1), "target", era_stride=2)
    check_member(
        spec,
        features,
        train,
        validation,
        pd.read_parquet(tiny_world / "live.parquet"),
        nd.feature_groups(tiny_world, features),
    )
    assert spec.estimator.num_boost_round <= 20, "the CV's choice of trees is kept"


def test_member_over_a_feature_subset_sees_only_its_raw_columns(frames, tiny_world: Path) -> None:
    features, train, validation = frames
    kept = features_without(GROUP_HALVES[1], nd.read_features_json(tiny_world)["feature_sets"], features)
    spec = LightGBMMember(
        "lgbm_half", LGBMModel(num_boost_round=20, num_threads=1), "target", era_stride=2, features=kept
    )
    check_member(
        spec,
        features,
        train,
        validation,
        pd.read_parquet(tiny_world / "live.parquet"),
        nd.feature_groups(tiny_world, features),
    )
    groups = nd.feature_groups(tiny_world, features)
    raw_inputs = set(spec.estimator.booster_.feature_name()) & set(features)
    assert raw_inputs == set(kept) and {groups[f] for f in kept} == set(GROUP_HALVES[0])
    assert spec.export(1.0)["transform"]["columns"] is not None


def test_members_over_feature_subsets_share_their_pipelines_matrix(frames, tiny_world: Path, monkeypatch) -> None:
    features, train, validation = frames
    pipeline = FeaturePipeline(nd.feature_groups(tiny_world, features)).fit([(train, train.era_order)])
    specs = [
        LightGBMMember(name, LGBMModel(num_boost_round=10, num_threads=1), "target", 2, features=subset)
        for name, subset in (("all", None), ("odd", features[1::2]), ("even", features[::2]))
    ]
    for spec in specs:
        spec.fit([train], pipeline, "test")
    built, model_matrix = [], runtime.model_matrix
    monkeypatch.setattr(runtime, "model_matrix", lambda *args: built.append(args) or model_matrix(*args))
    rows = validation.select_eras(validation.era_order[:2])
    matrices: dict = {}
    for spec in specs:
        scores = runtime.member_scores(
            spec.export(1.0), validation.features[rows].astype(np.float32), {}, validation.eras[rows], matrices
        )
        np.testing.assert_allclose(scores, spec.predict(validation.features[rows], validation.eras[rows]), rtol=1e-12)
    assert len(built) == 1, "one matrix for the three members"


def test_feature_subsets_leave_out_named_sets() -> None:
    sets = {"medium": ["c", "a"], "wisdom": ["b", "z"], "all": ["a", "b", "c"]}
    assert features_without(["wisdom"], sets, ["c", "b", "a"]) == ["c", "a"], "in the build's order"
    assert features_without(["medium", "wisdom"], sets, ["a", "b", "c", "d"]) == ["d"], "features in no set stay"
    assert features_without(["wisdom"], sets, ["a", "c"]) is None, "all of the build's features: not a subset"
    assert features_without(["all"], sets, ["a", "c"]) is None, "none of them"
    assert features_without(["strength"], sets, ["a", "b"]) is None, "a set features.json lacks"


def test_neural_member_protocol(frames, tiny_world: Path) -> None:
    from pipeline.models.tsmixer import TSMixerExt

    features, train, validation = frames
    aux = [c for c in train.targets.columns if c != "target" and c.endswith("_20")]
    estimator = TSMixerExt(d=8, n_block=1, ff=16, context_dim=4, max_epochs=2, patience=1, threads=1, progress=False)
    spec = TSMixerMember("tsmixer", estimator, "target", aux, era_stride=1, n_valid_eras=3, embargo=2)
    check_member(
        spec,
        features,
        train,
        validation,
        pd.read_parquet(tiny_world / "live.parquet"),
        nd.feature_groups(tiny_world, features),
    )


def test_auxiliary_target_is_chosen_on_signal_not_on_shared_noise() -> None:
    rng = np.random.default_rng(0)
    n_eras, rows = 60, 300
    x = rng.integers(0, 5, size=(n_eras * rows, 20), dtype=np.int8)
    signal, noise = (x[:, :5].astype(np.float32) - 2).sum(axis=1), rng.normal(0, 12, len(x))
    bins = lambda v: np.digitize(v, np.quantile(v, [0.05, 0.25, 0.75, 0.95])) / 4  # noqa: E731
    targets = pd.DataFrame(
        {
            "target": bins(signal + noise),
            "target_noisy_20": bins(noise + rng.normal(0, 3, len(x))),
            "target_signal_20": bins(signal + rng.normal(0, 6, len(x))),
        }
    )
    eras = np.repeat([f"{e:04d}" for e in range(1, n_eras + 1)], rows)
    frame = nd.EraFrame(
        Path("synthetic"), np.arange(len(x)).astype(str), eras, x, [f"f{j}" for j in range(20)], targets
    )
    assert targets["target_noisy_20"].corr(targets["target"]) > targets["target_signal_20"].corr(targets["target"])
    assert best_aux_target(frame, "target", "_20") == "target_signal_20"


def test_presets_pick_members_the_data_supports(frames, tiny_world: Path) -> None:
    _, train, _ = frames
    aux = best_aux_target(train, "target", "_20")
    assert aux is not None and aux.endswith("_20") and aux != "target_ender_20"
    sets = nd.read_features_json(tiny_world)["feature_sets"]
    context = MemberContext(train, "target", seed=3, num_boost_round=50, feature_sets=sets)
    specs = make_members(PRESETS["standard"], context)
    assert [s.name for s in specs] == [
        "lgbm_example",
        "lgbm_gbdt",
        "lgbm_deep_a",
        "lgbm_deep_b",
        "lgbm_aux20",
        "lgbm_aux60",
        "mlp",
        "tsmixer_ext",
    ]
    assert [s.train_target for s in specs[:4]] == ["target"] * 4 and specs[4].train_target == aux
    assert specs[1].search == 3 and specs[1].estimator.params == specs[2].estimator.params
    assert all(s.estimator.num_boost_round <= 50 for s in specs if isinstance(s, LightGBMMember))
    assert [s.features for s in specs[:2]] == [None] * 2
    assert sorted(specs[2].features + specs[3].features) == sorted(train.feature_names), (
        "the two halves cover the features"
    )
    assert "target_ender_20" not in specs[-2].aux_targets, "the main target is never its own auxiliary head"
    demo = make_members(PRESETS["demo"], context)
    assert [s.name for s in demo] == ["lgbm_example", "lgbm_gbdt", "lgbm_aux20", "mlp", "tsmixer_ext"]
    assert demo[1].search == 2 and demo[-1].chain_epochs > 0, "the demo searches its LightGBM, chains TSMixer-Ext"
    only_main = train.with_features(train.feature_names)
    only_main.targets = train.targets[["target"]]
    assert [s.name for s in make_members(PRESETS["standard"], MemberContext(only_main, "target"))] == [
        "lgbm_example",
        "lgbm_gbdt",
        "mlp",
        "tsmixer_ext",
    ], "no auxiliary target, no feature sets: those members are left out"
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        preset_entries("huge")
