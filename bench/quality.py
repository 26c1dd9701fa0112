"""Does the ensemble beat Numerai's example model? Validation CORR of every member and the blend.

    python -m bench.quality [--preset demo] [--seeds 0 1]

For each world (the default synthetic world, and the same world drawn with other seeds) runs the
whole build (`build_model.py --preset PRESET`) and prints, on the held-out validation eras after the
embargo: CORR mean, Sharpe and max drawdown of the example model (all features), each member and
the ensemble, plus the ensemble's ratio to the example model. The bar: at least 1.3x the example
model's CORR with a Sharpe not lower.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from pipeline.build import BuildConfig, build, default_data_dir
from pipeline.synthetic import DEFAULT_WORLD, write_world


def world_dir(seed: int, scratch: Path) -> Path:
    if seed == DEFAULT_WORLD.seed:
        return default_data_dir()
    return write_world(scratch / f"world_seed{seed}", dataclasses.replace(DEFAULT_WORLD, seed=seed), progress=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--seeds", type=int, nargs="+", default=[DEFAULT_WORLD.seed, DEFAULT_WORLD.seed + 1])
    parser.add_argument("--threads", type=int, default=0, help="training threads (0: all cores; 1 on a busy machine)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            start = time.perf_counter()
            result = build(
                BuildConfig(
                    data_dir=world_dir(seed, Path(tmp)),
                    out=Path(tmp) / f"model_{seed}.pkl",
                    preset=args.preset,
                    threads=args.threads,
                )
            )
            seconds = time.perf_counter() - start
            print(
                f"\nworld seed {seed} (default world {'yes' if seed == DEFAULT_WORLD.seed else 'no'}), preset "
                f"{args.preset}, build {seconds:.0f} s"
            )
            print(f"{'model':<16}{'CV mean':>9}{'val mean':>10}{'Sharpe':>8}{'max DD':>8}")
            for name, figures in result.models.items():
                cv, val = figures["cv"], figures["validation"]
                print(
                    f"{name:<16}{cv['mean']:>9.4f}{val['mean']:>10.4f}{val['sharpe']:>8.2f}{val['max_drawdown']:>8.4f}"
                )
            example, ensemble = result.models["lgbm_example"]["validation"], result.models["ensemble"]["validation"]
            ratio = ensemble["mean"] / example["mean"]
            verdict = "meets" if ratio >= 1.3 and ensemble["sharpe"] >= example["sharpe"] else "does NOT meet"
            print(
                f"ensemble / example CORR = {ratio:.2f}x, Sharpe {ensemble['sharpe']:.2f} vs {example['sharpe']:.2f}: "
                f"{verdict} the 1.3x bar"
            )


if __name__ == "__main__":
    main()
