"""The feature pipeline: fitted on training eras only, the same transform in training and in the pickle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import data as nd
from pipeline.features import FeaturePipeline, correlation_clusters
from pipeline.models.lgbm import Int8RowSequence
from pipeline.models.networks import GroupMixerNet, scale_features
from pipeline.runtime import group_mixer_outputs, mixer_features, model_matrix, token_index


@pytest.fixture(scope="module")
def train(tiny_world: Path) -> nd.EraFrame:
    features = nd.resolve_features(tiny_world, "all")
    return nd.load_split(tiny_world / "train.parquet", features, ["target"], data_type="train")


@pytest.fixture(scope="module")
def groups(tiny_world: Path, train: nd.EraFrame) -> dict[str, str]:
    return nd.feature_groups(tiny_world, train.feature_names)


def with_missing_feature(frame: nd.EraFrame, feature: int, era: str) -> nd.EraFrame:
    """A copy of `frame` in which one feature is all 2 (missing) in one era."""
    features = frame.features.copy()
    features[frame.select_eras([era]), feature] = 2
    return nd.EraFrame(frame.path, frame.ids, frame.eras, features, frame.feature_names, frame.targets)


@pytest.mark.parametrize("missing", ["keep", "nan"])
def test_training_batches_equal_the_pickles_transform(train: nd.EraFrame, groups: dict[str, str], missing: str) -> None:
    frame = with_missing_feature(train, 3, train.era_order[5])
    pipeline = FeaturePipeline(groups, missing=missing).fit([(frame, frame.era_order)])
    runtime_rows = model_matrix(pipeline.transform_, frame.features, frame.eras)
    assert runtime_rows.shape == (len(frame), len(pipeline.feature_names_))
    # LightGBM reads training rows in batches that cut across eras, and single rows for bin bounds.
    sequence = Int8RowSequence(pipeline.inputs(frame), rows=None, batch_size=97)
    batches = np.vstack([sequence[i : i + 97] for i in range(0, len(sequence), 97)])
    np.testing.assert_allclose(batches, runtime_rows, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sequence[11], runtime_rows[11], rtol=1e-6, atol=1e-6)
    missing_by_era = frame.missing_feature_eras()
    assert missing_by_era.loc[frame.era_order[5]].iloc[3]
    expected_nan = (
        missing_by_era.loc[frame.eras].to_numpy() if missing == "nan" else np.zeros(frame.features.shape, bool)
    )
    np.testing.assert_array_equal(np.isnan(runtime_rows[:, : frame.features.shape[1]]), expected_nan)
    assert not np.isnan(runtime_rows[:, frame.features.shape[1] :]).any()


def test_a_feature_subset_chooses_raw_columns_in_training_and_in_the_pickle(
    train: nd.EraFrame, groups: dict[str, str]
) -> None:
    frame = with_missing_feature(train, 3, train.era_order[5])
    full = FeaturePipeline(groups, missing="nan").fit([(frame, frame.era_order)])
    chosen = [frame.feature_names[k] for k in (7, 3, 1)]
    subset = full.variant(columns=chosen)
    n_extra = len(full.transform_["extra_names"])
    assert subset.feature_names_ == [frame.feature_names[k] for k in (1, 3, 7)] + full.transform_["extra_names"], (
        "the data's order"
    )
    everything = model_matrix(full.transform_, frame.features, frame.eras)
    runtime_rows = model_matrix(subset.transform_, frame.features, frame.eras)
    np.testing.assert_array_equal(runtime_rows[:, :3], everything[:, [1, 3, 7]])
    np.testing.assert_array_equal(runtime_rows[:, 3:], everything[:, -n_extra:])
    assert np.isnan(runtime_rows[frame.select_eras([frame.era_order[5]]), 1]).all(), (
        "missing policy on the chosen columns"
    )
    sequence = Int8RowSequence(subset.inputs(frame), rows=None, batch_size=97)
    batches = np.vstack([sequence[i : i + 97] for i in range(0, len(sequence), 97)])
    np.testing.assert_allclose(batches, runtime_rows, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(sequence[11], runtime_rows[11], rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="columns must name features the pipeline was fitted on.*feature_nope"):
        full.variant(columns=["feature_nope"])


def test_era_features_are_group_statistics_of_the_rows_era(train: nd.EraFrame, groups: dict[str, str]) -> None:
    pipeline = FeaturePipeline(groups, clusters=False).fit([(train, train.era_order)])
    rows = train.select_eras(train.era_order[:2])
    x = model_matrix(pipeline.transform_, train.features[rows], train.eras[rows])
    extra = pd.DataFrame(x[:, len(train.feature_names) :], columns=pipeline.transform_["extra_names"])
    raw = pd.DataFrame(train.features[rows].astype(np.float64), columns=train.feature_names)
    for group in sorted(set(groups.values())):
        columns = [f for f in train.feature_names if groups[f] == group]
        mean = raw[columns].mean(axis=1)
        np.testing.assert_allclose(extra[f"{group}_mean"], mean, atol=1e-5)
        np.testing.assert_allclose(extra[f"{group}_std"], raw[columns].std(axis=1, ddof=0), atol=1e-4)
        era_mean = mean.groupby(train.eras[rows]).transform("mean")
        np.testing.assert_allclose(extra[f"{group}_mean_vs_era"], mean - era_mean, atol=1e-5)


def test_clusters_come_only_from_the_fit_eras(train: nd.EraFrame, groups: dict[str, str]) -> None:
    early = train.era_order[: len(train.era_order) // 2]
    scrambled = train.features.copy()
    later = ~np.isin(train.eras, early)
    scrambled[later] = np.random.default_rng(0).integers(
        0, 5, size=(int(later.sum()), scrambled.shape[1]), dtype=np.int8
    )
    noisy = nd.EraFrame(train.path, train.ids, train.eras, scrambled, train.feature_names, train.targets)
    on_early = FeaturePipeline(groups).fit([(train, early)]).transform_["cluster_avg"]
    np.testing.assert_array_equal(on_early, FeaturePipeline(groups).fit([(noisy, early)]).transform_["cluster_avg"])
    assert on_early is not None and (on_early > 0).sum(axis=0).min() >= 2, "clusters of two or more features"


def test_correlation_clusters_find_planted_clusters() -> None:
    rng = np.random.default_rng(1)
    factors = rng.normal(size=(5000, 2))
    x = np.column_stack([factors[:, k // 3] + 0.5 * rng.normal(size=5000) for k in range(6)] + [rng.normal(size=5000)])
    clusters = correlation_clusters(x, np.zeros(7, dtype=int), distance=0.6)
    assert sorted(map(list, clusters)) == [[0, 1, 2], [3, 4, 5]]


def test_bad_settings_are_named(train: nd.EraFrame, groups: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="missing policy must be one of"):
        FeaturePipeline(groups, missing="zero").fit([(train, train.era_order)])
    with pytest.raises(ValueError, match="features without a group entry"):
        FeaturePipeline({}).fit([(train, train.era_order)])


def test_group_mixers_are_cross_fitted_and_match_torch(tiny_world: Path, groups: dict[str, str]) -> None:
    features = nd.resolve_features(tiny_world, "all")
    aux = [t for t in nd.target_names(tiny_world) if t.endswith("_20") and t != "target_ender_20"][:2]
    frame = nd.load_split(tiny_world / "train.parquet", features, ["target", *aux], data_type="train")
    pipeline = FeaturePipeline(groups, clusters=False, group_stats=False, mixing=True, targets=["target", *aux]).fit(
        [(frame, frame.era_order)]
    )
    mixer = pipeline.transform_["mixer"]
    first, second = pipeline.mixer_halves_
    assert first and second and not first & second and first | second == set(frame.era_order)
    # Training rows of each half carry the other half's mixer; rows it never saw (live) the average.
    inputs = pipeline.inputs(frame)
    era = min(first)
    rows = frame.select_eras([era])
    np.testing.assert_allclose(inputs.mixed[rows], mixer_features(mixer, frame.features[rows], [1]), atol=1e-6)
    live = model_matrix(pipeline.transform_, frame.features[rows], frame.eras[rows])[:, len(features) :]
    np.testing.assert_allclose(live, mixer_features(mixer, frame.features[rows]), atol=1e-6)
    assert 0 < live.min() and live.max() < 1, "per-era ranks"
    # The numpy forward pass equals the network that was trained, in torch.
    model, x = mixer["models"][0], frame.features[rows[:50]]
    network = GroupMixerNet(mixer["index"], hidden=model["w1"].shape[-1], n_targets=1)
    weights = {"w1": model["w1"], "b1": model["b1"], "w2": model["w2"][:, :, None], "b2": model["b2"][:, None]}
    network.load_state_dict({name: torch.as_tensor(array) for name, array in weights.items()})
    with torch.no_grad():
        expected = network(scale_features(torch.as_tensor(x)))[:, :, 0]
    np.testing.assert_allclose(group_mixer_outputs(mixer, x, [0]), expected.T.numpy(), atol=1e-5)


def test_a_group_mixer_reads_only_its_own_group() -> None:
    """Changing one group's features changes that group's output only (padding reads zeros)."""
    torch.manual_seed(0)
    index = token_index([[0, 1, 2], [3, 4]], 5)
    network = GroupMixerNet(index, hidden=4, n_targets=2)
    x = torch.randint(0, 5, (6, 5)) / 2 - 1
    changed = x.clone()
    changed[:, 3:] = -changed[:, 3:] + 0.5
    with torch.no_grad():
        before, after = network(x), network(changed)
    assert before.shape == (2, 6, 2)
    assert torch.equal(before[0], after[0]) and not torch.allclose(before[1], after[1])
