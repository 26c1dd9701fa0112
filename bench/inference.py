"""What the pickle costs in Numerai's container: size, load time, predict time and peak memory.

    python -m bench.inference [--live-rows 6720] [--features 2748] [--eras 40] [--rows 1500] [--trees 2000]

Builds the default model set (`build_model.py` with its defaults, neutralization forced on so its
cost is counted) on a synthetic world with Numerai's full feature count, then runs the pickle on a
live era of 6,720 rows in a separate one-thread process where this package cannot be imported
(pipeline.verify), as Numerai would.
Budget: at most 20 s and 1.5 GB.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from pipeline.build import BuildConfig, build
from pipeline.synthetic import WorldSpec, write_world
from pipeline.verify import verify_pickle

BUDGET_SECONDS = 20.0
BUDGET_MB = 1536.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--live-rows", type=int, default=6720)
    parser.add_argument("--features", type=int, default=2748)
    parser.add_argument("--eras", type=int, default=40, help="eras of the training world (train and validation)")
    parser.add_argument("--rows", type=int, default=1500, help="rows per era of the training world")
    parser.add_argument("--trees", type=int, default=2000)
    parser.add_argument(
        "--neutralization",
        type=float,
        default=0.5,
        help="forced into the pickle so its per-era least-squares fit is measured (the costliest step)",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        world = write_world(
            Path(tmp) / "world",
            WorldSpec(
                n_eras=args.eras,
                n_validation_eras=max(12, args.eras // 4),
                rows_per_era=args.rows,
                live_rows=args.live_rows,
                n_features=args.features,
                seed=1,
            ),
        )
        start = time.perf_counter()
        result = build(
            BuildConfig(
                data_dir=world,
                out=Path(tmp) / "model.pkl",
                num_boost_round=args.trees,
                embargo=4,
                neutralization=args.neutralization,
                threads=1,
            )
        )
        build_seconds = time.perf_counter() - start
        report = verify_pickle(result.model_path, world / "live.parquet")
    members = ", ".join(
        f"{name} ({figures['chosen'].get('num_boost_round', '-')} trees)"
        for name, figures in result.models.items()
        if name != "ensemble"
    )
    print(
        f"model set: {members}; build took {build_seconds:.0f} s on {args.eras} eras x {args.rows} rows x "
        f"{args.features} features"
    )
    print(f"live era: {report.live_rows} rows x {args.features} features, one thread, package not importable")
    print(f"{'pickle size':<22}{report.size_mb:>10.1f} MB")
    print(f"{'load time':<22}{report.load_s:>10.2f} s")
    print(f"{'predict wall time':<22}{report.predict_s:>10.2f} s   (budget {BUDGET_SECONDS:.0f} s)")
    print(f"{'peak RSS':<22}{report.peak_rss_mb:>10.0f} MB  (budget {BUDGET_MB:.0f} MB)")
    within = report.ok and report.predict_s <= BUDGET_SECONDS and report.peak_rss_mb <= BUDGET_MB
    print("within budget" if within else f"OVER BUDGET or failed: {report.problems}")


if __name__ == "__main__":
    main()
