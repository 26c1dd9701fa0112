"""LightGBM on one machine vs on a local Dask cluster of N workers: validation CORR and wall time.

    python -m bench.dask [--data-dir DIR] [--workers 2] [--trees 300] [--era-stride 4] [--embargo 8]

Both train Numerai's example parameters at a 5x learning rate with the same seed on the same
training eras: in this process (one thread) and through `lightgbm.dask` on `--workers` one-thread
worker processes that read the parquet file themselves. Both are scored per era on the validation
eras after the embargo. Wall times include the Dask cluster's start and its parquet reading.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline import data as nd
from pipeline.build import default_data_dir
from pipeline.cv import holdout_eras
from pipeline.distributed import dask_trainer
from pipeline.members import LightGBMMember
from pipeline.metrics import paired_difference, per_era_corr, summarize
from pipeline.models.lgbm import EXAMPLE_PARAMS, LGBMModel
from pipeline.presets import faster


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: the default synthetic world")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--era-stride", type=int, default=4)
    parser.add_argument("--embargo", type=int, default=8)
    args = parser.parse_args()
    data_dir = args.data_dir or default_data_dir()
    features = nd.resolve_features(data_dir, "all")
    train = nd.load_split(data_dir / "train.parquet", features, data_type="train")
    validation = nd.load_split(data_dir / "validation.parquet", features, data_type="validation")
    rows = validation.select_eras(holdout_eras(train.era_order, validation.era_order, args.embargo))
    y = validation.targets[nd.MAIN_TARGET].to_numpy()[rows]

    def member() -> LGBMModel:
        return LGBMModel(faster(EXAMPLE_PARAMS, 5), args.trees, seed=0, num_threads=1)

    per_era, seconds = {}, {}
    start = time.perf_counter()
    single = LightGBMMember("single", member(), nd.MAIN_TARGET, args.era_stride)
    single.fit([train], features, "single machine")
    seconds["single machine"] = time.perf_counter() - start
    per_era["single machine"] = per_era_corr(single.predict(validation.features[rows], None), y, validation.eras[rows])

    start = time.perf_counter()
    with dask_trainer(local_workers=args.workers) as trainer:
        started = time.perf_counter() - start
        on_cluster = LightGBMMember("dask", member(), nd.MAIN_TARGET, args.era_stride, trainer=trainer)
        on_cluster.fit([train], features, "dask")
    seconds[f"dask, {args.workers} workers"] = time.perf_counter() - start
    per_era[f"dask, {args.workers} workers"] = per_era_corr(
        on_cluster.predict(validation.features[rows], None), y, validation.eras[rows]
    )

    print(
        f"{data_dir}: {len(features)} features, {len(train.era_order[:: args.era_stride])} training eras "
        f"(every {args.era_stride}th), {args.trees} trees; validation eras after a {args.embargo}-era embargo: "
        f"{len(rows)} rows"
    )
    print(f"{'model':<22} {'CORR mean':>9} {'std':>7} {'Sharpe':>7} {'eras':>5} {'wall s':>7}")
    for name, scores in per_era.items():
        s = summarize(scores)
        print(f"{name:<22} {s['mean']:>9.4f} {s['std']:>7.4f} {s['sharpe']:>7.2f} {s['eras']:>5} {seconds[name]:>7.1f}")
    mean, se = paired_difference(per_era[f"dask, {args.workers} workers"], per_era["single machine"])
    print(
        f"difference (dask - single): {mean:+.4f}, standard error {se:.4f}; "
        f"cluster start {started:.1f} s of the Dask wall time"
    )


if __name__ == "__main__":
    main()
