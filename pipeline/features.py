"""The feature pipeline of the LightGBM members: fitted on training eras, applied per era.

Fitting learns only plain arrays (which features form correlated clusters, which belong to which
group) from the eras it is given; the transform itself is `pipeline.runtime.era_features`, the same
code the pickle runs on the live era. Features stay int8 in memory: era-wise features and the
missing-value policy are computed batch by batch as LightGBM reads its training rows
(`TransformedFrame`), from a few figures per era.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pipeline.clustering import cluster_labels
from pipeline.data import EraFrame, release_pages
from pipeline.models.networks import fit_group_mixer
from pipeline.runtime import (
    era_features,
    group_means,
    missing_columns,
    mixer_features,
    model_matrix,
    token_index,
)

MISSING_POLICIES = ("keep", "nan")
# Settings of the pipeline of members that take the features as they are (Numerai's example model).
RAW_FEATURES = {"missing": "keep", "clusters": False, "group_stats": False, "mixing": False}
# Group mixers (trained by `pipeline.models.networks.fit_group_mixer`): hidden units per group, epochs.
MIXER_HIDDEN = 8
MIXER_EPOCHS = 4
# Correlations are measured on at most this many rows of the fit eras (evenly spread over them).
CORR_SAMPLE_ROWS = 20_000
# Constructor settings of a FeaturePipeline besides its groups.
SETTINGS = ("missing", "clusters", "group_stats", "mixing", "targets", "cluster_distance", "seed", "columns")
MIXER_ARRAYS = ("w1", "b1", "w2", "b2")


def correlation_clusters(x: np.ndarray, groups: np.ndarray, distance: float) -> list[np.ndarray]:
    """Columns of `x` clustered within each group (`cluster_labels` cut at `distance`); clusters of
    one feature are left out (their mean is the feature itself)."""
    clusters = []
    for group in np.unique(groups):
        columns = np.flatnonzero(groups == group)
        if len(columns) < 2:
            continue
        labels = cluster_labels(x[:, columns], distance=distance)
        clusters += [columns[labels == k] for k in np.unique(labels) if (labels == k).sum() > 1]
    return clusters


def averaging_matrix(n_features: int, members: list[np.ndarray]) -> np.ndarray:
    """(features x len(members)) float32 matrix whose product with a row gives each member set's mean."""
    avg = np.zeros((n_features, len(members)), dtype=np.float32)
    for k, columns in enumerate(members):
        avg[columns, k] = 1.0 / len(columns)
    return avg


def era_blocks(parts: Sequence[tuple[EraFrame, Sequence[str]]]) -> list[tuple[EraFrame, np.ndarray]]:
    """(frame, row indices) of every era of the parts, oldest first, without copying rows."""
    slices = [(frame, era, frame.era_slices()[era]) for frame, eras in parts for era in sorted(eras)]
    return [(frame, np.arange(rows.start, rows.stop)) for frame, _, rows in sorted(slices, key=lambda t: t[1])]


