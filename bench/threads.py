"""How each kind of a build's work speeds up with threads: the parallel shares `pipeline.plan` costs
a machine of more cores with (Amdahl's law, speedup 1 / ((1 - p) + p / T)).

    python -m bench.threads --data-dir DIR [--threads 2] [--repeats 3] [--era-rows 4000]

On a world of Numerai's width (`DIR`, e.g. a `bench.scale` world) it times, in wall seconds, at one
thread and at `--threads`, the best of `--repeats`:
- trees: 8 trees of the standard preset's deep LightGBM settings on the calibration's sample
  (`pipeline.calibration`), binned once;
- projection: one era's least-squares neutralization (`runtime.feature_projection`, LAPACK through
  numpy's BLAS) at `--era-rows` rows x the data's features, the build's own blend and scoring work.
(The neural members train on one torch thread whatever the machine: `members/neural.py`.)
It prints each speedup and the share p it implies, p = (1 - 1 / S) / (1 - 1 / T). Run it on a quiet
machine: another process on the cores makes every share look smaller.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import lightgbm as lgb
import numpy as np
from threadpoolctl import threadpool_limits

from pipeline.binning import Rows, labelled
from pipeline.build import BuildConfig, prepare
from pipeline.calibration import calibration_samples
from pipeline.presets import DEEP_PARAMS
from pipeline.runtime import feature_projection


def best_wall(work: Callable[[], object], repeats: int) -> float:
    """The shortest wall time of `repeats` calls (the least disturbed one)."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def share(one: float, many: float, threads: int) -> float:
    """Amdahl's parallel share of a speedup one / many on `threads` threads."""
    return (1 - many / one) / (1 - 1 / threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--era-rows", type=int, default=4000)
    args = parser.parse_args(argv)
    prep = prepare(BuildConfig(data_dir=args.data_dir, preset="standard"))
    sample, _ = calibration_samples(prep.train)
    dataset = labelled(
        Rows.of(None, [(sample, sample.era_order)], 1, sample.feature_names, 0).bin(),
        sample.targets[prep.config.target].to_numpy(),
    )
    rng = np.random.default_rng(0)
    era_x = rng.integers(0, 5, size=(args.era_rows, len(prep.features)), dtype=np.int8)
    era_scores = rng.normal(size=args.era_rows)
    era = np.zeros(args.era_rows, dtype=object)

    def trees(threads: int) -> Callable[[], object]:
        params = DEEP_PARAMS | {"num_threads": threads, "verbosity": -1, "deterministic": True}
        return lambda: lgb.train(params, dataset, num_boost_round=8)

    def projection(threads: int) -> Callable[[], object]:
        def run() -> object:
            with threadpool_limits(threads):
                return feature_projection(era_scores, era_x, era)

        return run

    work: dict[str, Callable[[int], Callable[[], object]]] = {
        f"trees ({len(sample):,} rows x {len(sample.feature_names):,})": trees,
        f"projection ({args.era_rows:,} x {len(prep.features):,}, one era)": projection,
    }
    print(f"{'work':50s} {'1 thread':>10s} {f'{args.threads} threads':>10s} {'speedup':>8s} {'share p':>8s}")
    for name, make in work.items():
        one, many = best_wall(make(1), args.repeats), best_wall(make(args.threads), args.repeats)
        print(f"{name:50s} {one:9.2f}s {many:9.2f}s {one / many:8.2f} {share(one, many, args.threads):8.2f}")


if __name__ == "__main__":
    main()
