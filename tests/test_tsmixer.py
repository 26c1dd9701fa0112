"""TSMixer-Ext and the MLP baseline: shapes, losses, training on eras, and the numpy forward pass."""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from pipeline import data as nd
from pipeline import runtime
from pipeline.metrics import per_era_corr
from pipeline.models.networks import MLPNet, TSMixerNet, bin_one_hot, feature_bins
from pipeline.models.tokens import cluster_tokens, token_groups
from pipeline.models.training import EraBatches, bias_corrected_ema, era_loss, lr_factor, score_batches
from pipeline.models.tsmixer import MLPBaseline, TSMixerExt, n_parameters, search
from pipeline.verify import write_verified_pickle
from tests.conftest import write_foreign_layout

SMALL = {
    "d": 8,
    "ff": 16,
    "context_dim": 4,
    "token_size": 3,
    "bin_embedding": True,
    "lr": 3e-3,
    "max_epochs": 3,
    "patience": 2,
    "progress": False,
}
MLP_SMALL = {"hidden": (16, 8), "max_epochs": 3, "patience": 2, "progress": False}


@pytest.fixture(scope="module")
def world(tiny_world: Path) -> dict:
    features = nd.resolve_features(tiny_world, "all")
    targets = nd.target_names(tiny_world)
    train = nd.load_split(tiny_world / "train.parquet", features, targets, data_type="train")
    return {
        "train": train,
        "features": features,
        "aux": [t for t in targets if t != "target"],
        "sets": nd.read_features_json(tiny_world)["feature_sets"],
    }


@pytest.fixture(scope="module")
def fitted(world: dict) -> TSMixerExt:
    return TSMixerExt(**SMALL, feature_sets=world["sets"]).fit(world["train"], aux_targets=world["aux"])


def test_token_groups_cover_every_feature_once_in_chunks(world: dict) -> None:
    tokens = token_groups(world["features"], world["sets"], max_group_size=5)
    flat = sorted(i for t in tokens for i in t)
    assert flat == list(range(len(world["features"])))
    assert max(len(t) for t in tokens) <= 5
    group_of = {f: g for g, names in world["sets"].items() if g not in ("small", "medium", "all") for f in names}
    for members in tokens:
        assert len({group_of[world["features"][i]] for i in members}) == 1


def test_token_groups_fall_back_to_contiguous_chunks() -> None:
    tokens = token_groups([f"f{i}" for i in range(10)], {"everything_else": []}, max_group_size=4)
    assert tokens == [[0, 1, 2, 3], [4, 5, 6], [7, 8, 9]]
    with pytest.raises(ValueError, match="max_group_size"):
        token_groups(["a"], None, max_group_size=0)


def test_cluster_tokens_recover_correlated_clusters_within_groups() -> None:
    """Columns of two latent clusters, interleaved, come back as two tokens; groups never merge."""
    rng = np.random.default_rng(0)
    factors = rng.normal(size=(2000, 2))
    cluster_of = np.array([0, 1] * 6)
    x = factors[:, cluster_of] + 0.5 * rng.normal(size=(2000, 12))
    bins = np.argsort(np.argsort(x, axis=0), axis=0) * 5 // 2000
    tokens = cluster_tokens(bins.astype(np.int8), [list(range(10)), [10, 11]], token_size=5)
    assert sorted(map(sorted, tokens)) == [[0, 2, 4, 6, 8], [1, 3, 5, 7, 9], [10, 11]]
    assert max(len(t) for t in cluster_tokens(bins, [list(range(12))], token_size=2)) <= 4
    with pytest.raises(ValueError, match="token_size"):
        cluster_tokens(bins, [list(range(12))], token_size=0)


def test_clustered_tokens_look_only_at_fit_eras(world: dict) -> None:
    train = world["train"]
    model = TSMixerExt(**SMALL | {"max_epochs": 1}, feature_sets=world["sets"]).fit(train)
    assert sorted(i for t in model.tokens_ for i in t) == list(range(len(world["features"])))
    rng = np.random.default_rng(1)
    shuffled = copy.copy(train)
    shuffled.features = train.features.copy()
    rows = train.select_eras(model.valid_eras_)
    shuffled.features[rows] = rng.integers(0, 5, size=(len(rows), len(world["features"])), dtype=np.int8)
    again = TSMixerExt(**SMALL | {"max_epochs": 1}, feature_sets=world["sets"]).fit(shuffled)
    assert again.tokens_ == model.tokens_


