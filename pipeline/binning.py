"""LightGBM datasets binned once per build and shared by every fit that trains on the same rows.

Binning (LightGBM's Dataset construction, through `lgb.Sequence` batches transformed by the feature
pipeline) costs as much as a good share of the trees at Numerai's width, and a build fits every member
on every CV fold, the holdout and the refit, and a search fits many settings on the same folds. A
`DatasetCache` bins the rows of a (feature view, frames, eras, era stride) once: every member and
trial that reads that view on those rows trains on it, another target through `set_label`, and rows
whose target is unknown are left out through `Dataset.subset`, which reuses the bins.

With `spill_dir`, a binned dataset is written there in LightGBM's binary format and loaded back for
each fit (a load reads bins; it does not bin again), so only the dataset in use is in memory. The
worker processes of `--jobs` (`pipeline.parallel`) bin a `Rows` themselves and share the binary file.
"""

from __future__ import annotations

import logging
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np

from pipeline.data import EraFrame
from pipeline.features import FeaturePipeline
from pipeline.models.lgbm import BIN_SAMPLE_ROWS, Int8RowSequence

logger = logging.getLogger(__name__)
Parts = Sequence[tuple[EraFrame, Sequence[str]]]


def dataset_params(seed: int) -> dict[str, Any]:
    """Dataset parameters every shared dataset is built with. Without the pre-filter, fits with other
    `min_data_in_leaf` settings may train on the same bins."""
    return {
        "verbosity": -1,
        "bin_construct_sample_cnt": BIN_SAMPLE_ROWS,
        "feature_pre_filter": False,
        "data_random_seed": seed,
    }


def view_key(pipeline: FeaturePipeline | None) -> tuple:
    """What makes two pipelines give the same matrix: their fitted arrays, policy and columns."""
    if pipeline is None:
        return ("raw",)
    transform = pipeline.transform_
    columns = None if transform.get("columns") is None else tuple(int(c) for c in transform["columns"])
    arrays = tuple(id(transform.get(part)) for part in ("cluster_avg", "group_avg", "mixer"))
    return (transform["missing"], tuple(transform["extra_names"]), columns, *arrays)


def dataset_key(pipeline: FeaturePipeline | None, parts: Parts, era_stride: int) -> tuple:
    """Which binned dataset a fit reads: the view and the strided eras of each frame."""
    eras = tuple((id(frame), tuple(np.asarray(eras, dtype=str)[::era_stride])) for frame, eras in parts)
    return (view_key(pipeline), eras)


@dataclass
class Rows:
    """What one binned dataset is made of: rows of frames (frame row indices, in order, of the eras
    in `eras`) as `pipeline` presents them (None: raw features). Plain enough to send to a worker
    process; it holds the pipeline and frames whose ids its cache key names."""

    pipeline: FeaturePipeline | None
    parts: list[tuple[EraFrame, np.ndarray]]
    eras: list[np.ndarray]
    feature_names: list[str]
    seed: int

    @classmethod
    def of(
        cls, pipeline: FeaturePipeline | None, parts: Parts, era_stride: int, feature_names: list[str], seed: int
    ) -> Rows:
        """The rows of every `era_stride`-th era of each part's eras."""
        chosen = [np.asarray(eras, dtype=object)[::era_stride] for _, eras in parts]
        picked = [(frame, frame.select_eras(part)) for (frame, _), part in zip(parts, chosen, strict=True)]
        return cls(pipeline, picked, chosen, list(feature_names), seed)

    def __len__(self) -> int:
        return sum(len(rows) for _, rows in self.parts)

    def labels(self, target: str) -> np.ndarray:
        """`target` on these rows (NaN where unknown)."""
        return np.concatenate([frame.targets[target].to_numpy()[rows] for frame, rows in self.parts])

    def weights(self, era_weights: Callable[[np.ndarray], np.ndarray] | None) -> np.ndarray | None:
        """Each row's weight by its era (`EraWeighting.for_eras`); None when nothing is weighted."""
        if era_weights is None:
            return None
        eras = np.concatenate([frame.eras[rows] for frame, rows in self.parts])
        return np.asarray(era_weights(eras), dtype=np.float32)

    def bin(self) -> lgb.Dataset:
        """LightGBM's bins of these rows, built batch by batch (no float copy of the matrix)."""
        sequences = [
            Int8RowSequence(frame.features if self.pipeline is None else self.pipeline.inputs(frame, eras), rows)
            for (frame, rows), eras in zip(self.parts, self.eras, strict=True)
        ]
        return lgb.Dataset(
            sequences,
            label=np.zeros(len(self), dtype=np.float32),
            feature_name=self.feature_names,
            params=dataset_params(self.seed),
            free_raw_data=True,
        ).construct()


