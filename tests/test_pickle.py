"""The pickle Numerai runs: its contract, and that it works where this package does not exist."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from pipeline import data as nd
from pipeline import runtime
from pipeline.models.lgbm import LGBMModel
from pipeline.verify import VerificationError, dump_predict, verify_pickle, write_verified_pickle


def train_state(world: Path, seed: int = 0, trees: int = 30) -> dict:
    features = nd.resolve_features(world, "all")
    train = nd.load_split(world / "train.parquet", features, ["target"], data_type="train")
    member = LGBMModel(num_boost_round=trees, seed=seed, num_threads=1).fit(
        train.features, train.targets["target"].to_numpy(), feature_names=features
    )
    return {
        "feature_names": features,
        "members": [{"name": "m", "kind": "lightgbm", "model_text": member.model_text(), "weight": 1.0}],
    }


@pytest.fixture(scope="module")
def state(tiny_world: Path) -> dict:
    return train_state(tiny_world)


@pytest.fixture(scope="module")
def live(tiny_world: Path) -> pd.DataFrame:
    return pd.read_parquet(tiny_world / "live.parquet")


@pytest.fixture(scope="module")
def model_path(state: dict, tiny_world: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pkl"
    write_verified_pickle(runtime.make_predict(state), path, tiny_world / "live.parquet")
    return path


ISOLATED_RUN = r"""
import importlib.abc, json, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pipeline", "torch", "tests"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
import pandas as pd
model = pd.read_pickle(sys.argv[1])
out = model(pd.read_parquet(sys.argv[2]))
print(json.dumps({"type": type(out).__name__, "index": out.index.name, "columns": list(out.columns),
                  "rows": len(out), "min": float(out.prediction.min()), "max": float(out.prediction.max()),
                  "nan": int(out.isna().sum().sum()),
                  "leaked": sorted(m for m in sys.modules if m.split(".")[0] in ("pipeline", "torch"))}))
"""


def test_pickle_runs_in_a_process_without_this_package(model_path: Path, tiny_world: Path, tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-I", "-c", ISOLATED_RUN, str(model_path), str(tiny_world / "live.parquet")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    found = json.loads(proc.stdout)
    live_rows = len(pd.read_parquet(tiny_world / "live.parquet"))
    assert found == {
        "type": "DataFrame",
        "index": "id",
        "columns": ["prediction"],
        "rows": live_rows,
        "min": pytest.approx(found["min"]),
        "max": pytest.approx(found["max"]),
        "nan": 0,
        "leaked": [],
    }
    assert 0 < found["min"] < found["max"] < 1


def test_predict_output_contract(state: dict, live: pd.DataFrame) -> None:
    out = runtime.make_predict(state)(live)
    assert type(out) is pd.DataFrame
    assert out.index.name == "id" and list(out.columns) == ["prediction"]
    assert out.index.equals(live.index)
    assert out["prediction"].between(0, 1, inclusive="neither").all() and out["prediction"].std() > 0


def test_extra_and_reordered_columns_give_the_same_predictions(state: dict, live: pd.DataFrame) -> None:
    predict = runtime.make_predict(state)
    shuffled = live[live.columns[::-1]].assign(extra_column=1.0)
    pd.testing.assert_frame_equal(predict(live), predict(shuffled))
    without_era = live.drop(columns=["era", "data_type"])
    pd.testing.assert_frame_equal(predict(live), predict(without_era))


def test_missing_feature_columns_are_named(state: dict, live: pd.DataFrame) -> None:
    dropped = state["feature_names"][:2]
    with pytest.raises(KeyError, match=f"lack 2 feature column.*{dropped[0]}, {dropped[1]}"):
        runtime.make_predict(state)(live.drop(columns=dropped))


def test_predictions_are_ranked_within_each_era(state: dict, tiny_world: Path) -> None:
    frame = pd.read_parquet(tiny_world / "validation.parquet").iloc[:600]
    out = runtime.make_predict(state)(frame)
    for _, group in out.groupby(frame["era"].to_numpy()):
        n = len(group)
        assert group["prediction"].min() == pytest.approx(0.5 / n, abs=1 / n)
        assert group["prediction"].mean() == pytest.approx(0.5, abs=1e-9)


def test_same_seed_and_data_give_the_same_predictions(tiny_world: Path, live: pd.DataFrame) -> None:
    first = runtime.make_predict(train_state(tiny_world, seed=3))(live)
    second = runtime.make_predict(train_state(tiny_world, seed=3))(live)
    pd.testing.assert_frame_equal(first, second)


def test_verification_measures_the_pickle(model_path: Path, tiny_world: Path) -> None:
    report = verify_pickle(model_path, tiny_world / "live.parquet")
    assert report.ok, report.summary()
    assert report.size_mb > 0 and report.load_s > 0 and report.predict_s > 0 and 50 < report.peak_rss_mb < 4096
    assert "torch" not in report.modules and "lightgbm" in report.modules


def bad_predict(kind: str):
    """Pickles that break one of numerai-predict's rules each (nested, so pickled by value)."""

    def nan_output(live_features):
        return pd.DataFrame({"prediction": np.nan}, index=live_features.index.rename("id"))

    def wrong_type(live_features):
        return pd.Series(0.5, index=live_features.index.rename("id"), name="prediction")

    def three_parameters(live_features, live_benchmark_models, extra):
        return None

    def out_of_range(live_features):
        return pd.DataFrame(
            {"prediction": np.linspace(-1, 2, len(live_features))}, index=live_features.index.rename("id")
        )

    def constant(live_features):
        return pd.DataFrame({"prediction": 0.5}, index=live_features.index.rename("id"))

    return {f.__name__: f for f in (nan_output, wrong_type, three_parameters, out_of_range, constant)}[kind]