class FeaturePipeline:
    """Missing-value policy and era-wise cross-sectional features, in the scikit-learn style.

    missing: "keep" (all-2 features stay 2) or "nan" (LightGBM sees them as missing).
    clusters: add the mean of each cluster of correlated features within a group (clusters found
        on the fit eras, at 1 - |corr| below `cluster_distance`).
    group_stats: add each group's mean and dispersion per row, and the row's group mean minus the era's.
    mixing: add the per-era rank of a small MLP per group trained on the fit eras to predict `targets`
        (the main target first, then auxiliary ones: labels only). Cross-fitted: rows of the first
        half of the fit eras get the mixer trained on the second half and vice versa, so the trees
        never see a mixer's output on rows it learned from; other rows (live) get the average.
    columns: the raw features a member over a feature subset sees (None: all). Only the raw
        columns are chosen: the era-wise features are still computed from every feature, and a
        variant chooses columns without refitting.
    """

    def __init__(
        self,
        groups: dict[str, str],
        missing: str = "keep",
        clusters: bool = True,
        group_stats: bool = True,
        mixing: bool = False,
        targets: Sequence[str] = (),
        cluster_distance: float = 0.8,
        seed: int = 0,
        columns: Sequence[str] | None = None,
    ):
        self.groups = groups
        self.missing = missing
        self.clusters = clusters
        self.group_stats = group_stats
        self.mixing = mixing
        self.targets = targets
        self.cluster_distance = cluster_distance
        self.seed = seed
        self.columns = columns

    def fit(self, parts: Sequence[tuple[EraFrame, Sequence[str]]]) -> FeaturePipeline:
        """Learn the transform from the given eras of each (frame, eras) part, nothing else."""
        if self.missing not in MISSING_POLICIES:
            raise ValueError(f"missing policy must be one of {MISSING_POLICIES}, got {self.missing!r}")
        names = parts[0][0].feature_names
        unknown = [n for n in names if n not in self.groups]
        if unknown:
            raise ValueError(f"features without a group entry: {unknown[:5]}")
        group_of = np.array([self.groups[n] for n in names])
        group_names = list(dict.fromkeys(group_of))
        cluster_avg, self.part_names_ = None, {"clusters": [], "group_stats": [], "mixing": []}
        if self.clusters:
            members = correlation_clusters(sample_rows(parts, CORR_SAMPLE_ROWS), group_of, self.cluster_distance)
            cluster_avg = averaging_matrix(len(names), members) if members else None
            self.part_names_["clusters"] = [f"cluster_{k:03d}_{group_of[m[0]]}_mean" for k, m in enumerate(members)]
        group_avg = None
        if self.group_stats:
            group_avg = averaging_matrix(len(names), [np.flatnonzero(group_of == g) for g in group_names])
            self.part_names_["group_stats"] = [
                f"{g}_{stat}" for stat in ("mean", "std", "mean_vs_era") for g in group_names
            ]
        mixer, self.mixer_halves_ = None, []
        if self.mixing:
            if not self.targets:
                raise ValueError("mixing needs the target columns to learn (targets=[main, aux...])")
            index = token_index([np.flatnonzero(group_of == g) for g in group_names], len(names))
            blocks = era_blocks(parts)
            halves = [blocks[: len(blocks) // 2], blocks[len(blocks) // 2 :]]
            models = [
                fit_group_mixer(h, list(self.targets), index, MIXER_HIDDEN, MIXER_EPOCHS, self.seed + k)
                for k, h in enumerate(halves)
            ]
            mixer = {"index": index, "models": models}
            self.mixer_halves_ = [{str(frame.eras[rows[0]]) for frame, rows in h} for h in halves]
            self.part_names_["mixing"] = [f"{g}_mixer" for g in group_names]
        self.raw_names_ = list(names)
        self._set_transform(
            {"missing": self.missing, "cluster_avg": cluster_avg, "group_avg": group_avg, "mixer": mixer}
        )
        return self

    def _set_transform(self, transform: dict) -> None:
        extra = [
            name
            for part in ("clusters", "group_stats", "mixing")
            if getattr(self, part)
            for name in self.part_names_[part]
        ]
        index = None
        if self.columns is not None:
            position = {name: k for k, name in enumerate(self.raw_names_)}
            unknown = [name for name in self.columns if name not in position]
            if unknown or not self.columns:
                raise ValueError(
                    f"columns must name features the pipeline was fitted on; got {len(self.columns)}, unknown: "
                    f"{unknown[:5]}"
                )
            index = np.array(sorted({position[name] for name in self.columns}), dtype=np.int64)
        self.columns_ = list(self.raw_names_) if index is None else [self.raw_names_[k] for k in index]
        self.transform_ = transform | {"extra_names": extra, "columns": index}
        self.feature_names_ = self.columns_ + extra

    def variant(self, **changes: object) -> FeaturePipeline:
        """This fitted pipeline with transforms switched off, another missing policy or other raw
        `columns`, without refitting (the ablation compares variants of one fit)."""
        turned_on = [k for k in ("clusters", "group_stats", "mixing") if changes.get(k) and not getattr(self, k)]
        if turned_on:
            raise ValueError(f"a variant can only switch transforms off; {turned_on} were not fitted")
        params = {k: getattr(self, k) for k in SETTINGS}
        other = FeaturePipeline(self.groups, **(params | changes))
        other.part_names_, other.mixer_halves_, other.raw_names_ = self.part_names_, self.mixer_halves_, self.raw_names_
        other._set_transform(
            {
                "missing": other.missing,
                "cluster_avg": self.transform_["cluster_avg"] if other.clusters else None,
                "group_avg": self.transform_["group_avg"] if other.group_stats else None,
                "mixer": self.transform_["mixer"] if other.mixing else None,
            }
        )
        return other

    def state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """The fitted pipeline as JSON-able settings and named arrays (`np.savez`), so that a refresh
        transforms new eras exactly as the saved trees' training eras were (`from_state`)."""
        settings = {k: getattr(self, k) for k in SETTINGS} | {
            "targets": list(self.targets),
            "groups": dict(self.groups),
            "raw_names": list(self.raw_names_),
            "part_names": self.part_names_,
        }
        arrays = {key: self.transform_[key] for key in ("cluster_avg", "group_avg") if self.transform_[key] is not None}
        mixer = self.transform_["mixer"]
        if mixer is not None:
            arrays["mixer_index"] = mixer["index"]
            arrays |= {
                f"mixer_{k}_{name}": model[name] for k, model in enumerate(mixer["models"]) for name in MIXER_ARRAYS
            }
        return settings, arrays

    @classmethod
    def from_state(cls, settings: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> FeaturePipeline:
        """The pipeline `state()` saved. Its cross-fitting halves are not kept: every era gets the
        average of the group mixers, as live eras do (a refresh only transforms eras it never saw)."""
        pipeline = cls(dict(settings["groups"]), **{k: settings[k] for k in SETTINGS if k in settings})
        pipeline.raw_names_, pipeline.part_names_, pipeline.mixer_halves_ = (
            list(settings["raw_names"]),
            dict(settings["part_names"]),
            [],
        )
        mixer = None
        if "mixer_index" in arrays:
            count = sum(1 for key in arrays if key.startswith("mixer_") and key.endswith("_w1"))
            mixer = {
                "index": arrays["mixer_index"],
                "models": [{name: arrays[f"mixer_{k}_{name}"] for name in MIXER_ARRAYS} for k in range(count)],
            }
        pipeline._set_transform(
            {
                "missing": pipeline.missing,
                "cluster_avg": arrays.get("cluster_avg"),
                "group_avg": arrays.get("group_avg"),
                "mixer": mixer,
            }
        )
        return pipeline

    def matrix(self, features: np.ndarray, eras: np.ndarray | None) -> np.ndarray:
        """Transformed float32 rows of whole eras, for prediction (`runtime.model_matrix`)."""
        return model_matrix(self.transform_, features, eras)

    def inputs(self, frame: EraFrame, eras: Sequence[str] | None = None) -> TransformedFrame:
        """The frame's rows as this pipeline presents them to LightGBM: only per-era figures are
        computed here (missing features, group means, the group mixers' outputs), for the rows of
        `eras` (None: every era; the other rows must not be read); the rest is done batch by batch."""
        era_codes = np.searchsorted(frame.era_order, frame.eras).astype(np.int32)
        missing = np.zeros((len(frame.era_order), len(frame.feature_names)), dtype=bool)
        n_groups = 0 if self.transform_["group_avg"] is None else self.transform_["group_avg"].shape[1]
        era_means = np.zeros((len(frame.era_order), n_groups), dtype=np.float32)
        mixer = self.transform_["mixer"]
        mixed = np.zeros((len(frame), 0 if mixer is None else len(mixer["index"])), dtype=np.float32)
        slices = frame.era_slices()
        for era in frame.era_order if eras is None else sorted(set(eras)):
            rows = np.arange(slices[era].start, slices[era].stop)
            block = frame.features[rows]
            missing[era_codes[rows[0]]] = missing_columns(block)
            if n_groups:
                era_means[era_codes[rows[0]]] = group_means(self.transform_, block).mean(axis=0)
            if mixer is not None:
                mixed[rows] = mixer_features(mixer, block, self.out_of_fold_mixer(str(frame.eras[rows[0]])))
            release_pages(frame.features)
        return TransformedFrame(
            frame.features, self.transform_, era_codes, missing if self.missing == "nan" else None, era_means, mixed
        )

    def out_of_fold_mixer(self, era: str) -> list[int] | None:
        """The mixer that did not learn from this era (None: neither did, so both are averaged)."""
        for k, half in enumerate(self.mixer_halves_):
            if era in half:
                return [1 - k]
        return None


def spread_rows(rows: np.ndarray, limit: int) -> np.ndarray:
    """At most `limit` of `rows`, evenly spread over them (so over their eras too)."""
    return rows[np.unique(np.linspace(0, len(rows) - 1, min(len(rows), limit)).astype(np.int64))]


def sample_rows(parts: Sequence[tuple[EraFrame, Sequence[str]]], limit: int) -> np.ndarray:
    """At most `limit` int8 rows from the given eras of the parts, evenly spread over them."""
    rows = [(frame, frame.select_eras(eras)) for frame, eras in parts]
    picked = spread_rows(np.arange(sum(len(r) for _, r in rows)), limit)
    offsets = np.cumsum([0] + [len(r) for _, r in rows])
    sample = np.concatenate(
        [
            frame.features[r[picked[(picked >= lo) & (picked < hi)] - lo]]
            for (frame, r), lo, hi in zip(rows, offsets[:-1], offsets[1:], strict=False)
        ]
    )
    # Each sampled row of a matrix on disk faults in the 64 KB around it: give those pages back.
    for frame, _ in rows:
        release_pages(frame.features)
    return sample


@dataclass
class TransformedFrame:
    """A frame's int8 features with what the pipeline needs to transform any batch of its rows
    (the same values `runtime.model_matrix` gives them), so LightGBM reads transformed rows in
    batches and no float copy, nor any stored era-wise column, is ever made."""

    features: np.ndarray
    transform: dict
    era_codes: np.ndarray
    missing: np.ndarray | None
    era_group_means: np.ndarray
    mixed: np.ndarray

    def __len__(self) -> int:
        return len(self.features)

    def rows(self, index: np.ndarray | slice | int) -> np.ndarray:
        """Transformed float32 rows."""
        codes = np.atleast_1d(self.era_codes[index])
        block = np.atleast_2d(self.features[index])
        extra = era_features(self.transform, block, self.era_group_means[codes])
        columns = self.transform.get("columns")
        x = (block if columns is None else block[:, columns]).astype(np.float32)
        if self.missing is not None:
            missing = self.missing[codes]
            x[missing if columns is None else missing[:, columns]] = np.nan
        out = np.hstack([x, extra, np.atleast_2d(self.mixed[index])])
        return out[0] if isinstance(index, (int, np.integer)) else out
