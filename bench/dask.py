"""The CV of LightGBM members on one machine vs on a local Dask cluster of N workers: CV CORR and wall time.

    python -m bench.dask [--data-dir DIR] [--workers 2] [--trees 300] [--folds 3]

Both run the CV of the demo preset's example member and its auxiliary-target member (cluster means,
group statistics) with `--trees` trees and the same seed: in this process (one thread), and as tasks
on `--workers` one-thread Dask worker processes that read the parquet files themselves
(`pipeline.distributed.DaskRunner`, the path of --dask-local). The per-era CV CORR must be the same;
wall times include the cluster's start and the workers' parquet reading.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from pipeline.build import BuildConfig, FeatureChoice, cross_validate, prepare
from pipeline.distributed import dask_runner
from pipeline.feature_choice import fold_pipelines
from pipeline.metrics import summarize
from pipeline.parallel import active

SETTINGS = {"missing": "nan", "clusters": True, "group_stats": True, "mixing": False}
MEMBERS = ("lgbm_example", "lgbm_aux20")


def run_cv(config: BuildConfig, runner=None) -> tuple[dict, float]:
    start = time.perf_counter()
    prep = prepare(config, runner)
    prep.members = [m for m in prep.members if m.name in MEMBERS]
    if len(prep.members) != len(MEMBERS):
        raise ValueError(f"bench.dask needs the members {MEMBERS}; the data gave {[m.name for m in prep.members]}")
    choice = FeatureChoice(fold_pipelines(prep.train, prep.folds, prep.groups, SETTINGS), SETTINGS, {})
    results = cross_validate(prep, choice, {}, []).results
    return results, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: the default synthetic world")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--trees", type=int, default=300)
    parser.add_argument("--folds", type=int, default=3)
    args = parser.parse_args()
    config = BuildConfig(data_dir=args.data_dir, num_boost_round=args.trees, threads=1, cv_folds=args.folds)
    here, here_seconds = run_cv(config)
    start = time.perf_counter()
    with dask_runner(local_workers=args.workers) as runner, active(runner):
        started = time.perf_counter() - start
        there, there_seconds = run_cv(config, runner)
    print(f"{'member':<14} {'where':<18} {'CV CORR':>8} {'Sharpe':>7} {'eras':>5} {'same per-era CORR':>18}")
    for name in here:
        for where, results in (("one machine", here), (f"dask, {args.workers} workers", there)):
            s = summarize(results[name].per_era)
            same = results[name].per_era.equals(here[name].per_era)
            print(f"{name:<14} {where:<18} {s['mean']:>8.4f} {s['sharpe']:>7.2f} {s['eras']:>5} {str(same):>18}")
    print(
        f"wall time: one machine {here_seconds:.1f} s, dask {there_seconds:.1f} s "
        f"(plus {started:.1f} s to start the cluster)"
    )


if __name__ == "__main__":
    main()
