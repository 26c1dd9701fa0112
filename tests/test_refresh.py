"""Weekly refresh (`--init-model`): artifacts of a build, continued boosters, fine-tuned networks,
clear errors, and the comparison in the report. Worlds are the tiny world and itself 8 eras earlier."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pytest
import torch

from pipeline import data as nd
from pipeline.artifacts import Artifacts, SavedMember, load_artifacts, save_artifacts
from pipeline.build import BuildConfig
from pipeline.cli import main
from pipeline.features import RAW_FEATURES, FeaturePipeline
from pipeline.members import LightGBMMember, MLPMember, TSMixerMember
from pipeline.models.lgbm import LGBMModel
from pipeline.models.tsmixer import MLPBaseline, TSMixerExt
from pipeline.refresh import continue_members
from pipeline.synthetic import earlier_world, write_world
from pipeline.targets import aux_targets
from tests.conftest import TINY_WORLD

BUILD = ["--preset", "example", "--trees", "40", "--threads", "1", "--embargo", "2"]


@pytest.fixture(scope="module")
def previous(tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A build on the tiny world as it was 8 eras ago (labelled through era 0036); its artifacts."""
    root = tmp_path_factory.mktemp("previous")
    earlier = earlier_world(tiny_world, root / "earlier", 8)
    assert main(["--data-dir", str(earlier), "--out", str(root / "model.pkl"), *BUILD]) == 0
    return root / "model_artifacts"


def test_a_build_leaves_what_a_refresh_needs(previous: Path) -> None:
    manifest = json.loads((previous / "manifest.json").read_text())
    assert manifest["last_era"] == "0036" and set(manifest["eras"]) == {f"{e:04d}" for e in range(1, 37)}
    (member,) = manifest["members"]
    assert member["kind"] == "lightgbm" and member["trees"] == member["base_trees"] >= 1 and member["weight"] == 1.0
    booster = lgb.Booster(model_file=str(previous / member["file"]))
    assert booster.current_iteration() == member["trees"]
    loaded = load_artifacts(previous)
    assert loaded.feature_names == manifest["feature_names"] and loaded.pipeline.transform_["extra_names"] == []


def test_refresh_continues_the_booster_and_compares_on_held_out_eras(
    previous: Path, tiny_world: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "refreshed.pkl"
    code = main(
        [
            "--data-dir",
            str(tiny_world),
            "--out",
            str(out),
            "--init-model",
            str(previous),
            "--refresh-test-eras",
            "3",
            *BUILD,
        ]
    )
    printed = capsys.readouterr().out
    assert code == 0 and out.is_file()
    assert "previous, unchanged" in printed and "full retrain" in printed and "verification PASSED" in printed

    before = load_artifacts(previous).members[0].member.estimator.booster_
    after = load_artifacts(tmp_path / "refreshed_artifacts").members[0].member.estimator.booster_
    n = before.current_iteration()
    assert after.current_iteration() == n + max(1, round(0.1 * n))
    assert after.dump_model()["tree_info"][:n] == before.dump_model()["tree_info"]
    x = np.random.default_rng(0).integers(0, 5, (200, before.num_feature())).astype(np.float32)
    np.testing.assert_array_equal(after.predict(x, num_iteration=n), before.predict(x))

    report = json.loads((tmp_path / "refreshed_report" / "report.json").read_text())
    refresh = report["refresh"]
    comparison = refresh["comparison"]
    assert refresh["new_eras"] == ["0037", "0044", 8]
    assert comparison["test_eras"] == ["0042", "0044", 3] and comparison["trained_through"] == "0039"
    assert comparison["previous_trained_through"] == "0036"
    assert set(report["models"]) == {"previous", "refreshed", "full_retrain"}
    for figures in report["models"].values():
        assert figures["validation"]["eras"] == 3 and set(figures["validation_per_era"]) == {"0042", "0043", "0044"}
    assert (
        "Refresh: previous vs refreshed vs full retrain" in (tmp_path / "refreshed_report" / "report.html").read_text()
    )

    manifest = json.loads((tmp_path / "refreshed_artifacts" / "manifest.json").read_text())
    assert manifest["last_era"] == "0044" and manifest["members"][0]["last_era"] == "0044"
    assert len(manifest["history"]) == 1 and manifest["history"][0]["new_eras"] == ["0037", "0044", 8]


def test_too_few_new_eras_skip_the_comparison_with_the_reason(
    previous: Path, tiny_world: Path, tmp_path: Path, capsys
) -> None:
    out = tmp_path / "refreshed.pkl"
    assert (
        main(
            [
                "--data-dir",
                str(tiny_world),
                "--out",
                str(out),
                "--init-model",
                str(previous),
                "--refresh-test-eras",
                "8",
                *BUILD,
            ]
        )
        == 0
    )
    assert (
        "comparison skipped: needs at least 11 new labelled eras after 0036" in capsys.readouterr().out
        and out.is_file()
    )
    report = json.loads((tmp_path / "refreshed_report" / "report.json").read_text())
    assert report["models"] == {} and "the data has 8" in report["refresh"]["comparison"]["skipped"]
    assert "Comparison skipped" in (tmp_path / "refreshed_report" / "report.html").read_text()


def test_no_new_eras_is_a_clear_error(previous: Path, tmp_path: Path, caplog) -> None:
    earlier = json.loads((previous / "manifest.json").read_text())["settings"]["data_dir"]
    out = tmp_path / "m.pkl"
    assert main(["--data-dir", earlier, "--out", str(out), "--init-model", str(previous), *BUILD]) == 1
    assert "no new labelled eras" in caplog.text and "trained through era 0036" in caplog.text
    assert not out.exists()


def test_mismatched_features_and_preset_are_clear_errors(
    previous: Path, tiny_world: Path, tmp_path: Path, caplog
) -> None:
    out = str(tmp_path / "m.pkl")
    assert (
        main(
            [
                "--data-dir",
                str(tiny_world),
                "--out",
                out,
                "--init-model",
                str(previous),
                "--features",
                "feature_0001,feature_0002",
                *BUILD,
            ]
        )
        == 1
    )
    assert "resolve to 2 names where the previous model had 40" in caplog.text and "feature_0003" in caplog.text
    caplog.clear()
    args = ["--data-dir", str(tiny_world), "--out", out, "--init-model", str(previous), *BUILD, "--preset", "demo"]
    assert main(args) == 1
    assert "--preset 'demo' where the previous build had 'example'" in caplog.text


def test_other_data_is_a_clear_error(previous: Path, tmp_path: Path, caplog) -> None:
    other = write_world(tmp_path / "other", replace(TINY_WORLD, seed=8), progress=False)
    assert (
        main(["--data-dir", str(other), "--out", str(tmp_path / "m.pkl"), "--init-model", str(previous), *BUILD]) == 1
    )
    assert "is not the data the previous model" in caplog.text and "have other rows or ids" in caplog.text


def test_missing_artifacts_name_the_directory(tiny_world: Path, tmp_path: Path, caplog) -> None:
    assert (
        main(["--data-dir", str(tiny_world), "--out", str(tmp_path / "m.pkl"), "--init-model", str(tmp_path), *BUILD])
        == 1
    )
    assert f"--init-model {tmp_path}: no manifest.json there" in caplog.text


def _weights(estimator) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in estimator.network_.parameters()])


