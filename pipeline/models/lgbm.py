"""LightGBM members trained from int8 matrices without a float copy of the whole matrix."""

from __future__ import annotations

from typing import Any

import lightgbm as lgb
import numpy as np
from tqdm.auto import tqdm

from pipeline.data import release_pages
from pipeline.features import TransformedFrame
from pipeline.runtime import booster_predict

# Numerai's example model (example-scripts): LGBMRegressor(n_estimators=2000, learning_rate=0.01,
# max_depth=5, num_leaves=31, colsample_bytree=0.1), expressed as native LightGBM parameters.
EXAMPLE_PARAMS: dict[str, Any] = {
    "objective": "regression",
    "learning_rate": 0.01,
    "max_depth": 5,
    "num_leaves": 31,
    "feature_fraction": 0.1,
    "verbosity": -1,
}
EXAMPLE_ROUNDS = 2000


# Values per batch handed to LightGBM: a float32 batch and its transformed copy stay near 32 MB each
# (bench.memory measures what the Dataset holds while it is built).
BATCH_VALUES = 8_000_000


class Int8RowSequence(lgb.Sequence):
    """Rows of an int8 matrix (or of a `TransformedFrame`: int8 plus era-wise columns), handed to
    LightGBM in float32 batches.

    LightGBM would otherwise convert the whole matrix to float32 (4x its size) before binning. A
    matrix on disk (`pipeline.data.disk_matrix`) gives its pages back after each batch, so building
    the Dataset holds LightGBM's bins and one batch, not the matrix.
    """

    def __init__(
        self, features: np.ndarray | TransformedFrame, rows: np.ndarray | None = None, batch_size: int | None = None
    ):
        self.features = features
        self.rows = rows
        width = (features.features if isinstance(features, TransformedFrame) else features).shape[1]
        self.batch_size = batch_size or max(256, BATCH_VALUES // max(1, width))

    def __len__(self) -> int:
        return len(self.features) if self.rows is None else len(self.rows)

    def __getitem__(self, idx: int | slice | np.ndarray) -> np.ndarray:
        index = idx if self.rows is None else self.rows[idx]
        if isinstance(self.features, TransformedFrame):
            picked = self.features.rows(index)
            matrix = self.features.features
        else:
            picked = self.features[index].astype(np.float32)
            matrix = self.features
        # Even single rows (LightGBM's bin sample) fault in 64 KB of a matrix on disk around them.
        release_pages(matrix)
        # LightGBM samples single rows for its bin bounds and wants those as float64.
        return picked.astype(np.float64) if np.ndim(picked) == 1 else picked


# Features take 5 values, so a small sample finds every bin boundary; LightGBM's default of 200,000 sampled
# rows would hold a float64 copy of them (1.2 GB at 780 features) while the dataset is built.
BIN_SAMPLE_ROWS = 10_000


def int8_dataset(
    parts: list[tuple[np.ndarray | TransformedFrame, np.ndarray, np.ndarray | None]],
    feature_names: list[str] | None = None,
) -> lgb.Dataset:
    """A LightGBM Dataset over (features, target, rows) parts, one `Int8RowSequence` each:
    binned batch by batch, never as a float copy of the whole matrix."""
    label = np.concatenate(
        [np.asarray(target if rows is None else target[rows], dtype=np.float32) for _, target, rows in parts]
    )
    return lgb.Dataset(
        [Int8RowSequence(features, rows) for features, _, rows in parts],
        label=label,
        feature_name=feature_names if feature_names is not None else "auto",
        params={"verbosity": -1, "bin_construct_sample_cnt": BIN_SAMPLE_ROWS},
        free_raw_data=True,
    )


class LGBMModel:
    """A LightGBM regressor trained from int8 matrices, in the scikit-learn style: `__init__` only
    stores; the fitted booster is `booster_`. Deterministic for a seed."""

    def __init__(
        self,
        params: dict[str, Any] | None = None,
        num_boost_round: int = EXAMPLE_ROUNDS,
        seed: int = 0,
        num_threads: int = 0,
    ):
        self.params = params
        self.num_boost_round = num_boost_round
        self.seed = seed
        self.num_threads = num_threads

    def lgb_params(self) -> dict[str, Any]:
        params = dict(EXAMPLE_PARAMS if self.params is None else self.params)
        # Column-wise histograms read LightGBM's own bins; row-wise ones would first copy them all
        # into a row-major block (about 1 byte per value more at peak), and are no faster on few threads.
        params.update(seed=self.seed, deterministic=True, force_col_wise=True, num_threads=self.num_threads)
        params.setdefault("verbosity", -1)
        return params

    def fit(
        self,
        features: np.ndarray | TransformedFrame,
        target: np.ndarray,
        rows: np.ndarray | None = None,
        feature_names: list[str] | None = None,
        callbacks: list | None = None,
    ) -> "LGBMModel":
        """Train on `features[rows]` (all rows when None) against `target[rows]`."""
        return self.fit_parts([(features, target, rows)], feature_names=feature_names, callbacks=callbacks)

    def fit_parts(
        self,
        parts: list[tuple[np.ndarray | TransformedFrame, np.ndarray, np.ndarray | None]],
        feature_names: list[str] | None = None,
        callbacks: list | None = None,
    ) -> "LGBMModel":
        """Train on several (features, target, rows) parts, e.g. train and validation, without
        concatenating their int8 matrices: each part is one LightGBM Sequence."""
        return self.fit_dataset(int8_dataset(parts, feature_names), callbacks)

    def fit_dataset(self, dataset: lgb.Dataset, callbacks: list | None = None) -> "LGBMModel":
        """Train on a LightGBM Dataset, constructed or not (a shared one of `pipeline.binning`)."""
        self.booster_ = lgb.train(self.lgb_params(), dataset, num_boost_round=self.num_boost_round, callbacks=callbacks)
        return self

    def predict(self, x: np.ndarray, num_iteration: int | None = None) -> np.ndarray:
        """Raw scores of the first `num_iteration` trees (all when None) on model-ready rows."""
        return booster_predict(self.booster_, x, num_iteration)

    def staged_predict(self, x: np.ndarray, stages: np.ndarray) -> np.ndarray:
        """Raw scores after each number of trees in `stages` (stages x rows).

        A regression booster's score is the sum of its trees, so each stage adds only the trees since
        the previous one: every tree is evaluated once, not once per stage.
        """
        out = np.empty((len(stages), len(x)), dtype=np.float64)
        total = np.zeros(len(x), dtype=np.float64)
        previous = 0
        for i, stage in enumerate(stages):
            total += booster_predict(self.booster_, x, int(stage) - previous, start_iteration=previous)
            out[i] = total
            previous = int(stage)
        return out

    def model_text(self) -> str:
        return self.booster_.model_to_string()

    def continue_training(
        self, x: np.ndarray, target: np.ndarray, rounds: int, feature_names: list[str] | None = None
    ) -> "LGBMModel":
        """Add `rounds` trees, fitted on model-ready rows `x`, to the trained booster, starting from
        its own scores on them (LightGBM's `init_model`); its existing trees stay as they are.

        `x` is an in-memory float32 matrix, not a Sequence: LightGBM scores `init_model` on arrays
        only. A refresh passes just its few new eras."""
        dataset = lgb.Dataset(
            x,
            label=np.asarray(target, dtype=np.float32),
            feature_name=feature_names if feature_names is not None else "auto",
            params={"verbosity": -1, "bin_construct_sample_cnt": BIN_SAMPLE_ROWS},
        )
        self.booster_ = lgb.train(self.lgb_params(), dataset, num_boost_round=rounds, init_model=self.booster_)
        self.num_boost_round = self.booster_.current_iteration()
        return self


class TqdmCallback:
    """A LightGBM training callback that advances a progress bar one tree at a time."""

    order = 100

    def __init__(self, total: int, desc: str):
        self.total = total
        self.desc = desc
        self.bar_ = None

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        if self.bar_ is None:
            self.bar_ = tqdm(total=self.total, desc=self.desc, unit="tree", leave=False)
        self.bar_.update(1)
        if env.iteration + 1 >= env.end_iteration:
            self.bar_.close()
