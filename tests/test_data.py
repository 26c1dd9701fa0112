from __future__ import annotations

import json
import logging
import re
import shutil
import time
from pathlib import Path

import numerapi
import numpy as np
import pandas as pd
import pytest
import requests

from pipeline import data as nd
from tests.conftest import write_foreign_layout
from tests.fake_numerai import FAST_RETRIES


def copy_world(world: Path, tmp_path: Path) -> Path:
    target = tmp_path / "world"
    shutil.copytree(world, target)
    return target


def test_feature_sets_resolve_by_name_group_and_list(tiny_world: Path) -> None:
    meta = json.loads((tiny_world / "features.json").read_text())
    assert nd.resolve_features(tiny_world, "small") == meta["feature_sets"]["small"]
    assert nd.resolve_features(tiny_world, "medium") == meta["feature_sets"]["medium"]
    group = next(name for name in meta["feature_sets"] if name not in ("small", "medium", "all"))
    assert nd.resolve_features(tiny_world, group) == meta["feature_sets"][group]
    assert nd.resolve_features(tiny_world, ["feature_b", "feature_a"]) == ["feature_b", "feature_a"]


def test_unknown_feature_set_names_file_and_choices(tiny_world: Path) -> None:
    with pytest.raises(nd.DataError, match=r"features\.json: unknown feature set 'huge'.*'medium'"):
        nd.resolve_features(tiny_world, "huge")


def test_all_falls_back_to_feature_columns_of_train(tmp_path: Path) -> None:
    world = write_foreign_layout(tmp_path / "foreign", n_features=55)
    names = nd.resolve_features(world, "all")
    assert len(names) == 55 and all(n.startswith("feature_") for n in names)


def test_load_split_keeps_int8_labelled_rows_sorted_by_era(tiny_world: Path, caplog: pytest.LogCaptureFixture) -> None:
    features = nd.resolve_features(tiny_world, "all")
    raw = pd.read_parquet(tiny_world / "validation.parquet")
    with caplog.at_level(logging.INFO):
        split = nd.load_split(tiny_world / "validation.parquet", features, ["target"], data_type="validation")
    labelled = raw[(raw["data_type"] == "validation") & raw["target"].notna()]
    assert split.features.dtype == np.int8 and split.features.shape == (len(labelled), len(features))
    assert split.dropped_rows == len(raw) - len(labelled) > 0
    assert "left out" in caplog.text and str(split.dropped_rows) in caplog.text
    assert list(split.eras) == sorted(split.eras)
    expected = labelled.loc[split.ids, features].to_numpy()
    np.testing.assert_array_equal(split.features, expected)
    np.testing.assert_array_equal(split.targets["target"].to_numpy(), labelled.loc[split.ids, "target"].to_numpy())


