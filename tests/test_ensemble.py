"""Members of the build: LightGBM and neural members share one protocol (CV, fit, predict, export)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import data as nd
from pipeline.cv import EraWalkForward
from pipeline.ensemble import LGBMSpec, NeuralSpec, best_aux_target, member_specs, member_targets
from pipeline.models.lgbm import LGBMMember
from pipeline import runtime
from pipeline.features import FeaturePipeline
from pipeline.runtime import make_predict


@pytest.fixture(scope="module")
def frames(tiny_world: Path) -> tuple[list[str], nd.EraFrame, nd.EraFrame]:
    features = nd.resolve_features(tiny_world, "all")
    targets = member_targets("demo", nd.target_names(tiny_world), "target")
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
    pipeline = FeaturePipeline(groups, missing="nan").fit([(train, train.era_order), (validation, validation.era_order)])
    spec.fit([train, validation], pipeline, "refit")
    predictions = make_predict({"feature_names": features, "members": [spec.export(1.0)]})(live)
    assert predictions["prediction"].between(0, 1).all() and predictions["prediction"].std() > 0
    expected = spec.predict(live[features].to_numpy(np.int8), live["era"].to_numpy())
    np.testing.assert_allclose(
        predictions["prediction"].to_numpy(), runtime.rank_within_groups(expected, live["era"].to_numpy()), atol=1e-12,
        err_msg="the pickle gives what the trained member gives",
    )


def test_lightgbm_member_protocol(frames, tiny_world: Path) -> None:
    features, train, validation = frames
    spec = LGBMSpec("lgbm", LGBMMember(num_boost_round=20, num_threads=1), "target", era_stride=2)
    check_member(spec, features, train, validation, pd.read_parquet(tiny_world / "live.parquet"), nd.feature_groups(tiny_world, features))
    assert spec.estimator.num_boost_round <= 20, "the CV's choice of trees is kept"


def test_neural_member_protocol(frames, tiny_world: Path) -> None:
    from pipeline.models.tsmixer import TSMixerExt

    features, train, validation = frames
    aux = [c for c in train.targets.columns if c != "target" and c.endswith("_20")]
    estimator = TSMixerExt(d=8, n_block=1, ff=16, context_dim=4, max_epochs=2, patience=1, threads=1, progress=False)
    spec = NeuralSpec("tsmixer", estimator, "target", aux, era_stride=1, n_valid_eras=3, embargo=2)
    check_member(spec, features, train, validation, pd.read_parquet(tiny_world / "live.parquet"), nd.feature_groups(tiny_world, features))


def test_auxiliary_target_is_chosen_on_signal_not_on_shared_noise() -> None:
    rng = np.random.default_rng(0)
    n_eras, rows = 60, 300
    x = rng.integers(0, 5, size=(n_eras * rows, 20), dtype=np.int8)
    signal, noise = (x[:, :5].astype(np.float32) - 2).sum(axis=1), rng.normal(0, 12, len(x))
    bins = lambda v: np.digitize(v, np.quantile(v, [0.05, 0.25, 0.75, 0.95])) / 4  # noqa: E731
    targets = pd.DataFrame({
        "target": bins(signal + noise),
        "target_noisy_20": bins(noise + rng.normal(0, 3, len(x))),
        "target_signal_20": bins(signal + rng.normal(0, 6, len(x))),
    })
    eras = np.repeat([f"{e:04d}" for e in range(1, n_eras + 1)], rows)
    frame = nd.EraFrame(Path("synthetic"), np.arange(len(x)).astype(str), eras, x, [f"f{j}" for j in range(20)], targets)
    assert targets["target_noisy_20"].corr(targets["target"]) > targets["target_signal_20"].corr(targets["target"])
    assert best_aux_target(frame, "target", "_20") == "target_signal_20"


def test_presets_pick_members_the_data_supports(frames) -> None:
    _, train, _ = frames
    aux = best_aux_target(train, "target", "_20")
    assert aux is not None and aux.endswith("_20") and aux != "target_ender_20"
    specs = member_specs("demo", train, "target", num_boost_round=50, seed=3)
    assert [s.name for s in specs] == ["lgbm_example", "lgbm_deep", "lgbm_deep_2", "lgbm_aux20", "mlp"]
    assert [s.train_target for s in specs] == ["target", "target", "target", aux, "target"]
    assert specs[1].estimator.params == specs[2].estimator.params and specs[1].estimator.seed != specs[2].estimator.seed
    assert all(s.estimator.num_boost_round <= 50 for s in specs if isinstance(s, LGBMSpec))
    assert "target_ender_20" not in specs[-1].aux_targets, "the main target is never its own auxiliary head"
    only_main = train.with_features(train.feature_names)
    only_main.targets = train.targets[["target"]]
    assert [s.name for s in member_specs("demo", only_main, "target")] == ["lgbm_example", "lgbm_deep", "lgbm_deep_2", "mlp"]
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        member_specs("huge", train, "target")