@pytest.mark.parametrize(
    "kind, message",
    [
        ("nan_output", r"contain \d+ NaN"),
        ("wrong_type", r"exactly a pandas DataFrame, got pandas.core.series.Series"),
        (
            "three_parameters",
            r"1 or 2 parameters \(live_features\[, live_benchmark_models\]\), as numerai-predict calls it; it takes 3",
        ),
        ("out_of_range", r"first column must lie within \[0, 1\]"),
        ("constant", r"constant"),
    ],
)
def test_verification_catches_each_broken_rule(kind: str, message: str, tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pkl"
    out.write_bytes(b"previous model")
    with pytest.raises(VerificationError, match=message):
        write_verified_pickle(bad_predict(kind), out, tiny_world / "live.parquet")
    assert not out.exists() and not list(tmp_path.glob("*.unverified")), "a failed build leaves no pickle"


def test_verification_catches_a_pickle_that_imports_this_package(state: dict, tiny_world: Path, tmp_path: Path) -> None:
    by_reference = tmp_path / "by_reference.pkl"
    by_reference.write_bytes(cloudpickle.dumps(runtime.make_predict(state)))
    report = verify_pickle(by_reference, tiny_world / "live.parquet")
    assert not report.ok and "Import error reading pickle" in report.problems[0] and "pipeline" in report.problems[0]
    by_value = tmp_path / "by_value.pkl"
    dump_predict(runtime.make_predict(state), by_value)
    assert verify_pickle(by_value, tiny_world / "live.parquet").ok


def test_staged_predictions_equal_predictions_at_each_tree_count(tiny_world: Path) -> None:
    features = nd.resolve_features(tiny_world, "all")
    train = nd.load_split(tiny_world / "train.parquet", features, ["target"], data_type="train")
    member = LGBMModel(num_boost_round=30, num_threads=1).fit(train.features, train.targets["target"].to_numpy())
    x = train.features[::7].astype(np.float32)
    staged = member.staged_predict(x, np.array([1, 10, 30]))
    for stage, scores in zip([1, 10, 30], staged, strict=False):
        np.testing.assert_allclose(scores, member.predict(x, num_iteration=stage), rtol=1e-9, atol=1e-12)
