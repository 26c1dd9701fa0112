"""Does the forward-chained CV predict held-out validation? Numerai's example model, both figures.

    python -m bench.cv [--data-dir DIR] [--folds 4] [--embargo 8] [--trees 2000] [--era-stride 4]

Prints the out-of-fold CV per-era CORR (folds over training eras only, embargoed) next to the CORR
on validation eras after the embargo, scored once by a model trained on all training eras with the
tree count the CV chose, plus the CV curve over tree counts.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from pipeline import data as nd
from pipeline.cv import EraWalkForward, holdout_eras
from pipeline.evaluate import cv_lgbm, strided_rows
from pipeline.metrics import per_era_corr, summarize
from pipeline.models.lgbm import EXAMPLE_PARAMS, LGBMModel
from pipeline.synthetic import default_data_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", type=Path, default=None, help="default: the default synthetic world")
    parser.add_argument("--folds", type=int, default=4)
    parser.add_argument("--embargo", type=int, default=8)
    parser.add_argument("--trees", type=int, default=2000)
    parser.add_argument("--era-stride", type=int, default=4)
    args = parser.parse_args()
    data_dir = args.data_dir or default_data_dir()
    features = nd.resolve_features(data_dir, "all")
    train = nd.load_split(data_dir / "train.parquet", features, data_type="train")
    validation = nd.load_split(data_dir / "validation.parquet", features, data_type="validation")

    start = time.perf_counter()
    folds = EraWalkForward(args.folds, args.embargo, min_train_eras=len(train.era_order) // 2).era_folds(
        train.era_order
    )
    member = LGBMModel(EXAMPLE_PARAMS, args.trees)
    cv = cv_lgbm(member, train, "target", folds, args.era_stride, name="example")
    cv_seconds = time.perf_counter() - start

    member.num_boost_round = cv.chosen["num_boost_round"]
    y = train.targets["target"].to_numpy()
    member.fit(train.features, y, rows=strided_rows(train, train.era_order, args.era_stride), feature_names=features)
    rows = validation.select_eras(holdout_eras(train.era_order, validation.era_order, args.embargo))
    val = per_era_corr(
        member.predict(validation.features[rows].astype(np.float32)),
        validation.targets["target"].to_numpy()[rows],
        validation.eras[rows],
    )

    cv_s, val_s = summarize(cv.per_era), summarize(val)
    print(
        f"data: {data_dir} ({len(train)} train rows, {len(features)} features); {args.folds} folds, embargo "
        f"{args.embargo}"
    )
    for k, (tr, va) in enumerate(folds, 1):
        print(f"  fold {k}: train {tr[0]}..{tr[-1]} ({len(tr)} eras) -> validate {va[0]}..{va[-1]} ({len(va)} eras)")
    print(f"\nNumerai's example model, trees chosen by CV: {cv.chosen['num_boost_round']} (CV took {cv_seconds:.0f} s)")
    print(f"{'':<28}{'CORR mean':>10}{'std':>8}{'Sharpe':>8}{'max DD':>8}{'eras':>6}")
    for label, s in (("CV (out-of-fold)", cv_s), ("validation (held out)", val_s)):
        print(
            f"{label:<28}{s['mean']:>10.4f}{s['std']:>8.4f}{s['sharpe']:>8.2f}{s['max_drawdown']:>8.4f}{s['eras']:>6d}"
        )
    gap = val_s["mean"] - cv_s["mean"]
    stderr = np.hypot(cv_s["std"] / np.sqrt(cv_s["eras"]), val_s["std"] / np.sqrt(val_s["eras"]))
    print(f"validation - CV = {gap:+.4f} (standard error of the difference {stderr:.4f}: {abs(gap) / stderr:.1f} se)")
    print("\nCV curve (mean out-of-fold CORR by tree count):")
    print("  " + "  ".join(f"{int(k)}:{v:.4f}" for k, v in cv.curve.items()))


if __name__ == "__main__":
    main()
