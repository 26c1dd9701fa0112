"""Numerai's v5 data layout: features.json, feature sets, and loading splits as int8 matrices.

A split is read one parquet row group and a block of columns at a time, only the columns asked for,
straight into one preallocated int8 matrix, so peak memory stays near the size of that matrix
(never a float copy of it). With `spill_dir` that matrix is a file on disk mapped into memory
(`disk_matrix`): readers in batches give its pages back (`release_pages`), so the process holds
only the batch at hand and the kernel's page cache, which it can reclaim, holds the rest.
"""

from __future__ import annotations

import json
import logging
import mmap
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from pipeline.runtime import first_names, missing_columns

if TYPE_CHECKING:
    from pipeline.numerai_api import NetworkPolicy

logger = logging.getLogger(__name__)

MAIN_TARGET = "target"
ERA_COL = "era"
DATA_TYPE_COL = "data_type"
ID_COL = "id"
FEATURE_MIN, FEATURE_MAX = 0, 4

# Numerai's named feature groups (features.json also lists release sets such as "sunshine").
FEATURE_GROUPS = ("constitution", "charisma", "agility", "wisdom", "strength", "serenity", "dexterity", "intelligence")
UNGROUPED = "ungrouped"

DEFAULT_DATA_VERSION = "v5.3"
REQUIRED_FILES = ("features.json", "train.parquet", "validation.parquet")
OPTIONAL_FILES = (
    "live.parquet",
    "train_benchmark_models.parquet",
    "validation_benchmark_models.parquet",
    "live_benchmark_models.parquet",
    "meta_model.parquet",
)
# Cells (rows x columns) decoded per parquet read: arrow holds about 16 bytes per cell while it
# decodes (int8 is stored as 32-bit, plus its pages), so a read stays near 64 MB.
READ_CELLS = 4_000_000


class DataError(ValueError):
    """Input data that does not match Numerai's layout; the message names the file and column."""


@dataclass
class EraFrame:
    """The labelled rows of one split: ids, eras and an int8 feature matrix, rows ordered by era.

    `data_type` is the `data_type` value the rows were selected on (None: every row of the file).
    `benchmark`: one benchmark model's predictions on the rows (named after the model, NaN where its
    file has none), when the build loaded them (`pipeline.benchmarks`).
    """

    path: Path
    ids: np.ndarray
    eras: np.ndarray
    features: np.ndarray
    feature_names: list[str]
    targets: pd.DataFrame
    dropped_rows: int = 0
    data_type: str | None = None
    benchmark: pd.Series | None = None
    era_order: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.era_order = np.unique(self.eras)

    def __len__(self) -> int:
        return len(self.ids)

    def era_slices(self) -> dict[str, slice]:
        """Contiguous row range of each era (rows are sorted by era on load)."""
        starts = np.searchsorted(self.eras, self.era_order, side="left")
        ends = np.searchsorted(self.eras, self.era_order, side="right")
        return {era: slice(int(s), int(e)) for era, s, e in zip(self.era_order, starts, ends, strict=False)}

    def select_eras(self, eras: Sequence[str]) -> np.ndarray:
        """Row indices of the given eras, in era order."""
        return np.flatnonzero(np.isin(self.eras, np.asarray(eras)))

    def with_features(self, names: Sequence[str]) -> "EraFrame":
        """The same rows restricted to `names` (a copy of those int8 columns only)."""
        columns = [self.feature_names.index(name) for name in names]
        return EraFrame(
            self.path,
            self.ids,
            self.eras,
            self.features[:, columns],
            list(names),
            self.targets,
            self.dropped_rows,
            self.data_type,
            self.benchmark,
        )

    def subset(self, eras: Sequence[str]) -> EraFrame:
        """The rows of `eras` only (a copy of their int8 features), or the frame itself when it has no
        other era."""
        if set(self.era_order) <= set(eras):
            return self
        rows = self.select_eras(eras)
        return EraFrame(
            self.path,
            self.ids[rows],
            self.eras[rows],
            self.features[rows],
            self.feature_names,
            self.targets.iloc[rows],
            0,
            self.data_type,
            None if self.benchmark is None else self.benchmark.iloc[rows],
        )

    @staticmethod
    def concat(frames: Sequence[EraFrame], targets: Sequence[str]) -> EraFrame:
        """Rows of several splits in one frame with the given target columns (a copy of their int8
        features), for models that need one; a single frame is returned as it is."""
        if len(frames) == 1:
            return frames[0]
        return EraFrame(
            path=frames[0].path,
            ids=np.concatenate([f.ids for f in frames]),
            eras=np.concatenate([f.eras for f in frames]),
            features=np.concatenate([f.features for f in frames]),
            feature_names=frames[0].feature_names,
            targets=pd.concat([f.targets[list(targets)] for f in frames]),
            benchmark=None if any(f.benchmark is None for f in frames) else pd.concat([f.benchmark for f in frames]),
        )

    def missing_feature_eras(self) -> pd.DataFrame:
        """Boolean frame (eras x features): True where a feature is 2 for every row of an era,
        Numerai's marker for a feature that is missing in that era."""
        slices = self.era_slices()
        mask = np.zeros((len(slices), len(self.feature_names)), dtype=bool)
        for i, rows in enumerate(slices.values()):
            mask[i] = missing_columns(self.features[rows])
            release_pages(self.features)
        return pd.DataFrame(mask, index=pd.Index(list(slices), name=ERA_COL), columns=self.feature_names)