@pytest.mark.parametrize("era_context", [True, False])
def test_network_shapes(era_context: bool) -> None:
    torch.manual_seed(0)
    tokens = token_groups([f"f{i}" for i in range(13)], None, max_group_size=4)
    net = TSMixerNet(runtime.token_index(tokens, 13), 13, 8, 2, 16, 4, era_context, True, 0.0, n_main=5, n_aux=3)
    x, row_era = torch.randint(0, 5, (20, 13)) / 2 - 1, torch.tensor([0] * 12 + [1] * 8)
    main, aux = net(x, row_era, 2)
    assert main.shape == (20, 5) and aux.shape == (20, 3)
    for one_hot in (False, True):
        main, aux = MLPNet(13, [8], 0.0, one_hot, n_main=1, n_aux=0)(x, row_era, 2)
        assert main.shape == (20, 1) and aux.shape == (20, 0)


def test_bin_embedding_learns_a_value_per_feature_and_bin() -> None:
    """Each (feature, bin) has its own vector and padding contributes nothing, so a U-shaped
    response of one feature (no linear part) is representable by the token embedding alone."""
    torch.manual_seed(0)
    tokens = token_groups([f"f{i}" for i in range(5)], None, max_group_size=3)
    net = TSMixerNet(runtime.token_index(tokens, 5), 5, 4, 1, 8, 4, False, True, 0.0, n_main=5, n_aux=0)
    assert tuple(net.bin_w.shape) == (2, 3, 5, 4)
    assert torch.all(net.bin_w[1, 2] == 0)
    with torch.no_grad():
        net.bin_w.zero_()
        net.bin_w[0, 1, 0, 0] = net.bin_w[0, 1, 4, 0] = 1.0
    x = torch.zeros(5, 5)
    x[:, 1] = torch.arange(5) / 2 - 1
    bins = torch.cat([feature_bins(x), torch.full((5, 1), 5)], 1)
    summed = torch.einsum("ngpb,gpbd->ngd", bin_one_hot(bins[:, net.index]), net.bin_w)
    assert summed[:, 0, 0].tolist() == [1.0, 0.0, 0.0, 0.0, 1.0]
    assert torch.all(summed[:, 1] == 0)