def test_load_split_reads_only_requested_columns(tiny_world: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    features = nd.resolve_features(tiny_world, "small")
    asked: list[list[str]] = []
    original = nd.pq.ParquetFile.read_row_group

    def spy(self, group, columns=None, **kwargs):
        asked.append(list(columns))
        return original(self, group, columns=columns, **kwargs)

    monkeypatch.setattr(nd.pq.ParquetFile, "read_row_group", spy)
    split = nd.load_split(tiny_world / "train.parquet", features, ["target"], data_type="train", batch_columns=3)
    n_groups = nd.pq.ParquetFile(tiny_world / "train.parquet").num_row_groups
    chunks = [features[i : i + 3] for i in range(0, len(features), 3)]
    assert asked == chunks * n_groups, "each row group is read a block of the requested columns at a time"
    whole = nd.load_split(tiny_world / "train.parquet", features, ["target"], data_type="train")
    np.testing.assert_array_equal(split.features, whole.features)


def resident_kb(directory: Path) -> int:
    """Resident kB of this process's mappings of files in `directory` (/proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if line[:1].isdigit() or line[:1] in "abcdef":
            inside = str(directory) in line
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_spilled_split_matches_memory_and_trains_the_same_trees(tiny_world: Path, tmp_path: Path) -> None:
    from pipeline.features import FeaturePipeline
    from pipeline.models.lgbm import LGBMModel

    features = nd.resolve_features(tiny_world, "all")
    path = tiny_world / "train.parquet"
    memory = nd.load_split(path, features, ["target"], data_type="train")
    spilled = nd.load_split(path, features, ["target"], data_type="train", spill_dir=tmp_path)
    assert not spilled.features.flags.writeable
    np.testing.assert_array_equal(spilled.features, memory.features)
    nd.release_pages(spilled.features)
    np.testing.assert_array_equal(spilled.features, memory.features)
    pd.testing.assert_frame_equal(spilled.missing_feature_eras(), memory.missing_feature_eras())
    assert list(tmp_path.iterdir()) == [], "the spill file is unlinked at once and lives as long as the matrix"
    groups = nd.feature_groups(tiny_world, features)
    predictions = []
    for frame in (memory, spilled):
        pipeline = FeaturePipeline(groups, group_stats=False).fit([(frame, frame.era_order)])
        member = LGBMModel({"objective": "regression", "num_leaves": 7, "verbosity": -1}, 10, num_threads=1)
        member.fit(pipeline.inputs(frame), frame.targets["target"].to_numpy(), feature_names=pipeline.feature_names_)
        if frame is spilled:
            assert resident_kb(tmp_path) == 0, (
                "the pipeline and LightGBM read the matrix on disk in batches and gave every page back"
            )
        predictions.append(member.predict(pipeline.matrix(frame.features, frame.eras)))
    np.testing.assert_array_equal(predictions[0], predictions[1])
    from pipeline.models.tsmixer import MLPBaseline

    MLPBaseline(hidden=(8,), max_epochs=1, n_valid_eras=2, embargo=1, progress=False).fit(spilled)
    assert resident_kb(tmp_path) == 0, "neural members stream whole-era batches from the matrix on disk"
    with pytest.raises(nd.DataError, match="spill directory .*absent does not exist"):
        nd.load_split(path, features, ["target"], data_type="train", spill_dir=tmp_path / "absent")


def test_missing_feature_eras_detects_all_twos(tiny_world: Path) -> None:
    features = nd.resolve_features(tiny_world, "all")
    split = nd.load_split(tiny_world / "train.parquet", features, ["target"], data_type="train")
    mask = split.missing_feature_eras()
    assert mask.to_numpy().any()
    for era, feature in list(mask.stack()[lambda s: s].index)[:5]:
        rows = split.select_eras([era])
        assert (split.features[rows, features.index(feature)] == 2).all()
    era, feature = mask.index[0], mask.columns[0]
    rows = split.select_eras([era])
    assert bool(mask.loc[era, feature]) == bool((split.features[rows, 0] == 2).all())


def rewrite(path: Path, change) -> None:
    frame = pd.read_parquet(path)
    change(frame).to_parquet(path)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda f: f.drop(columns=["era"]), r"train\.parquet: missing column 'era'"),
        (lambda f: f.drop(columns=["target"]), r"train\.parquet: missing column\(s\) target"),
        (lambda f: f.drop(columns=["feature_0001"]), r"train\.parquet: missing column\(s\) feature_0001"),
        (
            lambda f: f.assign(feature_0001=np.int8(7)),
            r"train\.parquet: column 'feature_0001' has values in 7\.\.7; expected integers 0\.\.4",
        ),
        (
            lambda f: f.assign(feature_0001=0.5),
            r"train\.parquet: column 'feature_0001' has type double; expected integers",
        ),
        (lambda f: pd.concat([f, f.iloc[:3]]), r"train\.parquet: duplicate id\(s\)"),
    ],
    ids=["no-era", "no-target", "no-feature", "out-of-range", "not-integer", "duplicate-ids"],
)
def test_bad_input_names_file_and_column(tiny_world: Path, tmp_path: Path, change, message: str) -> None:
    world = copy_world(tiny_world, tmp_path)
    rewrite(world / "train.parquet", change)
    features = json.loads((tiny_world / "features.json").read_text())["feature_sets"]["all"]
    assert "feature_0001" in features
    with pytest.raises(nd.DataError, match=message):
        nd.load_split(world / "train.parquet", features, ["target"], data_type="train")


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(nd.DataError, match=r"features\.json: file not found"):
        nd.resolve_features(tmp_path, "all")
    with pytest.raises(nd.DataError, match=r"train\.parquet: file not found"):
        nd.load_split(tmp_path / "train.parquet", ["feature_a"])


def test_integer_eras_become_zero_padded_strings_in_time_order(tmp_path: Path) -> None:
    world = write_foreign_layout(tmp_path / "foreign", n_eras=12)
    split = nd.load_split(world / "train.parquet", nd.resolve_features(world, "all"), data_type="train")
    assert list(split.era_order) == [f"{e:04d}" for e in range(1, 9)]


def test_download_fetches_missing_files_through_numerapi(tiny_world: Path, tmp_path: Path, fake_numerai) -> None:
    fake_numerai.serve_dir("v5.3", tiny_world)
    dest = tmp_path / "data"
    dest.mkdir()
    (dest / "features.json").write_text("{}")
    fetched = nd.download(dest)
    names = {p.name for p in fetched}
    assert "features.json" not in names, "a file already present is not downloaded again"
    assert {"train.parquet", "validation.parquet", "live.parquet"} <= names
    assert (dest / "train.parquet").read_bytes() == (tiny_world / "train.parquet").read_bytes()
    gets = [url for method, url, _ in fake_numerai.requests_seen if method == "GET"]
    assert not any(url.endswith("features.json") for url in gets)
    assert all(url.split("/")[-2] == "v5.3" for url in gets), "v5.3 is the default"
    assert all(isinstance(t, tuple) and None not in t for t in fake_numerai.timeouts_seen)


def test_download_of_v52_still_works(tiny_world: Path, tmp_path: Path, fake_numerai) -> None:
    fake_numerai.serve_dir("v5.2", tiny_world)
    fetched = nd.download(tmp_path, "v5.2", files=("features.json", "live.parquet"))
    assert [p.name for p in fetched] == ["features.json", "live.parquet"]
    assert (tmp_path / "live.parquet").read_bytes() == (tiny_world / "live.parquet").read_bytes()


def test_download_rejects_unknown_version(tmp_path: Path, fake_numerai) -> None:
    with pytest.raises(nd.DataError, match=r"numerapi lists no v9\.9/features\.json"):
        nd.download(tmp_path, "v9.9", napi=numerapi.NumerAPI())


def test_a_download_cut_off_part_way_resumes_where_it_stopped(tiny_world: Path, tmp_path: Path, fake_numerai) -> None:
    fake_numerai.serve_dir("v5.3", tiny_world)
    fake_numerai.fail("GET https://files.fake-numer.ai/v5.3/train.parquet", cut_after=1000)
    fake_numerai.fail("listDatasets", status=502)
    assert nd.download(tmp_path, files=("train.parquet",), policy=FAST_RETRIES) == [tmp_path / "train.parquet"]
    assert (tmp_path / "train.parquet").read_bytes() == (tiny_world / "train.parquet").read_bytes()
    assert not (tmp_path / "train.parquet.part").exists()
    seen = list(zip(fake_numerai.requests_seen, fake_numerai.headers_seen, strict=True))
    assert sum("listDatasets" in body.get("query", "") for (_, _, body), _ in seen) == 2, "the 502 was retried"
    ranges = [headers.get("Range") for (method, url, _), headers in seen if url.endswith("train.parquet")]
    assert ranges == [None, "bytes=1000-"]


@pytest.mark.parametrize(
    "match, error, call",
    [
        ("", requests.exceptions.ConnectionError, "listDatasets to api-tournament.numer.ai"),
        ("", requests.exceptions.ReadTimeout, "listDatasets to api-tournament.numer.ai"),
        ("GET", requests.exceptions.ReadTimeout, "download of v5.3/train.parquet to files.fake-numer.ai"),
    ],
)
def test_an_offline_or_stalled_download_is_a_data_error_naming_the_call(
    tiny_world: Path, tmp_path: Path, fake_numerai, match: str, error: type, call: str
) -> None:
    fake_numerai.serve_dir("v5.3", tiny_world)
    fake_numerai.fail(match, error=error, times=100)
    started = time.monotonic()
    with pytest.raises(
        nd.DataError, match=re.escape(f"downloading v5.3 into {tmp_path}: Numerai call {call} failed after 4 tries")
    ):
        nd.download(tmp_path, files=("train.parquet",), policy=FAST_RETRIES)
    assert time.monotonic() - started < 5
    assert not (tmp_path / "train.parquet").exists() and not (tmp_path / "train.parquet.part").exists()
