"""Benchmark of the synthetic Numerai world: is the signal Numerai-like, and does generation scale?

1. On the default world: Numerai's example LightGBM (all features, every 4th train era, target
   `target`) scored on validation eras that have targets, after a 4-era embargo, against the oracle.
2. Wall time and peak memory of `python -m pipeline.synthetic` at Numerai's width (2,748 features,
   4,800 rows per era) for a few era counts, with a linear extrapolation to the full 574 train eras
   (or the real full size with --full).

Run: `python -m bench.synthetic [--data DIR] [--sizes 20 60 120] [--full] [--skip-scale]`.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import lightgbm as lgb
import numpy as np
import pandas as pd
import psutil

from pipeline.metrics import per_era_corr, summarize
from pipeline.synthetic import DEFAULT_WORLD, write_world

REPO = Path(__file__).resolve().parents[1]

NUMERAI_FEATURES = 2748
NUMERAI_ROWS = 4800
NUMERAI_TRAIN_ERAS = 574
EMBARGO_ERAS = 4


def score_world(data_dir: Path) -> pd.DataFrame:
    """Example model, benchmark column and oracle: validation CORR summaries, one row each."""
    features = json.loads((data_dir / "features.json").read_text())["feature_sets"]["all"]
    train = pd.read_parquet(data_dir / "train.parquet", columns=["era", "target", *features])
    eras = np.sort(train["era"].unique())
    train = train[train["era"].isin(eras[::4])]
    model = lgb.LGBMRegressor(
        n_estimators=2000, learning_rate=0.01, max_depth=5, num_leaves=31, colsample_bytree=0.1, verbose=-1
    )
    start = time.perf_counter()
    model.fit(train[features], train["target"])
    fit_s = time.perf_counter() - start
    del train

    validation = pd.read_parquet(data_dir / "validation.parquet", columns=["era", "target", *features])
    validation = validation[validation["target"].notna()]
    validation = validation[validation["era"].isin(np.sort(validation["era"].unique())[EMBARGO_ERAS:])]
    oracle = pd.read_parquet(data_dir / "oracle.parquet").loc[validation.index, "oracle"]
    bench = pd.read_parquet(data_dir / "validation_benchmark_models.parquet").loc[validation.index]
    candidates = {
        f"example LGBM (fit {fit_s:.0f}s)": model.predict(validation[features]),
        f"benchmark {bench.columns[1]}": bench.iloc[:, 1],
        "oracle": oracle,
    }
    rows = {
        name: summarize(per_era_corr(np.asarray(pred), validation["target"].to_numpy(), validation["era"].to_numpy()))
        for name, pred in candidates.items()
    }
    return pd.DataFrame(rows).T[["mean", "std", "sharpe", "max_drawdown", "eras"]]


def measure_generation(n_eras: int, out_dir: Path) -> tuple[float, float, float]:
    """Generate one Numerai-width world in a child process: (seconds, peak RSS GiB, size on disk GiB)."""
    command = [
        sys.executable,
        "-m",
        "pipeline.synthetic",
        str(out_dir),
        "--quiet",
        "--eras",
        str(n_eras),
        "--validation-eras",
        str(max(5, n_eras // 10)),
        "--rows",
        str(NUMERAI_ROWS),
        "--live-rows",
        "6700",
        "--features",
        str(NUMERAI_FEATURES),
        "--target-names",
        "20",
    ]
    start = time.perf_counter()
    child = psutil.Popen(command, cwd=REPO)
    peak = 0
    while child.poll() is None:
        try:
            peak = max(peak, child.memory_info().rss)
        except psutil.NoSuchProcess:
            break
        time.sleep(0.05)
    seconds = time.perf_counter() - start
    if child.returncode != 0:
        raise RuntimeError(f"generation of {n_eras} eras failed with exit code {child.returncode}")
    size = sum(p.stat().st_size for p in out_dir.iterdir())
    return seconds, peak / 2**30, size / 2**30


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, help="default world directory (generated there if missing)")
    parser.add_argument("--sizes", type=int, nargs="+", default=[20, 60, 120], help="era counts at Numerai width")
    parser.add_argument(
        "--full", action="store_true", help=f"also generate the true full size ({NUMERAI_TRAIN_ERAS} train eras)"
    )
    parser.add_argument("--skip-scale", action="store_true", help="only score the default world")
    args = parser.parse_args()
    pd.set_option("display.width", 120)

    with tempfile.TemporaryDirectory() as tmp:
        data_dir = args.data or Path(tmp) / "default"
        if not (data_dir / "features.json").exists():
            start = time.perf_counter()
            write_world(data_dir, DEFAULT_WORLD, progress=False)
            print(f"default world generated in {time.perf_counter() - start:.1f}s: {DEFAULT_WORLD}")
        print("\nValidation CORR on the default world (labelled validation eras after a 4-era embargo)")
        print(score_world(data_dir).to_string(float_format=lambda v: f"{v:.4f}"))

        if args.skip_scale:
            return
        sizes = list(args.sizes) + ([NUMERAI_TRAIN_ERAS + 100] if args.full else [])
        rows = []
        for n_eras in sizes:
            out = Path(tmp) / f"scale_{n_eras}"
            seconds, peak, disk = measure_generation(n_eras, out)
            rows.append(
                {
                    "eras": n_eras,
                    "rows": f"~{n_eras * NUMERAI_ROWS:,}",
                    "seconds": seconds,
                    "peak RSS GiB": peak,
                    "disk GiB": disk,
                }
            )
            subprocess.run(["rm", "-rf", str(out)], check=True)
        table = pd.DataFrame(rows)
        print(f"\nGeneration at Numerai width ({NUMERAI_FEATURES} features, ~{NUMERAI_ROWS} rows/era, 20 target names)")
        print(table.to_string(index=False, float_format=lambda v: f"{v:.2f}"))
        if not args.full and len(table) >= 2:
            full = NUMERAI_TRAIN_ERAS + 100  # train plus ~100 validation eras, as in v5.2
            columns = ["seconds", "peak RSS GiB", "disk GiB"]
            seconds, peak, disk = (np.polyval(np.polyfit(table["eras"], table[c], 1), full) for c in columns)
            print(
                f"Extrapolation (linear fit of the rows above, not measured) to {full} eras "
                f"(574 train + ~100 validation): ~{seconds / 60:.0f} min, "
                f"peak RSS ~{peak:.1f} GiB, ~{disk:.1f} GiB on disk."
            )


if __name__ == "__main__":
    main()
