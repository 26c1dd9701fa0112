"""Choosing on what Numerai pays: the blend's weights, rule, member selection and neutralization on
CORR (unchanged), BMC or the payout mix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.blend import choose_blend, choose_neutralization, cross_fold_blend, fit_blend
from pipeline.cli import main
from pipeline.config import BuildConfig
from pipeline.metrics import per_era_bmc, per_era_corr, per_era_corr_columns
from pipeline.objective import Objective, ScoredTarget, score_columns
from tests.conftest import write_foreign_layout

N_ERAS, ROWS = 20, 300


def two_members(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Out-of-fold scores of two members and the target: `a` is the benchmark with a little noise (high
    CORR, no contribution beyond the benchmark), `b` a signal the benchmark lacks (less CORR, more BMC)."""
    rng = np.random.default_rng(seed)
    eras = np.repeat([f"{e:04d}" for e in range(N_ERAS)], ROWS)
    shared, own = rng.standard_normal((2, N_ERAS * ROWS))
    target = 0.3 * shared + 0.15 * own + rng.standard_normal(N_ERAS * ROWS)
    benchmark = shared + 0.05 * rng.standard_normal(N_ERAS * ROWS)
    benchmark[: 2 * ROWS] = np.nan
    a = shared + 0.05 * rng.standard_normal(N_ERAS * ROWS)
    b = own + 0.3 * rng.standard_normal(N_ERAS * ROWS)
    return np.column_stack([a, b]), target, benchmark, eras


def test_scores_per_objective_are_numerais_own() -> None:
    oof, target, benchmark, eras = two_members()
    corr = per_era_corr_columns(oof, target, eras)
    pd.testing.assert_frame_equal(score_columns(oof, target, eras), corr)
    pd.testing.assert_frame_equal(score_columns(oof, ScoredTarget(target, benchmark, Objective("corr")), eras), corr)
    bmc = score_columns(oof, ScoredTarget(target, benchmark, Objective("bmc")), eras)
    assert len(bmc) == N_ERAS - 2, "only the eras the benchmark covers"
    covered = ~np.isnan(benchmark)
    np.testing.assert_allclose(
        bmc[1].to_numpy(), per_era_bmc(oof[covered, 1], target[covered], benchmark[covered], eras[covered]).to_numpy()
    )
    payout = score_columns(oof, ScoredTarget(target, benchmark, Objective("payout", 0.5, 2.0)), eras)
    pd.testing.assert_frame_equal(payout, 0.5 * corr.loc[bmc.index] + 2.0 * bmc)
    assert bmc[1].mean() > bmc[0].mean() and corr[0].mean() > corr[1].mean()


def test_the_blend_follows_the_objective() -> None:
    oof, target, benchmark, eras = two_members()
    folds = [np.unique(eras)[k::2] for k in range(2)]
    by_corr = fit_blend(oof, target, eras, "greedy")
    by_bmc = fit_blend(oof, ScoredTarget(target, benchmark, Objective("bmc")), eras, "greedy")
    assert by_corr[0] > by_corr[1] and by_bmc[1] > by_bmc[0], (by_corr, by_bmc)
    scored = ScoredTarget(target, benchmark, Objective("payout"))
    rule, table, fold_weights = choose_blend(oof, scored, eras, folds, reference=0)
    assert rule in (table["mean"].idxmax(), "best member") and table["eras"].max() == N_ERAS - 2
    per_era, weights = cross_fold_blend(oof, scored, eras, folds, rule=rule, reference=0)
    assert len(per_era) == N_ERAS - 2 and len(weights) == 2
    for chosen, refitted in zip(fold_weights, weights, strict=True):
        np.testing.assert_allclose(chosen, refitted)
    plain, _ = cross_fold_blend(oof, target, eras, folds)
    assert len(plain) == N_ERAS, "CORR is scored on every era"


def test_member_selection_prunes_on_the_objective() -> None:
    oof, target, benchmark, eras = two_members()
    # Against member a as the reference: b is well below it on CORR, above it on BMC.
    assert fit_blend(oof, target, eras, "equal", reference=0).tolist() == [1.0, 0.0]
    bmc = ScoredTarget(target, benchmark, Objective("bmc"))
    assert fit_blend(oof, bmc, eras, "equal", reference=0).tolist() == [0.5, 0.5]


def test_neutralization_is_chosen_on_the_objective() -> None:
    oof, target, benchmark, eras = two_members()
    features = np.column_stack([oof[:, 0] + np.random.default_rng(1).standard_normal(len(target)), oof[:, 1]])
    blended = oof[:, 0] + oof[:, 1]
    by_corr, _, corr_table, _ = choose_neutralization(blended, features, target, eras)
    by_bmc, _, bmc_table, _ = choose_neutralization(
        blended, features, ScoredTarget(target, benchmark, Objective("bmc")), eras
    )
    assert corr_table["eras"].max() == N_ERAS and bmc_table["eras"].max() == N_ERAS - 2
    assert by_bmc >= by_corr, "taking out the benchmark-like feature costs CORR and raises BMC"


def test_options_of_the_objective_are_checked(tmp_path: Path, caplog) -> None:
    problems = BuildConfig(objective="sharpe", corr_multiplier=-1.0).problems()
    assert any("--objective 'sharpe' is unknown" in p for p in problems)
    assert any("--corr-multiplier must be a finite number of 0 or more, got -1.0" in p for p in problems)
    assert "--objective payout needs" in " ".join(
        BuildConfig(objective="payout", corr_multiplier=0, mmc_multiplier=0).problems()
    )
    world = write_foreign_layout(tmp_path / "foreign", n_eras=40)
    code = main(["--data-dir", str(world), "--out", str(tmp_path / "m.pkl"), "--objective", "bmc", "--embargo", "2"])
    assert code == 1 and "--objective bmc scores the CV on BMC: no benchmark predictions" in caplog.text
    assert "train_benchmark_models.parquet" in caplog.text and not (tmp_path / "m.pkl").exists()


def test_default_objective_is_corr_with_numerais_multipliers() -> None:
    config = BuildConfig()
    assert config.scoring() == Objective("corr", 0.5, 2.0)
    rng = np.random.default_rng(3)
    eras = np.repeat(["a", "b"], 50)
    x, y = rng.random(100), rng.random(100)
    pd.testing.assert_series_equal(
        per_era_corr(x, y, eras), score_columns(x[:, None], y, eras)[0].rename("corr"), check_names=True
    )
    assert Objective("payout", 0.75, 1.5).describe() == "payout (0.75 x CORR + 1.5 x BMC)"
