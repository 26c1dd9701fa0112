"""Tests of the synthetic Numerai world: the file layout must match what numerapi downloads."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from pipeline import synthetic
from pipeline.synthetic import BENCHMARK_COLUMNS, DEFAULT_WORLD, FEATURE_GROUPS, WORLDS, WorldSpec, main, write_world
from tests.conftest import TINY_WORLD

TINY = WorldSpec(n_eras=30, n_validation_eras=8, rows_per_era=200, live_rows=150, n_features=40, seed=3)
FILES = ["train", "validation", "live"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_world(tmp_path_factory.mktemp("world"), TINY, progress=False)


@pytest.fixture(scope="module")
def frames(world: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(world / f"{name}.parquet") for name in FILES}


@pytest.fixture(scope="module")
def meta(world: Path) -> dict:
    return json.loads((world / "features.json").read_text())


def test_files_present(world: Path) -> None:
    expected = {"features.json", "oracle.parquet"} | {f"{n}.parquet" for n in FILES}
    expected |= {f"{n}_benchmark_models.parquet" for n in FILES}
    assert {p.name for p in world.iterdir()} == expected


def test_feature_sets(meta: dict) -> None:
    sets = meta["feature_sets"]
    all_ = sets["all"]
    assert len(all_) == TINY.n_features and len(set(all_)) == len(all_)
    assert set(sets["small"]) < set(sets["medium"]) < set(all_)
    assert len(sets["small"]) >= 5
    assert abs(len(sets["medium"]) - 0.28 * len(all_)) <= 1
    grouped = [f for g in FEATURE_GROUPS for f in sets[g]]
    assert sorted(grouped) == sorted(all_), "groups must partition 'all'"
    sizes = [len(sets[g]) for g in FEATURE_GROUPS]
    assert sizes[0] == max(sizes) and all(s >= 1 for s in sizes)


def test_schema(frames: dict[str, pd.DataFrame], meta: dict) -> None:
    features, targets = meta["feature_sets"]["all"], meta["targets"]
    for name, frame in frames.items():
        assert frame.index.name == "id"
        assert list(frame.columns) == ["era", "data_type", *features, *targets]
        assert (frame["data_type"] == name).all()
        assert (frame[features].dtypes == np.int8).all()
        values = frame[features].to_numpy()
        assert values.min() == 0 and values.max() == 4
        assert (frame[targets].dtypes == np.float32).all()
        assert frame.index.str.fullmatch(r"n[0-9a-f]{15}").all()
    assert targets[0] == "target" and "target_ender_20" in targets and "target_ender_60" in targets
    assert len(targets) == 1 + 2 * TINY.n_target_names


def test_ids_unique_across_files(frames: dict[str, pd.DataFrame]) -> None:
    ids = pd.concat([f.index.to_series() for f in frames.values()])
    assert ids.is_unique


def test_eras_ordered_and_contiguous(frames: dict[str, pd.DataFrame]) -> None:
    eras = pd.concat([f["era"] for f in frames.values()])
    assert eras.str.fullmatch(r"\d{4}").all()
    assert eras.is_monotonic_increasing
    numbers = sorted(int(e) for e in eras.unique())
    assert numbers == list(range(1, TINY.n_eras + 2))
    assert frames["train"]["era"].nunique() == TINY.n_train_eras
    assert frames["validation"]["era"].nunique() == TINY.n_validation_eras
    assert frames["live"]["era"].unique().tolist() == [f"{TINY.n_eras + 1:04d}"]
    assert len(frames["live"]) == TINY.live_rows
    counts = frames["train"].groupby("era").size()
    assert counts.between(0.89 * TINY.rows_per_era, 1.11 * TINY.rows_per_era).all() and counts.nunique() > 1


def test_features_are_per_era_quintiles(frames: dict[str, pd.DataFrame], meta: dict) -> None:
    train = frames["train"]
    shares = train.groupby("era")[meta["feature_sets"]["all"][0]].value_counts(normalize=True).unstack()
    varying = shares[shares[2] < 0.99]
    assert np.allclose(varying.to_numpy(), 0.2, atol=0.01)


def test_target_classes_and_ender(frames: dict[str, pd.DataFrame], meta: dict) -> None:
    labelled = pd.concat([frames["train"], frames["validation"]])
    labelled = labelled[labelled["target"].notna()]
    shares = labelled["target"].value_counts(normalize=True).sort_index()
    assert shares.index.tolist() == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert np.allclose(shares.to_numpy(), [0.05, 0.2, 0.5, 0.2, 0.05], atol=0.01)
    for column in meta["targets"]:
        values = labelled[column].dropna().unique()
        assert set(values) <= {0.0, 0.25, 0.5, 0.75, 1.0}, column
    pd.testing.assert_series_equal(labelled["target"], labelled["target_ender_20"], check_names=False)
    correlations = labelled[meta["targets"]].corr()["target"].drop(["target", "target_ender_20"])
    assert (correlations > 0.05).all() and correlations.max() > 0.5


def test_nans_where_promised(frames: dict[str, pd.DataFrame], meta: dict) -> None:
    targets = meta["targets"]
    train, validation = frames["train"], frames["validation"]
    assert train["target"].notna().all()
    aux = [t for t in targets if t not in ("target", "target_ender_20")]
    assert train[aux].isna().any().any(), "some auxiliary target rows are NaN"
    first_era = train[train["era"] == "0001"]
    assert first_era[aux].isna().all().any(), "some auxiliary targets start with whole NaN eras"
    last_eras = sorted(validation["era"].unique())[-TINY.n_unlabelled_eras :]
    unlabelled = validation["era"].isin(last_eras)
    assert validation.loc[unlabelled, targets].isna().all().all()
    assert validation.loc[~unlabelled, "target"].notna().all()
    assert frames["live"][targets].isna().all().all()


def test_missing_feature_eras(frames: dict[str, pd.DataFrame], meta: dict) -> None:
    features = meta["feature_sets"]["all"]
    data = pd.concat(frames.values())
    all_two = data.groupby("era")[features].agg(lambda c: bool((c == 2).all()))
    share = all_two.to_numpy().mean()
    assert 0 < share < 0.1
    # besides the runs, random features go missing in random eras
    assert (all_two.sum() > 0).sum() >= 3
    # at least one feature is missing over a run of consecutive eras
    runs = all_two.astype(int).rolling(2).sum().eq(2).any()
    assert runs.any()


def test_benchmark_files(world: Path, frames: dict[str, pd.DataFrame]) -> None:
    for name in FILES:
        bench = pd.read_parquet(world / f"{name}_benchmark_models.parquet")
        assert bench.index.name == "id"
        assert list(bench.columns) == ["era", *BENCHMARK_COLUMNS]
        assert bench.index.equals(frames[name].index)
        assert bench["era"].equals(frames[name]["era"])
        values = bench[list(BENCHMARK_COLUMNS)].to_numpy()
        assert values.min() >= 0 and values.max() <= 1


def test_oracle(world: Path, frames: dict[str, pd.DataFrame]) -> None:
    oracle = pd.read_parquet(world / "oracle.parquet")
    data = pd.concat(frames.values())
    assert oracle.index.name == "id" and list(oracle.columns) == ["era", "oracle", "learnable"]
    assert oracle.index.equals(data.index)
    assert oracle["oracle"].between(0, 1).all()
    labelled = data[data["target"].notna()]
    joined = labelled[["era", "target"]].join(oracle["oracle"])
    per_era = joined.groupby("era")[["oracle", "target"]].apply(lambda g: g["oracle"].corr(g["target"], "spearman"))
    assert (per_era > 0).mean() > 0.8
    # E[target | features] is calibrated: its mean matches the target mean
    assert abs(joined["oracle"].mean() - joined["target"].mean()) < 0.01
    bench = pd.read_parquet(world / "train_benchmark_models.parquet").join(oracle["oracle"])
    assert 0.1 < bench[BENCHMARK_COLUMNS[0]].corr(bench["oracle"], method="spearman") < 0.9


def test_deterministic(tmp_path: Path, world: Path) -> None:
    again = write_world(tmp_path / "again", TINY, progress=False)
    for path in world.iterdir():
        assert path.read_bytes() == (again / path.name).read_bytes(), path.name
    other = write_world(tmp_path / "other", WorldSpec(**{**TINY.__dict__, "seed": 4}), progress=False)
    a = pd.read_parquet(world / "train.parquet")
    b = pd.read_parquet(other / "train.parquet")
    assert not a.index.equals(b.index[: len(a)]) and not a.iloc[:, 2:].equals(b.iloc[:, 2:])


def test_row_groups_do_not_change_data(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frames: dict[str, pd.DataFrame]
) -> None:
    monkeypatch.setattr(synthetic, "_ROW_GROUP_ROWS", 1)  # one era per row group
    out = write_world(tmp_path / "one_era_groups", TINY, progress=False)
    assert pq.ParquetFile(out / "train.parquet").num_row_groups == TINY.n_train_eras
    pd.testing.assert_frame_equal(pd.read_parquet(out / "train.parquet"), frames["train"])


@pytest.mark.parametrize(
    ("field", "value", "option"),
    [
        ("n_eras", 2, "--eras"),
        ("n_validation_eras", 40, "--validation-eras"),
        ("n_features", 3, "--features"),
        ("n_target_names", 21, "--target-names"),
        ("rows_per_era", 0, "--rows"),
    ],
)
def test_spec_validation(field: str, value: int, option: str) -> None:
    with pytest.raises(ValueError, match=option):
        WorldSpec(**{**TINY.__dict__, field: value})


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(
        [
            str(tmp_path),
            "--eras",
            "8",
            "--validation-eras",
            "3",
            "--unlabelled-eras",
            "1",
            "--rows",
            "60",
            "--live-rows",
            "50",
            "--features",
            "16",
            "--target-names",
            "2",
            "--seed",
            "1",
            "--quiet",
        ]
    )
    meta = json.loads((tmp_path / "features.json").read_text())
    assert meta["targets"] == ["target", "target_agnes_20", "target_agnes_60", "target_ender_20", "target_ender_60"]
    assert pd.read_parquet(tmp_path / "validation.parquet")["era"].nunique() == 3
    with pytest.raises(SystemExit):
        main([str(tmp_path), "--features", "3"])
    assert "--features" in capsys.readouterr().err


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def oracle_figures(world: Path) -> list[float]:
    """The oracle's mean, spread and eight of its values. Its floats come from BLAS and vector kernels
    whose last bits differ between CPUs (AVX2 against AVX-512 gave another sha256 of the same world), so
    the oracle is compared to within 1e-6, not byte for byte; the data files, binned, stay exact."""
    oracle = pd.read_parquet(world / "oracle.parquet")["oracle"].to_numpy(dtype=np.float64)
    return [float(oracle.mean()), float(oracle.std()), *map(float, oracle[:: max(1, len(oracle) // 8)][:8])]


# sha256 of the files the generator wrote before the physics knobs, the learnable column and the
# v5.3 layout (pandas 2.3.2, pyarrow 21.0.0, as pinned): the data files and oracle values of a spec
# with the default physics must never change; as v5.2, neither do features.json and the benchmark files.
TINY_WORLD_SHA256 = {
    "train.parquet": "a6ada16b3537a22b1d57c86c179a1083a01bfb42f2dd20445ce2ed48ca3f73ff",
    "validation.parquet": "426e0e7160410eea251cf17eac9c94e7bd39cc904e281de7df9f4e88cbd1d4d0",
    "live.parquet": "414ee94287f6e6aadca8a310cc23258ddb95708f2e0ac58795ed42d8c7969fe5",
}
TINY_WORLD_V52_SHA256 = {
    "features.json": "388d1e925f25b0a29d4a0f524f962dc98428945159692ff9d8436fc84291c259",
    "train_benchmark_models.parquet": "4e44e9836419f61c5ceceeb6d58a5ee79ef1927bfec73dc816e43af92f1d16b1",
    "validation_benchmark_models.parquet": "a75f0cb76b17d74ba1d77981790baa52aa8f5550e939d8f086f73769636f2ab5",
    "live_benchmark_models.parquet": "e13c3113e592806cb6cf591fa6895ac09ef0cfca9f89fc12a160856699f04ebb",
}
TINY_WORLD_ORACLE = [
    0.50294244,
    0.024208660,
    0.49461865,
    0.50912684,
    0.51899749,
    0.48861945,
    0.46951202,
    0.49513784,
    0.49299866,
    0.50128055,
]
DEFAULT_WORLD_SHA256 = {
    "train.parquet": "48396bccba8e0d4525c6a1a551cca8c7cc8fb2b2a7a06190815a6c98fe0695d8",
    "validation.parquet": "e22de45825315ca3ce1461e716a8b45470924a341871f77e3fe21907f67e042b",
    "live.parquet": "6c399d20c2dd49433dff3a610e149b150cda51e4e80af72334c389180cc45ceb",
}
DEFAULT_WORLD_ORACLE = [
    0.49983994,
    0.022872151,
    0.49394515,
    0.48381087,
    0.41992944,
    0.51415598,
    0.53076160,
    0.48312140,
    0.49849275,
    0.50518739,
]


def test_the_tiny_world_is_byte_identical(tiny_world: Path, tmp_path: Path) -> None:
    assert {name: sha256(tiny_world / name) for name in TINY_WORLD_SHA256} == TINY_WORLD_SHA256
    assert oracle_figures(tiny_world) == pytest.approx(TINY_WORLD_ORACLE, rel=1e-6)
    v52 = write_world(tmp_path, dataclasses.replace(TINY_WORLD, data_version="v5.2"), progress=False)
    assert {name: sha256(v52 / name) for name in TINY_WORLD_V52_SHA256} == TINY_WORLD_V52_SHA256
    assert {name: sha256(v52 / name) for name in TINY_WORLD_SHA256} == TINY_WORLD_SHA256


@pytest.mark.slow
def test_the_default_world_is_byte_identical(tmp_path: Path) -> None:
    world = write_world(tmp_path, DEFAULT_WORLD, progress=False)
    assert {name: sha256(world / name) for name in DEFAULT_WORLD_SHA256} == DEFAULT_WORLD_SHA256
    assert oracle_figures(world) == pytest.approx(DEFAULT_WORLD_ORACLE, rel=1e-6)


def test_v53_layout(world: Path, meta: dict, tmp_path: Path) -> None:
    assert TINY.data_version == DEFAULT_WORLD.data_version == "v5.3"
    names = meta["feature_sets"]["all"]
    quantum = meta["feature_sets"]["quantum"]
    assert quantum == names[-len(quantum) :] and len(quantum) == round(807 / 2748 * len(names))
    assert BENCHMARK_COLUMNS == ("v53_lgbm_ender20", "v53_lgbm_ender60")
    v52 = write_world(tmp_path, dataclasses.replace(TINY, data_version="v5.2"), progress=False)
    assert "quantum" not in json.loads((v52 / "features.json").read_text())["feature_sets"]
    bench = pd.read_parquet(v52 / "validation_benchmark_models.parquet")
    assert list(bench.columns) == ["era", "v52_lgbm_ender20", "v52_lgbm_ender60"]
    pd.testing.assert_frame_equal(
        bench.set_axis(["era", *BENCHMARK_COLUMNS], axis=1),
        pd.read_parquet(world / "validation_benchmark_models.parquet"),
    )


def test_cli_world(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    size = ["--eras", "30", "--validation-eras", "6", "--rows", "80", "--live-rows", "50", "--features", "24"]
    main([str(tmp_path / "cli"), "--world", "mixed", *size, "--regime-block-eras", "5", "--quiet"])
    spec = dataclasses.replace(
        WORLDS["mixed"],
        n_eras=30,
        n_validation_eras=6,
        rows_per_era=80,
        live_rows=50,
        n_features=24,
        regime_block_eras=5,
    )
    direct = write_world(tmp_path / "direct", spec, progress=False)
    for name in ("train.parquet", "oracle.parquet", "features.json"):
        assert sha256(tmp_path / "cli" / name) == sha256(direct / name), name
    _, parsed, _ = synthetic._parse_args(
        [str(tmp_path), "--signal-groups", "wisdom,serenity", "--regime-block-random", "--regimes", "blocks"]
    )
    assert parsed == dataclasses.replace(
        DEFAULT_WORLD, signal_groups=("wisdom", "serenity"), regime_block_random=True, regimes="blocks"
    )
    for bad, option in ((["--world", "nope"], "--world"), (["--signal-groups", "nope"], "--signal-groups")):
        with pytest.raises(SystemExit):
            main([str(tmp_path), *bad])
        assert option in capsys.readouterr().err