def test_lr_factor_warms_up_then_decays_to_the_floor() -> None:
    factors = [lr_factor(step, 4, 20) for step in range(25)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert all(a >= b for a, b in zip(factors[3:], factors[4:], strict=False))
    assert factors[20] == pytest.approx(0.05) and factors[24] == pytest.approx(0.05)


def test_era_context_uses_only_the_rows_own_era() -> None:
    torch.manual_seed(0)
    tokens = token_groups([f"f{i}" for i in range(6)], None, max_group_size=3)
    net = TSMixerNet(runtime.token_index(tokens, 6), 6, 4, 1, 8, 4, True, True, 0.0, n_main=5, n_aux=0).eval()
    x = torch.randint(0, 5, (10, 6)) / 2 - 1
    row_era = torch.tensor([0] * 5 + [1] * 5)
    changed = x.clone()
    changed[5:] = torch.randint(0, 5, (5, 6)) / 2 - 1
    first, _ = net(x, row_era, 2)
    second, _ = net(changed, row_era, 2)
    assert torch.allclose(first[:5], second[:5])
    assert not torch.allclose(first[5:], second[5:])


def test_aux_loss_ignores_nan_labels(world: dict) -> None:
    model = TSMixerExt(**SMALL)
    batch = {
        "main": torch.tensor([0.0, 0.25, 1.0, 0.5]),
        "aux": torch.tensor([[0.5, np.nan], [np.nan, np.nan], [1.0, 0.0], [np.nan, 0.75]]),
        "row_era": torch.zeros(4, dtype=torch.long),
        "n_eras": 1,
    }
    main = torch.zeros(4, 5, requires_grad=True)
    aux = torch.full((4, 2), 0.3, requires_grad=True)
    loss = era_loss(main, aux, batch, model.train_settings())
    loss.backward()
    assert torch.isfinite(loss)
    nan = torch.isnan(batch["aux"])
    assert torch.all(aux.grad[nan] == 0) and torch.all(aux.grad[~nan] != 0)
    assert np.isnan(world["train"].targets[world["aux"]].to_numpy()).any()


def test_fit_with_nan_aux_targets_gives_finite_predictions(world: dict, fitted: TSMixerExt) -> None:
    train = world["train"]
    pred = fitted.predict(train.features, train.eras)
    assert pred.shape == (len(train),) and np.isfinite(pred).all()
    assert 0 <= pred.min() and pred.max() <= 1 and pred.std() > 0
    assert np.isfinite(fitted.history_["train_loss"]).all()
    padding = fitted.network_.index >= len(fitted.feature_names_)
    assert padding.any()
    assert torch.all(fitted.network_.embed_w[padding] == 0) and torch.all(fitted.network_.bin_w[padding] == 0)
    assert n_parameters(fitted) == sum(p.numel() for p in fitted.network_.parameters()) - int(padding.sum()) * 8 * 6


def test_binary_targets_map_to_the_outer_classes(tmp_path: Path) -> None:
    directory = write_foreign_layout(tmp_path / "foreign", n_features=20, n_eras=40, rows=150)
    features = nd.resolve_features(directory, "everything")
    train = nd.load_split(directory / "train.parquet", features, ["target"], data_type="train")
    assert set(np.unique(train.targets["target"])) == {0.0, 1.0}
    model = TSMixerExt(**SMALL | {"max_epochs": 6, "lr": 3e-3}, n_valid_eras=6, embargo=2).fit(train)
    main, _ = model.network_(torch.zeros(3, len(features)), torch.zeros(3, dtype=torch.long), 1)
    probs = torch.softmax(main, 1)[0]
    assert probs[0] + probs[4] > 0.8
    pred = model.predict(train.features, train.eras)
    rows = train.select_eras(model.fit_eras_)
    assert per_era_corr(pred[rows], train.targets["target"].to_numpy()[rows], train.eras[rows]).mean() > 0.05
    reg = TSMixerExt(**SMALL, head="regression", n_valid_eras=6, embargo=2).fit(train)
    assert np.isfinite(reg.predict(train.features)).all()


def test_same_seed_same_predictions(world: dict, fitted: TSMixerExt) -> None:
    train = world["train"]
    again = TSMixerExt(**SMALL, feature_sets=world["sets"]).fit(train, aux_targets=world["aux"])
    other = TSMixerExt(**SMALL, feature_sets=world["sets"], seed=1).fit(train, aux_targets=world["aux"])
    first = fitted.predict(train.features, train.eras)
    np.testing.assert_array_equal(first, again.predict(train.features, train.eras))
    assert not np.allclose(first, other.predict(train.features, train.eras))


def test_bias_corrected_ema_weighs_the_steps_seen_exponentially() -> None:
    layer = torch.nn.Linear(1, 1, bias=False)
    averaged = torch.optim.swa_utils.AveragedModel(layer, multi_avg_fn=bias_corrected_ema(0.5))
    steps = [1.0, 3.0, 7.0]
    for value in steps:
        layer.weight.data.fill_(value)
        averaged.update_parameters(layer)
    weights = 0.5 ** np.arange(len(steps))[::-1]
    assert averaged.module.weight.item() == pytest.approx(float(np.dot(weights, steps) / weights.sum()))


@pytest.mark.parametrize("ema_decay", [0.0, 0.9])
def test_early_stopping_keeps_the_best_validation_epoch(world: dict, ema_decay: float) -> None:
    """With a weight average, the averaged weights are the ones scored and kept."""
    train = world["train"]
    model = MLPBaseline(hidden=(16,), lr=3e-2, max_epochs=12, patience=3, ema_decay=ema_decay, progress=False).fit(
        train
    )
    history = model.history_
    assert model.best_epoch_ == int(history.loc[history["valid_corr"].idxmax(), "epoch"])
    assert len(history) == min(model.max_epochs, model.best_epoch_ + model.patience)
    valid = EraBatches.from_frame(train, model.valid_eras_, "target", [])
    scores = score_batches(model.network_, valid, torch.device("cpu"), model.train_settings())
    assert scores.mean() == pytest.approx(model.best_valid_corr_)
    assert max(model.fit_eras_) < min(model.valid_eras_)
    gap = list(train.era_order).index(min(model.valid_eras_)) - list(train.era_order).index(max(model.fit_eras_)) - 1
    assert gap == 8
    if ema_decay:
        plain = MLPBaseline(**model.get_params() | {"ema_decay": 0.0}).fit(train)
        assert not np.allclose(plain.predict(train.features), model.predict(train.features))


def _compare(model, train: nd.EraFrame) -> None:
    rows = train.select_eras(train.era_order[-3:])
    features, eras = train.features[rows], train.eras[rows]
    member = model.export("m")
    expected = model.predict(features, eras)
    got = runtime.neural_member_scores(member, features.astype(np.float32), eras)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    last = eras == eras[-1]
    x = torch.from_numpy((features[last].astype(np.float32) - 2) / 2)
    with torch.no_grad():
        main_t, aux_t = model.network_(x, torch.zeros(int(last.sum()), dtype=torch.long), 1)
    if member["config"]["architecture"] == "tsmixer":
        index = runtime.token_index(member["config"]["tokens"], len(model.feature_names_))
        main_n, aux_n = runtime.tsmixer_forward(member["arrays"], member["config"], x.numpy(), index)
    else:
        main_n, aux_n = runtime.mlp_forward(member["arrays"], member["config"], x.numpy())
    np.testing.assert_allclose(main_n, main_t.numpy(), atol=1e-5, rtol=0)
    np.testing.assert_allclose(aux_n, aux_t.numpy(), atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "params",
    [
        {"era_context": True, "head": "ce"},
        {"era_context": False, "head": "ce", "bin_embedding": False, "cluster_tokens": False},
        {"era_context": True, "head": "regression", "n_block": 3},
        {"era_context": True, "head": "ce", "aux_weight": 0.3, "corr_weight": 0.5, "eras_per_batch": 3},
    ],
)
def test_numpy_forward_matches_torch(world: dict, params: dict) -> None:
    model = TSMixerExt(**SMALL | {"max_epochs": 2} | params, feature_sets=world["sets"])
    _compare(model.fit(world["train"], aux_targets=world["aux"][:3]), world["train"])


def test_numpy_forward_in_row_chunks_matches_torch(
    world: dict, fitted: TSMixerExt, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The blocks run on chunks of rows after the whole era's context: 7-row chunks, the last one short."""
    monkeypatch.setattr(runtime, "MIXER_ROWS", 7)
    _compare(fitted, world["train"])


@pytest.mark.parametrize(("head", "one_hot"), [("ce", False), ("regression", False), ("ce", True)])
def test_numpy_mlp_matches_torch(world: dict, head: str, one_hot: bool) -> None:
    model = MLPBaseline(**MLP_SMALL | {"max_epochs": 2}, head=head, one_hot=one_hot)
    _compare(model.fit(world["train"], aux_targets=world["aux"][:2]), world["train"])


def test_exported_member_predicts_and_pickles(
    world: dict, fitted: TSMixerExt, tiny_world: Path, tmp_path: Path
) -> None:
    member = fitted.export("tsmixer_ext")
    for array in member["arrays"].values():
        assert isinstance(array, np.ndarray) and array.dtype == np.float32
    mlp = MLPBaseline(**MLP_SMALL).fit(world["train"]).export("mlp", weight=0.5)
    predict = runtime.make_predict({"feature_names": world["features"], "members": [member, mlp]})
    live = pd.read_parquet(tiny_world / "live.parquet")
    out = predict(live)
    assert type(out) is pd.DataFrame and list(out.columns) == ["prediction"] and out.index.name == "id"
    assert len(out) == len(live) and out["prediction"].between(0, 1).all() and out["prediction"].std() > 0
    report = write_verified_pickle(predict, tmp_path / "m.pkl", tiny_world / "live.parquet")
    assert report.ok and (tmp_path / "m.pkl").is_file()


def test_bad_options_raise_value_errors(world: dict) -> None:
    with pytest.raises(ValueError, match="head"):
        TSMixerExt(head="softmax").fit(world["train"])
    with pytest.raises(ValueError, match="aux_targets|target"):
        TSMixerExt(**SMALL).fit(world["train"], aux_targets=["target_nope_20"])
    with pytest.raises(ValueError, match="ema_decay"):
        MLPBaseline(**MLP_SMALL, ema_decay=1.0).fit(world["train"])
    with pytest.raises(ValueError, match="not fitted"):
        TSMixerExt().predict(world["train"].features)
    with pytest.raises(ValueError, match="unknown"):
        search(world["train"], space={"width": [1]})


def test_search_returns_a_table_within_budget(world: dict) -> None:
    space = {"era_context": [True, False], "head": ["ce", "regression"]}
    table = search(world["train"], space=space, base_params=SMALL | {"max_epochs": 1}, n_trials=3, n_splits=1)
    assert len(table) == 3
    assert {"era_context", "head", "cv_corr_mean", "cv_sharpe", "seconds"} <= set(table.columns)
    assert table["cv_corr_mean"].is_monotonic_decreasing
    assert (
        len(
            search(
                world["train"], space=space, base_params=SMALL | {"max_epochs": 1}, n_trials=4, n_splits=1, budget_s=0
            )
        )
        == 1
    )
