"""Numerai's benchmark models and meta model as a build reads them.

A build uses ONE benchmark model's predictions (`--benchmark-model`, by default Numerai's main one:
the newest `vNN_lgbm_ender20` column, `v53_lgbm_ender20` on v5.3) from `train_benchmark_models.parquet`
and `validation_benchmark_models.parquet`: for BMC on the CV and the validation eras, for `--objective
bmc|payout`, and as the input of the benchmark members (`pipeline.members.benchmark`). Each frame gets
them as `EraFrame.benchmark`, aligned to its rows by id, NaN where the file has no prediction: on
Numerai the training eras before 157 have none (the benchmarks are predicted walk-forward in chunks of
156 eras), and the build's choices on BMC use only the eras that have them.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline import data as nd

logger = logging.getLogger(__name__)

TRAIN_FILE = "train_benchmark_models.parquet"
VALIDATION_FILE = "validation_benchmark_models.parquet"
LIVE_FILE = "live_benchmark_models.parquet"
META_MODEL_FILE = "meta_model.parquet"
META_MODEL_COLUMN = "numerai_meta_model"
MAIN_BENCHMARK = re.compile(r"^v(\d+)_lgbm_ender20$")


def benchmark_columns(path: Path) -> list[str]:
    """The benchmark models of a benchmark file (its columns other than id, era and data_type)."""
    return [c for c in nd.parquet_columns(path) if c not in (nd.ID_COL, nd.ERA_COL, nd.DATA_TYPE_COL)]


def choose_benchmark(path: Path, wanted: str | None) -> str:
    """`wanted` (--benchmark-model), else the newest `vNN_lgbm_ender20` column, else the first column."""
    columns = benchmark_columns(path)
    if wanted is not None:
        if wanted not in columns:
            raise nd.DataError(f"{path}: no benchmark model {wanted!r} (--benchmark-model); it has {columns}")
        return wanted
    if not columns:
        raise nd.DataError(f"{path}: no benchmark model column; expected one column of predictions per model")
    main = [(int(m.group(1)), c) for c in columns if (m := MAIN_BENCHMARK.match(c))]
    return max(main)[1] if main else columns[0]


def read_predictions(path: Path, column: str, ids: np.ndarray) -> pd.Series:
    """One column of a benchmark (or meta-model) file aligned to `ids`, named after the column, NaN
    where the file has no row."""
    with nd.readable_parquet(path):
        frame = pd.read_parquet(path, columns=[column])
        if frame.index.name != nd.ID_COL and nd.ID_COL in nd.parquet_columns(path):
            frame = pd.read_parquet(path, columns=[nd.ID_COL, column]).set_index(nd.ID_COL)
    if frame.index.name != nd.ID_COL:
        raise nd.DataError(f"{path}: no '{nd.ID_COL}' column or index; expected Numerai's row ids")
    if not frame.index.is_unique:
        raise nd.DataError(f"{path}: duplicate id(s) {list(frame.index[frame.index.duplicated()][:5])}")
    values = frame[column].astype(np.float64).reindex(pd.Index(ids, name=nd.ID_COL))
    return values.rename(column)


def attach_benchmarks(data_dir: Path, wanted: str | None, train: nd.EraFrame, validation: nd.EraFrame) -> None:
    """Give both frames the chosen benchmark's predictions when the data has both benchmark files
    (a benchmark for one split only could score the CV and not the validation eras, or the reverse)."""
    paths = (data_dir / TRAIN_FILE, data_dir / VALIDATION_FILE)
    if not all(path.is_file() for path in paths):
        if wanted is not None:
            raise nd.DataError(f"--benchmark-model {wanted!r}: {data_dir} lacks {' or '.join(p.name for p in paths)}")
        logger.info("%s has no %s and %s: no BMC, no benchmark members", data_dir, *(p.name for p in paths))
        return
    column = choose_benchmark(paths[0], wanted)
    for frame, path in zip((train, validation), paths, strict=True):
        frame.benchmark = read_predictions(path, column, frame.ids)
        logger.info("%s: %s", path.name, coverage(frame))


def coverage(frame: nd.EraFrame) -> str:
    """Which eras of the frame the benchmark covers, in words."""
    known = ~frame.benchmark.isna().to_numpy()
    eras = np.unique(frame.eras[known])
    if not len(eras):
        return f"{frame.benchmark.name} covers none of {len(frame.era_order)} eras"
    return f"{frame.benchmark.name} covers {len(eras)} of {len(frame.era_order)} eras ({eras[0]}..{eras[-1]})"


def meta_model(data_dir: Path, ids: np.ndarray) -> np.ndarray | None:
    """The meta model's predictions of the rows (meta_model.parquet, for MMC), or None without the file."""
    path = data_dir / META_MODEL_FILE
    if not path.is_file():
        return None
    return read_predictions(path, META_MODEL_COLUMN, ids).to_numpy()


def live_files(data_dir: Path, scratch: Path, validation: nd.EraFrame) -> tuple[Path, Path | None]:
    """What the build verifies its pickle on: live.parquet and live_benchmark_models.parquet, or where
    either is missing a stand-in of both from the newest validation era (features, and the chosen
    benchmark's predictions of its rows when the build has them)."""
    live, benchmarks = data_dir / "live.parquet", data_dir / LIVE_FILE
    if live.is_file() and (benchmarks.is_file() or validation.benchmark is None):
        return live, benchmarks if benchmarks.is_file() else None
    era = validation.era_order[-1]
    rows = validation.select_eras([era])
    index = pd.Index(validation.ids[rows], name=nd.ID_COL)
    frame = pd.DataFrame(validation.features[rows], columns=validation.feature_names, index=index)
    frame.insert(0, nd.ERA_COL, validation.eras[rows])
    live = scratch / "live_standin.parquet"
    frame.to_parquet(live)
    logger.info(
        "verifying on validation era %s as a live stand-in (%s lacks live.parquet or %s)",
        era,
        data_dir,
        LIVE_FILE,
    )
    if validation.benchmark is None:
        return live, None
    standin = validation.benchmark.iloc[rows].to_frame()
    standin.insert(0, nd.ERA_COL, validation.eras[rows])
    standin.to_parquet(scratch / "live_benchmarks_standin.parquet")
    return live, scratch / "live_benchmarks_standin.parquet"
