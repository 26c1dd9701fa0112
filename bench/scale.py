"""Memory and time per stage as the data grows towards Numerai's full size (2,748 features x 2.75M rows).

    python -m bench.scale [--eras 20 60 120] [--rows 4800] [--features 2748] [--trees 50] [--modes memory disk]

For each size: writes a synthetic world of that many eras (Numerai's width), then in a fresh process
per mode runs the build's own stages one after the other and prints wall time and peak RSS (VmHWM,
the interpreter included) after each, as a ratio to the int8 feature matrix's bytes. Modes: the int8
matrix in memory (the default build), or in a file on disk (`--spill-dir`; its pages are given back
after each batch, so the page cache holds it, not the process):
  load      parquet -> int8 matrix, a row group and a block of columns at a time (`pipeline.data.load_split`)
  pipeline  feature pipeline fitted on all eras (cluster means; `pipeline.features`)
  dataset   LightGBM Dataset built through `lgb.Sequence` from int8 batches, transformed on the fly
  train     a few trees of the demo preset's deep member
Issue bar: at most 1.6 at the full size.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from pipeline.synthetic import DEFAULT_WORLD, write_world

CHILD = r"""
import json, sys, time
from pathlib import Path
from pipeline import data as nd
from pipeline.presets import DEEP_PARAMS, faster
from pipeline.features import FeaturePipeline
from pipeline.models.lgbm import LGBMModel, int8_dataset
from pipeline.verify_child import peak_rss_mb

world, trees, spill = Path(sys.argv[1]), int(sys.argv[2]), sys.argv[3] or None
stages, start = [], time.perf_counter()
def stage(name):
    global start
    stages.append({"stage": name, "seconds": time.perf_counter() - start, "hwm_mb": peak_rss_mb()})
    start = time.perf_counter()
features = nd.resolve_features(world, "all")
train = nd.load_split(world / "train.parquet", features, ["target"], data_type="train", spill_dir=spill)
stage("load")
pipeline = FeaturePipeline(nd.feature_groups(world, features), group_stats=False).fit([(train, train.era_order)])
stage("pipeline")
y = train.targets["target"].to_numpy()
dataset = int8_dataset([(pipeline.inputs(train), y, None)], pipeline.feature_names_).construct()
stage("dataset")
member = LGBMModel(faster(DEEP_PARAMS, 5), trees, num_threads=1)
member.booster_ = __import__("lightgbm").train(member.lgb_params(), dataset, num_boost_round=trees)
stage("train")
print(json.dumps({"rows": len(train), "matrix_mb": train.features.nbytes / 2**20, "stages": stages}))
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eras", type=int, nargs="+", default=[20, 60, 120], help="eras of each world (all train)")
    parser.add_argument("--rows", type=int, default=4800, help="rows per era (Numerai: about 4,800 in recent eras)")
    parser.add_argument("--features", type=int, default=2748)
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--modes", nargs="+", choices=("memory", "disk"), default=["memory", "disk"])
    args = parser.parse_args()
    print(
        f"{'rows':>9} {'int8 MB':>8} {'mode':>6} | "
        + " | ".join(f"{s:>16}" for s in ("load", "pipeline", "dataset", "train"))
    )
    for eras in args.eras:
        with tempfile.TemporaryDirectory() as tmp:
            spec = dataclasses.replace(
                DEFAULT_WORLD,
                n_eras=eras + 2,
                n_validation_eras=2,
                n_unlabelled_eras=0,
                rows_per_era=args.rows,
                n_features=args.features,
                n_target_names=2,
            )
            write_world(Path(tmp) / "world", spec, progress=False)
            for mode in args.modes:
                out = subprocess.run(
                    [
                        sys.executable,
                        "-c",
                        CHILD,
                        str(Path(tmp) / "world"),
                        str(args.trees),
                        tmp if mode == "disk" else "",
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=os.environ | {"OMP_NUM_THREADS": "1"},
                )
                found = json.loads(out.stdout.strip().splitlines()[-1])
                cells = [f"{s['seconds']:>6.1f} s {s['hwm_mb'] / found['matrix_mb']:>5.2f}x" for s in found["stages"]]
                print(f"{found['rows']:>9,} {found['matrix_mb']:>8.0f} {mode:>6} | " + " | ".join(cells), flush=True)
    print("cells: wall time of the stage, then peak RSS so far / int8 matrix bytes (bar at full size: 1.6)")


if __name__ == "__main__":
    main()
