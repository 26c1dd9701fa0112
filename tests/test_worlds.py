"""The physics knobs of the synthetic worlds, their learnable ceiling and the named family."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import synthetic
from pipeline.synthetic import WORLDS, WorldSpec, write_world
from pipeline.world_physics import REGIME_SIGN
from pipeline.worlds import DEFAULT_WORLD, tiny, world_spec

SMALL = WorldSpec(
    n_eras=40, n_validation_eras=10, n_unlabelled_eras=1, rows_per_era=400, live_rows=60, n_features=40, seed=5
)
ONLY = {
    "linear": dict(linear_weight=1.0, nonlinear_weight=0.0, interaction_weight=0.0, regime_weight=0.0),
    "nonlinear": dict(linear_weight=0.0, nonlinear_weight=1.0, interaction_weight=0.0, regime_weight=0.0),
    "interaction": dict(linear_weight=0.0, nonlinear_weight=0.0, interaction_weight=1.0, regime_weight=0.0),
    "regime": dict(linear_weight=0.0, nonlinear_weight=0.0, interaction_weight=0.0, regime_weight=1.0),
}


def spec_of(**changes: object) -> WorldSpec:
    return dataclasses.replace(SMALL, **changes)


def era_parts(spec: WorldSpec, era: int) -> tuple[np.ndarray, list[np.ndarray], np.ndarray, np.ndarray]:
    """One era drawn as write_world draws it: bins (F, n), the four signal parts, oracle, learnable."""
    st = synthetic._build_structure(spec)
    drawn = synthetic._draw_era(spec, st, era, None, True)
    u = (drawn.bins.astype(np.float32) - 2) * synthetic._U_SCALE
    parts = synthetic._signal_parts(st, drawn.bins, u, st.physics.linear_weights(st.terms.w_linear, era))
    return drawn.bins, parts, drawn.truth[0], drawn.truth[1]


def rank_corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(pd.Series(a).corr(pd.Series(b), method="spearman"))


def block_runs(signs: np.ndarray) -> list[int]:
    """Lengths of the runs of equal signs (era numbers 1.., index 0 unused)."""
    changes = np.flatnonzero(np.diff(signs[1:])) + 1
    return np.diff(np.concatenate([[0], changes, [len(signs) - 1]])).tolist()


@pytest.mark.parametrize("part", list(ONLY))
def test_each_weight_selects_its_part(part: str) -> None:
    bins, parts, oracle, _ = era_parts(spec_of(regimes="none", **ONLY[part]), era=3)
    index = list(ONLY).index(part)
    assert rank_corr(oracle, parts[index]) > 0.999, "the oracle is a monotone function of the only part"
    others = [abs(rank_corr(oracle, p)) for i, p in enumerate(parts) if i != index]
    assert max(others) < 0.5


def test_interaction_world_has_no_linear_signal() -> None:
    bins, _, oracle, _ = era_parts(spec_of(regimes="none", rows_per_era=3000, **ONLY["interaction"]), era=2)
    u = (bins.astype(np.float64) - 2).T
    design = np.column_stack([np.ones(len(u)), u])
    residual = oracle - design @ np.linalg.lstsq(design, oracle, rcond=None)[0]
    assert 1 - residual.var() / oracle.var() < 0.05, "pairwise products are invisible to a linear fit"


def test_deterministic_blocks_have_their_length() -> None:
    st = synthetic._build_structure(spec_of(n_eras=200, n_validation_eras=40, regimes="blocks", regime_block_eras=10))
    signs, runs = st.physics.regime_sign, block_runs(st.physics.regime_sign)
    assert set(np.unique(signs[1:])) == {-1.0, 1.0} and (st.physics.interaction_scale == 1).all()
    assert runs[0] <= 10 and runs[-1] <= 10 and set(runs[1:-1]) == {10}


def test_random_blocks_vary_around_their_length() -> None:
    st = synthetic._build_structure(
        spec_of(n_eras=400, n_validation_eras=40, regimes="blocks", regime_block_eras=10, regime_block_random=True)
    )
    runs = block_runs(st.physics.regime_sign)[1:-1]
    assert min(runs) >= 5 and max(runs) <= 15 and len(set(runs)) > 3
    assert 8 < np.mean(runs) < 12


def test_the_regime_part_flips_sign_with_its_block(tmp_path: Path) -> None:
    spec = spec_of(regimes="blocks", regime_block_eras=5, noise_sd=0.3, **ONLY["regime"])
    world = write_world(tmp_path, spec, progress=False)
    st = synthetic._build_structure(spec)
    train = pd.read_parquet(world / "train.parquet")
    u = (train[st.feature_names].to_numpy(np.float64) - 2) @ st.terms.w_regime
    per_era = pd.DataFrame({"era": train["era"], "u": u, "y": train["target"]}).groupby("era")
    corr = per_era[["u", "y"]].apply(lambda g: g["u"].corr(g["y"], method="spearman"))
    signs = st.physics.regime_sign[[int(e) for e in corr.index]]
    assert (np.sign(corr.to_numpy()) == signs).all() and corr.abs().min() > 0.5


def test_markov_regimes_scale_as_before() -> None:
    st = synthetic._build_structure(SMALL)
    states = np.unique(st.physics.regime_sign[1:])
    assert set(states) <= set(REGIME_SIGN) and len(states) > 1, "the default world's Markov chain"


@pytest.mark.parametrize("regimes", ["markov", "blocks"])
def test_learnable_takes_the_train_mean_of_the_regime_multiplier(regimes: str) -> None:
    spec = spec_of(regimes=regimes, regime_block_eras=6, **ONLY["regime"])
    st = synthetic._build_structure(spec)
    sign = st.physics.regime_sign
    mean = sign[1 : spec.n_train_eras + 1].mean()
    assert st.physics.learnable_scales[1] == pytest.approx(mean, abs=1e-6) and abs(mean) < 1
    for era in (1, spec.n_train_eras, spec.n_eras):
        _, _, oracle, learnable = era_parts(spec, era)
        assert rank_corr(oracle, learnable) == pytest.approx(np.sign(sign[era]) * np.sign(mean), abs=1e-6)


def test_learnable_is_the_oracle_without_era_varying_physics(tmp_path: Path) -> None:
    world = write_world(tmp_path, spec_of(regimes="none", signal_groups=("constitution", "charisma")), progress=False)
    truth = pd.read_parquet(world / "oracle.parquet")
    assert list(truth.columns) == ["era", "oracle", "learnable"]
    assert (truth["oracle"] == truth["learnable"]).all()


def test_drifting_weights_walk_and_freeze_at_the_last_train_era() -> None:
    spec = spec_of(n_features=80, n_eras=400, n_validation_eras=50, regimes="none", drift_share=0.25, drift_weights=2.0)
    st = synthetic._build_structure(spec)
    physics, w = st.physics, st.terms.w_linear
    assert len(physics.drift_features) == 20 and physics.drift_loading.size == 0
    assert np.array_equal(physics.drift_w[0], w[physics.drift_features])
    per_100 = (physics.drift_w[400] - physics.drift_w[0]).std() / 2
    assert 1.0 < per_100 < 3.0, "the walk's sd over 100 eras is about --drift-weights"
    fixed = np.setdiff1d(np.arange(80), physics.drift_features)
    assert np.array_equal(physics.linear_weights(w, 399)[fixed], w[fixed])
    assert np.array_equal(physics.linear_weights(w, None), physics.linear_weights(w, spec.n_train_eras))
    assert not np.array_equal(physics.linear_weights(w, 1), physics.linear_weights(w, None))

    small = spec_of(regimes="none", drift_share=0.5, drift_weights=3.0, **ONLY["linear"])
    _, _, oracle, learnable = era_parts(small, small.n_train_eras)
    assert np.array_equal(oracle, learnable)
    _, _, oracle, learnable = era_parts(small, 1)
    assert rank_corr(oracle, learnable) < 0.99


def test_drifting_loadings_change_a_feature_s_correlations() -> None:
    spec = spec_of(n_features=80, n_eras=300, n_validation_eras=40, drift_share=0.5, drift_loadings=0.5)
    st = synthetic._build_structure(spec)
    loadings = st.physics.drift_loading
    assert loadings.min() >= 0.05 and loadings.max() <= 0.95
    mates = {f: np.flatnonzero(st.cluster == st.cluster[f]) for f in st.physics.drift_features}
    f = max((np.ptp(loadings[1:, k]), f) for k, f in enumerate(st.physics.drift_features) if len(mates[f]) > 2)[1]
    j = list(st.physics.drift_features).index(f)
    low, high = int(np.argmin(loadings[1:, j])) + 1, int(np.argmax(loadings[1:, j])) + 1
    assert loadings[high, j] - loadings[low, j] > 0.3

    def mate_corr(era: int) -> float:
        bins = synthetic._draw_bins(np.random.default_rng(era), spec, st, era, 4000).astype(np.float64)
        others = bins[[m for m in mates[f] if m != f]].mean(axis=0)
        return float(np.corrcoef(bins[f], others)[0, 1])

    assert mate_corr(high) > mate_corr(low) + 0.1


def test_concentrated_signal_stays_in_its_groups(tmp_path: Path) -> None:
    groups = ("wisdom", "serenity")
    spec = spec_of(n_features=80, rows_per_era=2000, n_eras=12, n_validation_eras=2, signal_groups=groups)
    world = write_world(tmp_path, spec, progress=False)
    train = pd.read_parquet(world / "train.parquet")
    truth = pd.read_parquet(world / "oracle.parquet").loc[train.index]
    sets = pd.read_json(world / "features.json", typ="series")["feature_sets"]
    inside = [f for g in groups for f in sets[g]]
    corr = train[sets["all"]].corrwith(truth["oracle"], method="spearman").abs()
    assert corr.drop(inside).max() < 0.05, "features outside the signal groups carry no signal"
    assert corr[inside].max() > 0.15
    st = synthetic._build_structure(spec)
    signal = np.isin(np.arange(80), [st.feature_names.index(f) for f in inside])
    terms = st.terms
    assert not terms.w_linear[~signal].any() and not terms.w_regime[~signal].any()
    assert signal[terms.nl_features].all() and signal[terms.pair_a].all() and signal[terms.pair_b].all()
    assert (st.cluster[terms.pair_a] != st.cluster[terms.pair_b]).all()
    assert np.isin(terms.cpair_a, st.cluster[signal]).all() and not st.targets.w_own[~signal].any()


def test_a_single_group_of_one_cluster_still_has_pairs() -> None:
    st = synthetic._build_structure(dataclasses.replace(DEFAULT_WORLD, signal_groups=("intelligence",)))
    members = [st.feature_names.index(f) for f in st.groups["intelligence"]]
    assert len(np.unique(st.cluster[members])) == 1
    assert len(st.terms.pair_a) > 0 and np.isin(st.terms.pair_a, members).all()
    assert (st.terms.pair_a != st.terms.pair_b).all() and len(st.terms.cpair_a) == 0


def test_every_knob_is_deterministic(tmp_path: Path) -> None:
    spec = tiny(WORLDS["mixed"])
    a = write_world(tmp_path / "a", spec, progress=False)
    b = write_world(tmp_path / "b", spec, progress=False)
    for path in a.iterdir():
        assert path.read_bytes() == (b / path.name).read_bytes(), path.name
    c = write_world(tmp_path / "c", dataclasses.replace(spec, seed=spec.seed + 1), progress=False)
    assert (a / "train.parquet").read_bytes() != (c / "train.parquet").read_bytes()


def test_the_family() -> None:
    assert {"default", "regimes", "interactions", "drift", "concentrated", "numerai_level"} <= set(WORLDS)
    assert WORLDS["default"] is DEFAULT_WORLD and world_spec("drift") is WORLDS["drift"]
    seeds = [spec.seed for spec in WORLDS.values()]
    assert len(set(seeds)) == len(seeds) and all(
        s != 0 for name, s in zip(WORLDS, seeds, strict=True) if name != "default"
    )
    for name, spec in WORLDS.items():
        assert (spec.n_features, spec.rows_per_era, spec.n_train_eras) == (240, 1200, 240), name
    assert WORLDS["numerai_level"].n_validation_eras == 150 and WORLDS["regimes"].regimes == "blocks"
    assert WORLDS["drift"].drift_share == 0.25 and len(WORLDS["concentrated"].signal_groups) <= 2
    with pytest.raises(ValueError, match="unknown world 'nope'"):
        world_spec("nope")
    assert tiny(WORLDS["regimes"]).regime_block_eras < WORLDS["regimes"].regime_block_eras


@pytest.mark.parametrize(
    ("changes", "option"),
    [
        ({"regimes": "weekly"}, "--regimes"),
        ({"regime_block_eras": 0}, "--regime-block-eras"),
        ({"drift_share": 1.5}, "--drift-share"),
        ({"drift_loadings": -1.0}, "--drift-loadings"),
        ({"signal_groups": ("wisdom", "nonsense")}, "--signal-groups"),
        ({"signal_groups": ("intelligence",), "n_features": 16}, "--signal-groups"),
        ({"linear_weight": -0.1}, "--linear-weight"),
        ({"data_version": "v6"}, "--data-version"),
    ],
)
def test_physics_validation(changes: dict, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        spec_of(**changes)