def feature_columns(feature_names: list[str], names: list[str] | None) -> np.ndarray | None:
    """Column indices of `names` among `feature_names` (None: all)."""
    if names is None:
        return None
    position = {name: k for k, name in enumerate(feature_names)}
    return np.asarray([position[name] for name in names if name in position], dtype=np.int64)


def read_features_json(data_dir: str | Path) -> dict:
    """The parsed features.json of a data directory, with a clear error when absent or malformed."""
    path = Path(data_dir) / "features.json"
    if not path.is_file():
        raise DataError(f"{path}: file not found; a Numerai data directory needs features.json")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(meta.get("feature_sets"), dict):
        raise DataError(f"{path}: expected a 'feature_sets' mapping of set name -> list of feature names")
    return meta


@contextmanager
def readable_parquet(path: Path) -> Iterator[None]:
    """Arrow's errors on a damaged file (a bare "Parquet magic bytes not found") as a DataError naming it."""
    try:
        yield
    except (pa.ArrowException, OSError) as err:
        reason = " ".join(str(err).split())
        raise DataError(
            f"{path}: not a readable parquet file ({reason}); expected a complete parquet file, as numerapi downloads "
            "it (download it again if it was cut short)"
        ) from err


def parquet_columns(path: str | Path) -> list[str]:
    """Column names of a parquet file (index columns included), read from its schema only."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with readable_parquet(path):
        return list(pq.read_schema(path).names)


def resolve_features(data_dir: str | Path, feature_set: str | Sequence[str]) -> list[str]:
    """Feature names for a set or group named in features.json, or for an explicit list.

    'all' falls back to every `feature*` column of train.parquet when features.json does not list it.
    """
    data_dir = Path(data_dir)
    sets = read_features_json(data_dir)["feature_sets"]
    if not isinstance(feature_set, str):
        names = list(feature_set)
        if not names:
            raise DataError("the feature list is empty; expected at least one feature name")
        return names
    if feature_set in sets:
        names = list(sets[feature_set])
    elif feature_set == "all":
        names = [c for c in parquet_columns(data_dir / "train.parquet") if c.startswith("feature")]
    else:
        raise DataError(
            f"{data_dir / 'features.json'}: unknown feature set {feature_set!r}; "
            f"expected one of {sorted(set(sets) | {'all'})}"
        )
    if not names:
        raise DataError(f"{data_dir / 'features.json'}: feature set {feature_set!r} is empty")
    return names


def feature_groups(data_dir: str | Path, feature_names: Sequence[str]) -> dict[str, str]:
    """Each feature's Numerai group (constitution, charisma, ...), or 'ungrouped' when it has none."""
    sets = read_features_json(data_dir)["feature_sets"]
    groups = {}
    for group in FEATURE_GROUPS:
        for name in sets.get(group, []):
            groups.setdefault(name, group)
    return {name: groups.get(name, UNGROUPED) for name in feature_names}


def target_names(data_dir: str | Path) -> list[str]:
    """Target columns of train.parquet (features.json's 'targets' when given, else `target*` columns)."""
    data_dir = Path(data_dir)
    listed = read_features_json(data_dir).get("targets")
    columns = parquet_columns(data_dir / "train.parquet")
    if listed:
        return [t for t in listed if t in columns]
    return [c for c in columns if c.startswith("target")]


def _check_columns(path: Path, available: Sequence[str], wanted: Sequence[str]) -> None:
    missing = [c for c in wanted if c not in set(available)]
    if missing:
        raise DataError(f"{path}: missing column(s) {first_names(missing)}")


def _id_array(table: pa.Table, path: Path) -> np.ndarray:
    """Row ids from the `id` column or the pandas index stored in the file."""
    if ID_COL not in table.column_names:
        raise DataError(f"{path}: no '{ID_COL}' column or index; expected Numerai's row ids")
    return np.asarray(table.column(ID_COL).to_pylist(), dtype=object)


