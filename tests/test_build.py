"""The whole build, end to end, through the command line."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from pipeline.build import load_data
from pipeline.cli import main
from pipeline.config import BuildConfig
from pipeline.feature_choice import PIPELINE_CONFIGS
from pipeline.members import MemberContext, NeuralMember
from pipeline.models.tsmixer import TSMixerExt
from pipeline.presets import EXAMPLE_MEMBER, GROUP_HALVES, PRESETS, TSMIXER_MEMBER, make_members
from pipeline.synthetic import write_world
from pipeline.verify import verify_pickle
from tests.conftest import TINY_WORLD, write_foreign_layout

REPO = Path(__file__).resolve().parents[1]


def test_build_writes_a_verified_pickle_and_report(tiny_world: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "model.pkl"
    code = main(["--data-dir", str(tiny_world), "--out", str(out), "--trees", "40", "--threads", "1"])
    printed = capsys.readouterr().out
    assert code == 0
    assert "lgbm_example" in printed and "verification PASSED" in printed
    report = json.loads((tmp_path / "model_report" / "report.json").read_text())
    figures = report["models"]["lgbm_example"]["validation"]
    assert set(figures) >= {"mean", "std", "sharpe", "max_drawdown", "eras"} and figures["eras"] > 0
    assert len(report["models"]["lgbm_example"]["validation_per_era"]) == figures["eras"]
    assert verify_pickle(out, tiny_world / "live.parquet").ok
    ablation = report["feature_pipeline"]["ablation"]
    assert set(ablation) == set(PIPELINE_CONFIGS) and all(v["eras"] > 0 for v in ablation.values())
    assert report["feature_pipeline"]["configuration"] in PIPELINE_CONFIGS, "one whole configuration"
    assert set(report["feature_pipeline"]["chosen"]) == {"missing", "clusters", "group_stats", "mixing"}
    html = (tmp_path / "model_report" / "report.html").read_text()
    assert "Feature pipeline" in html and "LightGBM settings search" in html
    trials = report["gbdt_search"]["lgbm_gbdt"]["trials"]
    kept = sorted(t["trial"] for t in trials if t["kept"])
    assert len(kept) == 2 and {"lgbm_gbdt_1", "lgbm_gbdt_2"} <= set(report["models"]), "the best two trials are members"
    assert {0, 1, 2} <= {t["trial"] for t in trials}, "the entry's settings and Numerai's two recipes are tried first"
    rules = report["models"]["ensemble"]["chosen"]["blend_rules_cv"]
    assert report["models"]["ensemble"]["chosen"]["blend_rule"] in rules and len(rules) == 5


def test_build_on_a_foreign_layout_with_binary_targets(tmp_path: Path, capsys, monkeypatch) -> None:
    world = write_foreign_layout(tmp_path / "foreign", n_features=60, n_eras=40)
    monkeypatch.chdir(tmp_path)
    out = Path("foreign.pkl")
    code = main(
        [
            "--data-dir",
            str(world),
            "--out",
            str(out),
            "--trees",
            "30",
            "--threads",
            "1",
            "--embargo",
            "2",
            "--era-stride",
            "1",
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "foreign.pkl").is_file(), "a relative --out is verified and written where asked"
    live = pd.read_parquet(world / "validation.parquet")
    predictions = pd.read_pickle(out)(live)
    assert predictions.index.equals(live.index) and predictions["prediction"].between(0, 1).all()


def test_build_fails_cleanly_on_bad_data(tmp_path: Path, caplog) -> None:
    world = write_foreign_layout(tmp_path / "foreign")
    out = tmp_path / "model.pkl"
    assert main(["--data-dir", str(world), "--out", str(out), "--feature-set", "medium"]) == 1
    assert "unknown feature set 'medium'" in caplog.text
    assert not out.exists()


def test_help_explains_every_option() -> None:
    proc = subprocess.run(
        [sys.executable, "build_model.py", "--help"], cwd=REPO, capture_output=True, text=True, check=True
    )
    for option in (
        "--data-dir",
        "--download",
        "--out",
        "--report-dir",
        "--feature-set",
        "--features",
        "--target",
        "--preset",
        "--embargo",
        "--cv-folds",
        "--cv-max-train-eras",
        "--drop-unstable",
        "--no-refit",
        "--era-stride",
        "--trees",
        "--seed",
        "--threads",
        "--init-model",
        "--refresh-trees",
        "--refresh-epochs",
        "--refresh-test-eras",
        "--spill-dir",
        "--tsmixer-search",
        "--tsmixer-search-budget",
    ):
        assert option in proc.stdout


@pytest.mark.slow
def test_default_build_from_the_embedded_world(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("NUMERAI_PIPELINE_CACHE", str(tmp_path / "cache"))
    assert main(["--out", str(tmp_path / "model.pkl")]) == 0


def test_rolling_cv_windows_reach_the_report(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "rolling.pkl"
    args = ["--data-dir", str(tiny_world), "--out", str(out), "--preset", "example", "--trees", "20", "--threads", "1"]
    spill = tmp_path / "spill"
    spill.mkdir()
    assert main(args + ["--cv-max-train-eras", "10", "--spill-dir", str(spill)]) == 0
    folds = json.loads((tmp_path / "rolling_report" / "report.json").read_text())["folds"]
    assert folds and all(fold["train_eras"] <= 10 for fold in folds)


def test_too_few_eras_for_the_embargo_is_a_clear_error(tmp_path: Path, caplog) -> None:
    world = write_foreign_layout(tmp_path / "short", n_eras=20)
    assert main(["--data-dir", str(world), "--out", str(tmp_path / "m.pkl"), "--trees", "10", "--threads", "1"]) == 1
    assert "14 training eras and 6 validation eras are too few for an embargo of 8 eras" in caplog.text
    assert "use --embargo 5 or less" in caplog.text, "advice that works (tests/test_reliability.py follows it)"


@pytest.mark.slow
def test_build_with_3000_foreign_features(tmp_path: Path) -> None:
    world = write_foreign_layout(tmp_path / "wide", n_features=3000, n_eras=36, rows=100)
    out = tmp_path / "wide.pkl"
    assert (
        main(
            [
                "--data-dir",
                str(world),
                "--out",
                str(out),
                "--preset",
                "example",
                "--trees",
                "20",
                "--embargo",
                "2",
                "--era-stride",
                "1",
                "--threads",
                "1",
            ]
        )
        == 0
    )
    assert out.is_file()


def test_bad_options_fail_before_any_data_is_read(tmp_path: Path) -> None:
    from pipeline.build import BuildConfig, build

    absent = tmp_path / "no_data_here"
    with pytest.raises(ValueError, match="--neutralization must be within 0..1, got 1.5"):
        build(BuildConfig(data_dir=absent, neutralization=1.5))
    with pytest.raises(ValueError, match="--era-stride must be at least 1, got 0"):
        build(BuildConfig(data_dir=absent, era_stride=0))
    with pytest.raises(ValueError, match="--spill-dir .*no_data_here is not a directory"):
        build(BuildConfig(data_dir=absent, spill_dir=absent))
    with pytest.raises(ValueError, match="--tsmixer-search must be a number of trials, at least 0 .*got -1"):
        build(BuildConfig(data_dir=absent, preset="standard", tsmixer_search=-1))
    with pytest.raises(ValueError, match="--tsmixer-search-budget must be a positive number of seconds, got 0"):
        build(BuildConfig(data_dir=absent, preset="standard", tsmixer_search=2, tsmixer_search_budget=0))
    with pytest.raises(
        ValueError, match="--tsmixer-search needs a preset with a TSMixer-Ext member .*preset 'example' has none"
    ):
        build(BuildConfig(data_dir=absent, preset="example", tsmixer_search=2))


def test_tsmixer_search_table_reaches_the_report_and_its_choice_is_trained(
    tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """A preset cut down to the example model and a TSMixer-Ext of 2 epochs keeps the build to seconds."""
    monkeypatch.setitem(
        PRESETS,
        "standard",
        (
            EXAMPLE_MEMBER,
            replace(TSMIXER_MEMBER, params=TSMIXER_MEMBER.params | {"max_epochs": 2, "patience": 1}),
        ),
    )
    fits = []
    neural_fit = NeuralMember._fit

    def recording_fit(spec: NeuralMember, frame, eras) -> None:
        fits.append((frame.data_type, list(eras), spec.estimator.get_params()))
        neural_fit(spec, frame, eras)

    monkeypatch.setattr(NeuralMember, "_fit", recording_fit)
    out = tmp_path / "searched.pkl"
    args = [
        "--data-dir",
        str(tiny_world),
        "--out",
        str(out),
        "--preset",
        "standard",
        "--trees",
        "20",
        "--threads",
        "1",
        "--embargo",
        "2",
        "--no-refit",
        "--tsmixer-search",
        "2",
    ]
    assert main(args) == 0
    assert "tsmixer_ext search: 2 of 2 trials" in capsys.readouterr().out
    report = json.loads((tmp_path / "searched_report" / "report.json").read_text())
    search = report["tsmixer_search"]
    assert search["member"] == "tsmixer_ext" and len(search["trials"]) == 2
    assert sum(trial["best"] for trial in search["trials"]) == 1 and search["trials"][0]["best"]
    assert {"n_block", "d", "ff", "dropout", "lr", "era_context", "head", "cv_corr_mean", "seconds"} <= set(
        search["trials"][0]
    )
    preset = TSMixerExt(**TSMIXER_MEMBER.params).get_params()
    trial_0 = next(trial for trial in search["trials"] if trial["trial"] == 0)
    assert all(trial_0[name] == preset[name] for name in search["space"]), "trial 0 is the preset's settings"
    first_cv_train_last = report["folds"][0]["train_last"]
    assert search["eras"][1] == first_cv_train_last, "the search only sees the first CV fold's training eras"
    searched_eras = [eras for _, eras, _ in fits[: 2 * len(search["folds"])]]
    assert max(max(eras) for eras in searched_eras) < report["folds"][0]["validation_first"]
    assert report["models"]["tsmixer_ext"]["chosen"]["searched"] == search["chosen"]
    *_, (split, _, holdout_params) = fits
    assert split == "train" and {name: holdout_params[name] for name in search["chosen"]} == search["chosen"]
    assert "TSMixer-Ext hyperparameter search" in (tmp_path / "searched_report" / "report.html").read_text()


def test_a_build_on_the_v53_layout_with_the_quantum_set(tmp_path: Path) -> None:
    world = write_world(tmp_path / "v53", replace(TINY_WORLD, data_version="v5.3"), progress=False)
    sets = json.loads((world / "features.json").read_text())["feature_sets"]
    quantum = sets["quantum"]
    assert 0 < len(quantum) < len(sets["all"])
    assert "v53_lgbm_ender20" in pd.read_parquet(world / "live_benchmark_models.parquet").columns
    out = tmp_path / "quantum.pkl"
    args = ["--data-dir", str(world), "--out", str(out), "--feature-set", "quantum", "--preset", "example"]
    assert main([*args, "--trees", "30", "--threads", "1", "--objective", "payout"]) == 0
    report = json.loads((tmp_path / "quantum_report" / "report.json").read_text())
    assert report["feature_names"] == quantum and report["settings"]["feature_set"] == "quantum"
    assert report["models"]["ensemble"]["numerai"]["validation"]["bmc"]["eras"] > 0, "BMC against v53_lgbm_ender20"
    assert verify_pickle(out, world / "live.parquet").ok
    # The presets' members over feature groups keep their halves of v5.3's quantum features.
    features, train, _ = load_data(BuildConfig(data_dir=world, feature_set="quantum"), world, ["target"])
    context = MemberContext(train, "target", feature_sets=sets)
    halves = {m.name: m for m in make_members(PRESETS["standard"], context) if getattr(m, "features", None)}
    assert set(halves) == {"lgbm_deep_a", "lgbm_deep_b"}
    for k, member in enumerate(halves.values()):
        other_half = {f for group in GROUP_HALVES[1 - k] for f in sets[group]}
        assert member.features == [f for f in features if f not in other_half]
        assert 0 < len(member.features) < len(quantum)
