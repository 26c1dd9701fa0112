"""LightGBM datasets binned once per build and shared by every fit that trains on the same rows.

Binning (LightGBM's Dataset construction, through `lgb.Sequence` batches transformed by the feature
pipeline) costs as much as a good share of the trees at Numerai's width, and a build fits every member
on every CV fold, the holdout and the refit, and a search fits many settings on the same folds. A
`DatasetCache` bins the rows of a (feature view, frames, eras, era stride) once: every member and
trial that reads that view on those rows trains on it, another target through `set_label`, and rows
whose target is unknown are left out through `Dataset.subset`, which reuses the bins.

With `spill_dir`, a binned dataset is written there in LightGBM's binary format and loaded back for
each fit (a load reads bins; it does not bin again), so only the dataset in use is in memory.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
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


@dataclass
class Binned:
    """One binned dataset: the rows of each part it holds (frame row indices), in order."""

    rows: list[np.ndarray]
    dataset: lgb.Dataset | None = None
    path: Path | None = None
    keep: tuple = ()  # the pipeline and frames, so that the ids in the key stay theirs
    params: dict[str, Any] = field(default_factory=dict)  # what it was binned with (a load must say the same)

    def load(self) -> lgb.Dataset:
        if self.dataset is not None:
            return self.dataset
        return lgb.Dataset(str(self.path), params=self.params).construct()


@dataclass
class DatasetCache:
    """Datasets binned once per build (see the module docstring); `seconds` is the time spent binning."""

    seed: int = 0
    spill_dir: Path | None = None
    entries: dict[tuple, Binned] = field(default_factory=dict)
    seconds: float = 0.0
    binned: int = 0
    reused: int = 0

    def dataset(
        self,
        pipeline: FeaturePipeline | None,
        parts: Sequence[tuple[EraFrame, Sequence[str]]],
        era_stride: int,
        target: str,
        feature_names: list[str],
        era_weights: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> lgb.Dataset:
        """The rows of every `era_stride`-th era of each part's eras, as `pipeline` presents them (None:
        raw features), labelled with `target`; rows where `target` is unknown are left out.
        `era_weights` maps each row's era to its weight (recency, a window); weighted fits train on a
        subset of their own, so the shared dataset never carries another fit's weights."""
        key = (
            view_key(pipeline),
            tuple((id(frame), tuple(np.asarray(eras, dtype=str)[::era_stride])) for frame, eras in parts),
        )
        entry = self.entries.get(key)
        if entry is None:
            entry = self.entries[key] = self._bin(pipeline, parts, era_stride, feature_names)
        else:
            self.reused += 1
        labels = np.concatenate(
            [frame.targets[target].to_numpy()[rows] for (frame, _), rows in zip(parts, entry.rows, strict=True)]
        )
        known = ~np.isnan(labels)
        dataset = entry.load()
        if known.all() and era_weights is None:
            dataset.set_label(labels)
            return dataset
        subset = dataset.subset(np.flatnonzero(known)).construct()
        subset.set_label(labels[known])
        if era_weights is not None:
            eras = np.concatenate([frame.eras[rows] for (frame, _), rows in zip(parts, entry.rows, strict=True)])
            subset.set_weight(np.asarray(era_weights(eras[known]), dtype=np.float32))
        return subset

    def _bin(
        self,
        pipeline: FeaturePipeline | None,
        parts: Sequence[tuple[EraFrame, Sequence[str]]],
        era_stride: int,
        feature_names: list[str],
    ) -> Binned:
        start = time.perf_counter()
        chosen = [np.asarray(eras, dtype=object)[::era_stride] for _, eras in parts]
        rows = [frame.select_eras(part) for (frame, _), part in zip(parts, chosen, strict=True)]
        sequences = [
            Int8RowSequence(frame.features if pipeline is None else pipeline.inputs(frame, part), part_rows)
            for (frame, _), part, part_rows in zip(parts, chosen, rows, strict=True)
        ]
        dataset = lgb.Dataset(
            sequences,
            label=np.zeros(sum(len(r) for r in rows), dtype=np.float32),
            feature_name=feature_names,
            params=dataset_params(self.seed),
            free_raw_data=True,
        ).construct()
        entry = Binned(rows, dataset, keep=(pipeline, *(frame for frame, _ in parts)), params=dataset_params(self.seed))
        if self.spill_dir is not None:
            # LightGBM will not write over an existing file: a new directory holds the new one.
            entry.path = Path(tempfile.mkdtemp(dir=self.spill_dir, prefix="binned-")) / "dataset.bin"
            dataset.save_binary(str(entry.path))
            entry.dataset = None
        self.seconds += time.perf_counter() - start
        self.binned += 1
        logger.debug("binned %d rows x %d features in %.1f s", dataset.num_data(), len(feature_names), self.seconds)
        return entry

    def clear(self) -> None:
        """Drop every dataset (and its file): a stage's fits are done."""
        for entry in self.entries.values():
            if entry.path is not None:
                shutil.rmtree(entry.path.parent, ignore_errors=True)
        self.entries.clear()