def era_strings(column: pa.ChunkedArray, path: Path) -> np.ndarray:
    """Eras as zero-padded strings, Numerai's form, so that string order is time order; rows of one
    era share one string object (millions of rows, a few hundred eras)."""
    if column.null_count:
        raise DataError(f"{path}: column '{ERA_COL}' has missing values")
    if pa.types.is_integer(column.type):
        uniques, codes = np.unique(column.to_numpy(), return_inverse=True)
        width = max(4, len(str(int(uniques.max()))) if len(uniques) else 4)
        names = [f"{v:0{width}d}" for v in uniques]
    else:
        encoded = column.cast(pa.string()).dictionary_encode().combine_chunks()
        names, codes = encoded.dictionary.to_pylist(), encoded.indices.to_numpy()
    return np.asarray(names, dtype=object)[codes]


def _feature_block(batch: pa.RecordBatch | pa.Table, names: Sequence[str], path: Path) -> np.ndarray:
    """A batch's features as an int8 [rows, features] block, after checking type and range."""
    block = np.empty((batch.num_rows, len(names)), dtype=np.int8)
    for j, name in enumerate(names):
        column = batch.column(name)
        if not pa.types.is_integer(column.type):
            raise DataError(f"{path}: column {name!r} has type {column.type}; expected integers 0..4")
        if column.null_count:
            raise DataError(f"{path}: column {name!r} has missing values; expected integers 0..4")
        bounds = pc.min_max(column)
        lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
        if lo is not None and (lo < FEATURE_MIN or hi > FEATURE_MAX):
            raise DataError(f"{path}: column {name!r} has values in {lo}..{hi}; expected integers 0..4")
        block[:, j] = column.to_numpy(zero_copy_only=False)
    return block