@pytest.mark.parametrize("estimator_class", [MLPBaseline, TSMixerExt])
def test_neural_refresh_fine_tunes_from_the_saved_weights(estimator_class, tiny_world: Path, tmp_path: Path) -> None:
    features = nd.resolve_features(tiny_world, "all")
    frame = nd.load_split(tiny_world / "train.parquet", features, nd.target_names(tiny_world), data_type="train")
    aux = aux_targets(frame, "target")
    eras = list(frame.era_order)
    params = {"max_epochs": 2, "eras_per_batch": 4, "n_valid_eras": 4, "embargo": 2, "progress": False}
    if estimator_class is TSMixerExt:
        params |= {"d": 8, "ff": 16, "n_block": 1, "context_dim": 4}
    estimator = estimator_class(**params).fit(frame, eras[:24], aux_targets=aux)
    member_class = TSMixerMember if estimator_class is TSMixerExt else MLPMember
    spec = member_class("net", estimator, "target", aux, 1, n_valid_eras=4, embargo=2)
    pipeline = FeaturePipeline(nd.feature_groups(tiny_world, features), **RAW_FEATURES).fit([(frame, eras[:24])])
    saved = Artifacts(
        {}, features, features, pipeline, [SavedMember(spec, 1.0, eras[23])], 0.0, 2, {e: "" for e in eras[:24]}
    )
    loaded = load_artifacts(save_artifacts(tmp_path / "artifacts", saved)).members[0]
    x = frame.features[frame.select_eras(eras[-2:])]
    np.testing.assert_array_equal(loaded.member.predict(x, None), estimator.predict(x))

    (refreshed,), steps = continue_members([loaded], [frame], eras, BuildConfig(refresh_epochs=2))
    assert steps["net"]["eras"] == [eras[24], eras[-1], len(eras) - 24] and steps["net"]["lr"] == pytest.approx(
        0.1 * estimator.lr
    )
    assert refreshed.last_era == eras[-1]
    start, tuned = _weights(loaded.member.estimator), _weights(refreshed.member.estimator)
    assert torch.equal(start, _weights(estimator)), "the saved member itself is left as it was"
    fresh = _weights(estimator_class(**params | {"seed": 1}).fit(frame, eras[:24], aux_targets=aux))
    assert 0 < (tuned - start).norm() < 0.5 * (fresh - start).norm(), "fine-tuning moves the saved weights a little"


def test_a_member_over_a_feature_subset_is_saved_with_its_subset(tiny_world: Path, tmp_path: Path) -> None:
    features = nd.resolve_features(tiny_world, "all")
    frame = nd.load_split(tiny_world / "train.parquet", features, ["target"], data_type="train")
    pipeline = FeaturePipeline(nd.feature_groups(tiny_world, features)).fit([(frame, frame.era_order)])
    spec = LightGBMMember(
        "lgbm_half", LGBMModel(num_boost_round=10, num_threads=1), "target", 1, features=features[::2], cv_trees=10
    )
    spec.fit([frame], pipeline, "holdout")
    saved = Artifacts(
        {},
        features,
        features,
        pipeline,
        [SavedMember(spec, 1.0, frame.era_order[-1])],
        0.0,
        2,
        {e: "" for e in frame.era_order},
    )
    loaded = load_artifacts(save_artifacts(tmp_path / "artifacts", saved)).members[0].member
    assert loaded.features == features[::2] and loaded.pipeline_.feature_names_ == spec.pipeline_.feature_names_
    rows = frame.select_eras(frame.era_order[-2:])
    np.testing.assert_array_equal(
        loaded.predict(frame.features[rows], frame.eras[rows]), spec.predict(frame.features[rows], frame.eras[rows])
    )