def labelled(dataset: lgb.Dataset, labels: np.ndarray, weights: np.ndarray | None = None) -> lgb.Dataset:
    """The binned dataset labelled with `labels` (and weighted with `weights`); rows whose label is
    NaN are left out (a subset that reuses the bins). A weighted fit trains on a subset of its own,
    so the shared dataset never carries another fit's weights."""
    known = ~np.isnan(labels)
    if known.all() and weights is None:
        dataset.set_label(labels)
        return dataset
    subset = dataset.subset(np.flatnonzero(known)).construct()
    subset.set_label(labels[known])
    if weights is not None:
        subset.set_weight(weights[known])
    return subset


def load_binary(path: Path, seed: int) -> lgb.Dataset:
    """A dataset `save_binary` wrote: its bins, read back without binning again. LightGBM refuses to
    load it with other dataset parameters than it was built with (`dataset_params(seed)`)."""
    return lgb.Dataset(str(path), params=dataset_params(seed)).construct()


@dataclass
class Binned:
    """One binned dataset: its rows, and the dataset (in memory) or its binary file (written here, or
    by the first worker process that needs it)."""

    rows: Rows
    dataset: lgb.Dataset | None = None
    path: Path | None = None

    def load(self) -> lgb.Dataset:
        return self.dataset if self.dataset is not None else load_binary(self.path, self.rows.seed)


@dataclass
class DatasetCache:
    """Datasets binned once per build (see the module docstring); `seconds` is the time spent binning."""

    seed: int = 0
    spill_dir: Path | None = None
    entries: dict[tuple, Binned] = field(default_factory=dict)
    seconds: float = 0.0
    binned: int = 0
    reused: int = 0

    def reserve(
        self, pipeline: FeaturePipeline | None, parts: Parts, era_stride: int, feature_names: list[str]
    ) -> tuple[Binned, bool]:
        """The entry of these rows and whether it is new (not binned yet: the caller bins it)."""
        key = dataset_key(pipeline, parts, era_stride)
        entry = self.entries.get(key)
        if entry is not None:
            self.reused += 1
            return entry, False
        entry = self.entries[key] = Binned(Rows.of(pipeline, parts, era_stride, feature_names, self.seed))
        return entry, True

    def dataset(
        self,
        pipeline: FeaturePipeline | None,
        parts: Parts,
        era_stride: int,
        target: str,
        feature_names: list[str],
        era_weights: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> lgb.Dataset:
        """The rows of every `era_stride`-th era of each part's eras, as `pipeline` presents them (None:
        raw features), labelled with `target`; rows where `target` is unknown are left out.
        `era_weights` maps each row's era to its weight (recency, a window)."""
        entry, new = self.reserve(pipeline, parts, era_stride, feature_names)
        if new:
            self._bin(entry)
        return labelled(entry.load(), entry.rows.labels(target), entry.rows.weights(era_weights))

    def _bin(self, entry: Binned) -> None:
        start = time.perf_counter()
        entry.dataset = entry.rows.bin()
        if self.spill_dir is not None:
            entry.path = self.new_path()
            entry.dataset.save_binary(str(entry.path))
            entry.dataset = None
        self.count(time.perf_counter() - start)
        logger.debug("binned %d rows x %d features", len(entry.rows), len(entry.rows.feature_names))

    def new_path(self) -> Path:
        """A new file name for one binary dataset in the spill directory (LightGBM's `save_binary`
        does not write over a file that exists)."""
        return Path(self.spill_dir or tempfile.gettempdir()) / f"dataset-{uuid.uuid4().hex}.bin"

    def count(self, seconds: float) -> None:
        """One dataset binned in `seconds` (here or by a worker)."""
        self.seconds += seconds
        self.binned += 1

    def clear(self) -> None:
        """Drop every dataset (and its files): a stage's fits are done."""
        for entry in self.entries.values():
            if entry.path is not None:
                entry.path.unlink(missing_ok=True)
                lock_path(entry.path).unlink(missing_ok=True)
        self.entries.clear()


def lock_path(path: Path) -> Path:
    """The lock file that the worker binning the dataset of `path` holds while it writes it."""
    return path.with_suffix(".lock")
