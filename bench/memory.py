"""Peak memory of building LightGBM's training data from an int8 feature matrix.

    python -m bench.memory [--rows 1000000] [--features 780] [--trees 10]

Writes a parquet split of that shape (Numerai's medium set is 780 features; values 0..4, eras of
5,000 rows), then in a fresh process per mode loads it with the build's own loader and builds the
LightGBM Dataset the way every member does (`pipeline.models.lgbm.int8_dataset`: `lgb.Sequence`
batches, small bin sample), then trains a few trees:
  memory   the int8 matrix in memory (the default build)
  disk     the int8 matrix in a file (`--spill-dir`): LightGBM reads it in batches, pages given back
Prints the process's peak RSS (VmHWM, interpreter and libraries included) after each stage as a ratio
to the int8 matrix's bytes. Bar: at most 2.0 while the Dataset is built.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROWS_PER_ERA = 5_000
ROW_GROUP = 100_000

CHILD = r"""
import json, sys, time
from pathlib import Path
import lightgbm as lgb
from pipeline import data as nd
from pipeline.models.lgbm import LGBMModel, int8_dataset
from pipeline.verify_child import peak_rss_mb

path, n_features, trees, spill = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] or None
stages, start = {}, time.perf_counter()
def stage(name):
    global start
    stages[name] = {"seconds": time.perf_counter() - start, "hwm_mb": peak_rss_mb()}
    start = time.perf_counter()
stage("interpreter")
split = nd.load_split(path, [f"feature_{j:04d}" for j in range(n_features)], ["target"], spill_dir=spill)
stage("load")
dataset = int8_dataset([(split.features, split.targets["target"].to_numpy(), None)]).construct()
stage("dataset")
lgb.train(LGBMModel(num_boost_round=trees, num_threads=1).lgb_params(), dataset, num_boost_round=trees)
stage("train")
print(json.dumps({"matrix_mb": split.features.nbytes / 2**20, "stages": stages}))
"""


def write_split(path: Path, rows: int, n_features: int) -> None:
    """A parquet split of random 0..4 int8 features, written a row group at a time."""
    rng = np.random.default_rng(0)
    names = [f"feature_{j:04d}" for j in range(n_features)]
    writer = None
    for first in range(0, rows, ROW_GROUP):
        n = min(ROW_GROUP, rows - first)
        index = np.arange(first, first + n)
        block = rng.integers(0, 5, size=(n, n_features), dtype=np.int8)
        columns = {"id": pa.array([f"n{i:09d}" for i in index]), "era": pa.array(index // ROWS_PER_ERA + 1)}
        columns |= {name: pa.array(block[:, j]) for j, name in enumerate(names)}
        columns["target"] = pa.array(rng.integers(0, 5, n).astype(np.float32) / 4)
        table = pa.table(columns)
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=780)
    parser.add_argument("--trees", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.parquet"
        write_split(path, args.rows, args.features)
        print(f"{args.rows:,} rows x {args.features} int8 features, {path.stat().st_size / 2**20:.0f} MB of parquet")
        print(
            f"{'mode':<7} {'int8 MB':>8} | "
            + " | ".join(f"{s:>15}" for s in ("interpreter", "load", "dataset", "train"))
        )
        for mode in ("memory", "disk"):
            spill = tmp if mode == "disk" else ""
            out = subprocess.run(
                [sys.executable, "-c", CHILD, str(path), str(args.features), str(args.trees), spill],
                capture_output=True,
                text=True,
                check=True,
                env=os.environ | {"OMP_NUM_THREADS": "1"},
            )
            found = json.loads(out.stdout.strip().splitlines()[-1])
            matrix = found["matrix_mb"]
            cells = [f"{s['seconds']:>5.1f} s {s['hwm_mb'] / matrix:>5.2f}x" for s in found["stages"].values()]
            print(f"{mode:<7} {matrix:>8.0f} | " + " | ".join(cells), flush=True)
            ratio = found["stages"]["dataset"]["hwm_mb"] / matrix
            print(
                f"        peak RSS while building the Dataset / int8 matrix = {ratio:.2f} (bar 2.0) -> "
                f"{'OK' if ratio <= 2.0 else 'OVER'}"
            )
    print("cells: wall time of the stage, then peak RSS so far (VmHWM) / int8 matrix bytes")


if __name__ == "__main__":
    main()