def disk_matrix(spill_dir: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """A zeroed int8 matrix backed by an unlinked file in `spill_dir` instead of anonymous memory.

    The file is unlinked at once, so it lives exactly as long as the array; its pages are the
    kernel's page cache, which `release_pages` takes out of this process's resident set."""
    spill_dir = Path(spill_dir)
    if not spill_dir.is_dir():
        raise DataError(
            f"spill directory {spill_dir} does not exist; expected a directory on a disk with room for the int8 matrix"
        )
    size = max(1, shape[0] * shape[1])
    with tempfile.TemporaryFile(dir=spill_dir) as handle:
        handle.truncate(size)
        mapped = mmap.mmap(handle.fileno(), size)
    return np.frombuffer(mapped, dtype=np.int8, count=shape[0] * shape[1]).reshape(shape)


def release_pages(x: np.ndarray) -> None:
    """Give back the resident pages of a `disk_matrix` (its data stays in the file); no-op for an
    ordinary array."""
    base = x
    while isinstance(base, np.ndarray):
        base = base.base
    if isinstance(base, memoryview):
        base = base.obj
    if isinstance(base, mmap.mmap):
        base.madvise(mmap.MADV_DONTNEED)


def _read_features(
    path: Path, position: np.ndarray, feature_names: list[str], features: np.ndarray, batch_columns: int | None
) -> None:
    """Fill row `position[i]` of `features` with file row i (skipped where -1) row group by row group,
    a block of columns at a time: memory stays at one such block (parquet stores int8 as 32-bit; a
    whole row group of 2,748 columns decodes to ~0.5 GB)."""
    parquet = pq.ParquetFile(path)
    start = 0
    for group in range(parquet.num_row_groups):
        n_rows = parquet.metadata.row_group(group).num_rows
        rows = position[start : start + n_rows]
        start += n_rows
        wanted = rows >= 0
        width = batch_columns or max(1, READ_CELLS // max(1, n_rows))
        for first in range(0, len(feature_names), width):
            names = feature_names[first : first + width]
            table = parquet.read_row_group(group, columns=names, use_threads=False)
            block = _feature_block(table, names, path)
            features[rows[wanted], first : first + len(names)] = block[wanted]
        release_pages(features)


def load_split(
    path: str | Path,
    feature_names: Sequence[str],
    target_cols: Sequence[str] = (MAIN_TARGET,),
    *,
    data_type: str | None = None,
    require_target: bool = True,
    batch_columns: int | None = None,
    spill_dir: str | Path | None = None,
) -> EraFrame:
    """Load the rows of one parquet split that can be trained on or scored.

    Reads only `era`, `data_type`, the given features and targets. Rows whose main target
    (the first of `target_cols`) is missing are left out and counted when `require_target`;
    `data_type` keeps only rows of that type when the file has the column. With `spill_dir` the
    int8 matrix is a `disk_matrix` in that directory (read-only once loaded). Each parquet read
    decodes `batch_columns` columns of a row group (default: about `READ_CELLS` cells).
    """
    path = Path(path)
    feature_names = list(feature_names)
    target_cols = list(target_cols)
    available = parquet_columns(path)
    if ERA_COL not in available:
        raise DataError(f"{path}: missing column '{ERA_COL}'; every Numerai split has an era column")
    _check_columns(path, available, feature_names + target_cols)
    meta_cols = [ERA_COL] + ([DATA_TYPE_COL] if DATA_TYPE_COL in available and data_type else [])
    with readable_parquet(path):
        meta = pq.read_table(path, columns=meta_cols + target_cols + ([ID_COL] if ID_COL in available else []))
    ids = _id_array(meta, path)
    duplicated = pd.Index(ids).duplicated()
    if duplicated.any():
        raise DataError(f"{path}: duplicate id(s) {list(ids[duplicated][:5])}; expected one row per id")
    eras = era_strings(meta.column(ERA_COL), path)
    targets = pd.DataFrame(
        {t: meta.column(t).to_numpy(zero_copy_only=False).astype(np.float32) for t in target_cols},
        index=pd.Index(ids, name=ID_COL),
    )
    keep = np.ones(len(ids), dtype=bool)
    if DATA_TYPE_COL in meta_cols:
        keep &= np.asarray(meta.column(DATA_TYPE_COL).to_pylist(), dtype=object) == data_type
    if require_target and target_cols:
        unlabelled = keep & targets[target_cols[0]].isna().to_numpy()
        if keep.any() and unlabelled.sum() == keep.sum():
            rows = f"{int(keep.sum())} {data_type!r} rows" if DATA_TYPE_COL in meta_cols else f"{len(keep)} rows"
            raise DataError(
                f"{path}: column {target_cols[0]!r} has no value in any of its {rows}; expected target values "
                "(0, 0.25, 0.5, 0.75, 1) on the rows to train and score on"
            )
        if unlabelled.any():
            logger.info("%s: left out %d rows without '%s'", path.name, int(unlabelled.sum()), target_cols[0])
        keep &= ~unlabelled
    dropped = int(len(keep) - keep.sum())
    order = np.flatnonzero(keep)
    order = order[np.argsort(eras[order], kind="stable")]
    position = np.full(len(ids), -1, dtype=np.int64)
    position[order] = np.arange(len(order))

    shape = (len(order), len(feature_names))
    features = np.empty(shape, dtype=np.int8) if spill_dir is None else disk_matrix(spill_dir, shape)
    with readable_parquet(path):
        _read_features(path, position, feature_names, features, batch_columns)
    # Arrow's allocator keeps the decoded blocks' memory for reuse; the matrix is all there is to read.
    pa.default_memory_pool().release_unused()
    if spill_dir is not None:
        features.flags.writeable = False
    return EraFrame(
        path=path,
        ids=ids[order],
        eras=eras[order],
        features=features,
        feature_names=feature_names,
        targets=targets.iloc[order],
        dropped_rows=dropped,
        data_type=data_type if DATA_TYPE_COL in meta_cols else None,
    )


def check_disjoint_ids(train: EraFrame, validation: EraFrame) -> None:
    """Refuse ids found in both splits: a row trained on and then scored would flatter the validation figures."""
    shared = validation.ids[pd.Index(validation.ids).isin(train.ids)]
    if len(shared):
        raise DataError(
            f"{train.path} and {validation.path} share {len(shared)} id(s), e.g. {list(shared[:5])}; expected "
            "each id in one split only (Numerai's ids are unique per stock and era)"
        )


def download(
    data_dir: str | Path,
    version: str = DEFAULT_DATA_VERSION,
    napi: object | None = None,
    files: Sequence[str] = REQUIRED_FILES + OPTIONAL_FILES,
    policy: NetworkPolicy | None = None,
) -> list[Path]:
    """Fetch a data version's files with numerapi into `data_dir`, skipping files already there.

    By default through `NumeraiClient`, so each call has timeouts and bounded retries (`policy`, a
    `NetworkPolicy`) and one that cannot be made raises DataError naming the call and the host.
    """
    from pipeline.numerai_api import NumeraiCallError, NumeraiClient

    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    api = napi if napi is not None else NumeraiClient(policy=policy)
    fetched = []
    try:
        available = set(api.list_datasets())
        for name in files:
            dest = data_dir / name
            remote = f"{version}/{name}"
            if dest.exists():
                logger.info("%s already present, not downloaded again", dest)
                continue
            if remote not in available:
                if name in REQUIRED_FILES:
                    raise DataError(f"numerapi lists no {remote}; is {version!r} a Numerai data version?")
                logger.info("numerapi lists no %s; skipped", remote)
                continue
            api.download_dataset(remote, dest_path=str(dest))
            fetched.append(dest)
    except NumeraiCallError as err:
        raise DataError(f"downloading {version} into {data_dir}: {err}") from err
    return fetched
