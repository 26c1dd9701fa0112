"""Benchmark of TSMixer-Ext against the plain MLP and Numerai's example LightGBM, on the default world.

1. The neural models train on every `--era-stride`-th train era (default: all) with the same epoch
   budget, learning-rate schedule, loss (cross-entropy, auxiliary MSE and a weight times the era-wise
   correlation) and early stopping (the newest `--valid-eras` of those eras after an 8-era
   embargo); TSMixer-Ext at `--tsmixer-lr` and `--tsmixer-corr-weight`, the MLPs at `--lr` and
   `--corr-weight`, all with dropout 0.1 (each net's settings chosen on its own train-era
   early-stopping CORR) and an `--ema-decay` moving average of the weights (adopted for both nets
   on validation-era figures). The example LightGBM trains on every 4th era, as build.py trains it.
   All are scored once with per-era numerai_corr on the validation eras more than 8 eras after the
   last train era; nothing is chosen on them.
2. The MLP on scaled features (the plain baseline) and on per-bin one-hot inputs; the ablations of
   TSMixer-Ext without era context and with a regression head instead of the 5-class CE head; with
   `--ablations`, also contiguous-chunk tokens instead of correlation clusters, and bin embeddings.
   The TSMixer-Ext variant compared is the one with the best early-stopping CORR. It and the plain
   MLP are refitted on `--seeds` seeds in all (default 3) and the verdict is the per-era paired
   difference of their seed rank averages' validation CORR (mean +- one standard error): "beats"
   needs more than 2 standard errors. On a synthetic world, every model is also scored by its rank
   correlation with the truth (oracle.parquet, E[target | features]), which the target's noise
   does not blur.
3. Optionally (`--search-trials N`), a bounded `search` (walk-forward CV inside train).
4. The numpy forward pass of an exported TSMixer-Ext at Numerai's width (6,720 rows x 2,748
   features), timed in a separate process with one BLAS/OpenMP thread.

`--threads` defaults to 1: on a busy 2-core machine two torch threads were measured 10x slower per
step than one (OpenMP oversubscription).

Run: `python -m bench.tsmixer [--data DIR] [--seeds 3] [--threads 1] [--epochs 8] [--ema-decay 0.99]
[--era-stride 1] [--ablations] [--search-trials 0]`.
"""

from __future__ import annotations

import argparse
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from pipeline import data as nd  # noqa: E402
from pipeline.cv import EMBARGO_20D, holdout_eras  # noqa: E402
from pipeline.metrics import paired_difference, per_era_benchmark_corr, per_era_corr, summarize  # noqa: E402
from pipeline.models.lgbm import EXAMPLE_PARAMS, EXAMPLE_ROUNDS, LGBMModel  # noqa: E402
from pipeline.models.tsmixer import EraNetEstimator, MLPBaseline, TSMixerExt, n_parameters, search  # noqa: E402
from pipeline.runtime import blend_ranks  # noqa: E402
from pipeline.synthetic import FEATURE_GROUPS, default_data_dir  # noqa: E402
from pipeline.verify import ONE_THREAD_ENV  # noqa: E402

NUMERAI_FEATURES = 2748
LIVE_ROWS = 6720

TIMING_CHILD = r"""
import pickle, sys, time
import numpy as np
sys.path.insert(0, sys.argv[2])
from pipeline import runtime
member = pickle.load(open(sys.argv[1], "rb"))
shape = (int(sys.argv[3]), len(member["config"]["feature_names"]))
x = np.random.default_rng(0).integers(0, 5, size=shape).astype(np.float32)
runtime.neural_member_scores(member, x[:100])
times = []
for _ in range(3):
    t0 = time.perf_counter(); runtime.neural_member_scores(member, x); times.append(time.perf_counter() - t0)
print(min(times), max(times), "torch" in sys.modules)
"""


def numerai_width_member(params: dict) -> dict:
    """An exported TSMixer-Ext at Numerai's width, with Numerai's 8 groups and ungrouped features.

    It is fitted for one epoch on a few random eras only to obtain real exported arrays."""
    rng = np.random.default_rng(0)
    names = [f"feature_{i:04d}" for i in range(NUMERAI_FEATURES)]
    sets, start = {}, 0
    for group, size in FEATURE_GROUPS.items():
        sets[group] = names[start : start + size]
        start += size
    eras = np.repeat(np.asarray([f"{e:04d}" for e in range(1, 13)], dtype=object), 40)
    frame = nd.EraFrame(
        path=Path("random"),
        ids=np.arange(len(eras)).astype(str).astype(object),
        eras=eras,
        features=rng.integers(0, 5, size=(len(eras), NUMERAI_FEATURES), dtype=np.int8),
        feature_names=names,
        targets=pd.DataFrame({"target": rng.choice([0, 0.25, 0.5, 0.75, 1], len(eras)).astype(np.float32)}),
    )
    model = TSMixerExt(
        **params | {"max_epochs": 1, "progress": False, "n_valid_eras": 2, "embargo": 1}, feature_sets=sets
    )
    return model.fit(frame).export("tsmixer_numerai_width")


def time_numpy_forward(member: dict) -> tuple[float, float, bool]:
    """(best, worst) seconds of 3 runs of the numpy forward on 6,720 rows, one thread, no torch."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "member.pkl"
        path.write_bytes(pickle.dumps(member))
        env = {"PATH": "/usr/bin:/bin"} | ONE_THREAD_ENV
        out = subprocess.run(
            [sys.executable, "-c", TIMING_CHILD, str(path), str(REPO), str(LIVE_ROWS)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.split()
    return float(out[0]), float(out[1]), out[2] == "True"


def read_truth(data_dir: Path, ids: np.ndarray) -> np.ndarray | None:
    """E[target | features] of the given rows from a synthetic world's oracle.parquet; None for
    real data. Scored against it, the target's noise (most of per-era CORR's variance) drops out."""
    path = data_dir / "oracle.parquet"
    return pd.read_parquet(path).loc[ids, "oracle"].to_numpy() if path.is_file() else None


def verdict(a: pd.Series, b: pd.Series, what: str) -> str:
    """'beats' when the per-era paired difference a - b is above 2 standard errors."""
    mean, se = paired_difference(a, b)
    word = "beats" if mean > 2 * se else "does NOT beat" if mean <= 0 else "is ahead within noise (< 2 SE)"
    return f"{word} on {what}, {mean:+.4f} +- {se:.4f} ({mean / se:+.1f} SE)"


def copy_with(model: EraNetEstimator, **params: object) -> EraNetEstimator:
    """An unfitted copy of `model` with some parameters changed."""
    return type(model)(**model.get_params() | params)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, default=None, help="a data directory (default: the default synthetic world)"
    )
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--patience", type=int, default=3)
    parser.add_argument("--lr", type=float, default=3e-3, help="the MLPs' learning rate")
    parser.add_argument("--tsmixer-lr", type=float, default=2e-2)
    parser.add_argument("--corr-weight", type=float, default=3.0, help="the MLPs' era-wise correlation loss weight")
    parser.add_argument("--tsmixer-corr-weight", type=float, default=1.0)
    parser.add_argument("--ema-decay", type=float, default=0.99, help="every net's weight average per step (0: none)")
    parser.add_argument("--era-stride", type=int, default=1)
    parser.add_argument("--valid-eras", type=int, default=40)
    parser.add_argument("--eras-per-batch", type=int, default=2)
    parser.add_argument("--ablations", action="store_true", help="also TSMixer-Ext with contiguous tokens / bins")
    parser.add_argument("--search-trials", type=int, default=0)
    parser.add_argument("--search-budget", type=float, default=240.0)
    parser.add_argument("--search-epochs", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the chosen TSMixer-Ext variant and the MLP")
    args = parser.parse_args()
    if args.seeds < 1:
        parser.error(f"--seeds must be at least 1, got {args.seeds}")
    started = time.perf_counter()

    data_dir = args.data or default_data_dir()
    features = nd.resolve_features(data_dir, "all")
    targets = nd.target_names(data_dir)
    aux = [t for t in targets if t.endswith("_20") and t != "target_ender_20"]
    train = nd.load_split(data_dir / "train.parquet", features, ["target", *aux], data_type="train")
    validation = nd.load_split(data_dir / "validation.parquet", features, ["target"], data_type="validation")
    scored = holdout_eras(train.era_order, validation.era_order, EMBARGO_20D)
    val_rows = validation.select_eras(scored)
    y_val, eras_val = validation.targets["target"].to_numpy()[val_rows], validation.eras[val_rows]
    fit_eras = list(train.era_order[:: args.era_stride])
    sets = nd.read_features_json(data_dir)["feature_sets"]
    print(
        f"data {data_dir}: {len(features)} features, train {len(train)} rows / {len(train.era_order)} eras "
        f"(neural models fit with era stride {args.era_stride}: {len(fit_eras)} eras), aux targets {aux}, "
        f"scored {len(scored)} validation eras {scored[0]}..{scored[-1]} after an {EMBARGO_20D}-era embargo"
    )

    common = {
        "max_epochs": args.epochs,
        "patience": args.patience,
        "threads": args.threads,
        "seed": args.seed,
        "n_valid_eras": args.valid_eras,
        "eras_per_batch": args.eras_per_batch,
        "dropout": 0.1,
        "ema_decay": args.ema_decay,
        "progress": False,
    }
    trained = common | {"lr": args.lr, "corr_weight": args.corr_weight}
    tsm_params = (
        {"d": 32, "ff": 64, "context_dim": 8, "n_block": 2, "token_size": 10}
        | common
        | {"lr": args.tsmixer_lr, "corr_weight": args.tsmixer_corr_weight}
    )
    runs = {
        "tsmixer_ext": TSMixerExt(**tsm_params, feature_sets=sets),
        "mlp": MLPBaseline(hidden=(64, 64), **trained),
        "mlp_one_hot": MLPBaseline(hidden=(64, 64), one_hot=True, **trained),
        "tsmixer_ext_no_context": TSMixerExt(**tsm_params | {"era_context": False}, feature_sets=sets),
        "tsmixer_ext_regression": TSMixerExt(**tsm_params | {"head": "regression"}, feature_sets=sets),
    }
    if args.ablations:
        runs["tsmixer_ext_contiguous_tokens"] = TSMixerExt(**tsm_params | {"cluster_tokens": False}, feature_sets=sets)
        runs["tsmixer_ext_bins"] = TSMixerExt(**tsm_params | {"bin_embedding": True}, feature_sets=sets)
    truth = read_truth(data_dir, validation.ids[val_rows])
    rows, preds, scores, truth_scores = [], {}, {}, {}

    def record(name: str, prediction: np.ndarray, extra: dict) -> None:
        preds[name] = prediction
        scores[name] = per_era_corr(prediction, y_val, eras_val)
        summary = summarize(scores[name])
        row = {
            "model": name,
            "corr_mean": summary["mean"],
            "sharpe": summary["sharpe"],
            "max_dd": summary["max_drawdown"],
        }
        if truth is not None:
            truth_scores[name] = per_era_benchmark_corr(prediction, truth, eras_val)
            row["corr_with_truth"] = float(truth_scores[name].mean())
        rows.append(row | extra)
        print(rows[-1], flush=True)

    def fit_net(name: str, model: EraNetEstimator) -> None:
        t0 = time.perf_counter()
        model.fit(train, fit_eras, aux_targets=aux)
        record(
            name,
            model.predict(validation.features[val_rows], eras_val),
            {
                "params": n_parameters(model),
                "best_epoch": model.best_epoch_,
                "epochs_run": len(model.history_),
                "early_stop_corr": model.best_valid_corr_,
                "seconds": time.perf_counter() - t0,
            },
        )

    for name, model in runs.items():
        fit_net(name, model)

    t0 = time.perf_counter()
    lgbm = LGBMModel(EXAMPLE_PARAMS, EXAMPLE_ROUNDS, seed=args.seed, num_threads=args.threads)
    lgbm_rows = train.select_eras(list(train.era_order[::4]))
    lgbm.fit(train.features, train.targets["target"].to_numpy(), rows=lgbm_rows, feature_names=features)
    record("lgbm_example", lgbm.predict(validation.features[val_rows]), {"seconds": time.perf_counter() - t0})

    # The TSMixer-Ext variant compared is chosen on the early-stopping CORR (newest train eras), never
    # on the validation eras. It and the plain MLP are then refitted on more seeds and the verdict is
    # on each one's rank average over seeds: a single seed's luck moves a net's score by about as
    # much as the difference being judged.
    es_corr = {row["model"]: row["early_stop_corr"] for row in rows if "early_stop_corr" in row}
    chosen = max((name for name in runs if name.startswith("tsmixer")), key=es_corr.__getitem__)
    seeds = [args.seed + k for k in range(args.seeds)]
    for name in (chosen, "mlp"):
        for seed in seeds[1:]:
            fit_net(f"{name}_seed{seed}", copy_with(runs[name], seed=seed))
        if len(seeds) > 1:
            members = [name] + [f"{name}_seed{seed}" for seed in seeds[1:]]
            blended = blend_ranks(np.column_stack([preds[m] for m in members]), np.ones(len(members)), eras_val)
            record(f"{name}_x{len(seeds)}_seeds", blended, {})
    table = pd.DataFrame(rows).set_index("model")
    counts = [c for c in ("params", "best_epoch", "epochs_run") if c in table]
    table[counts] = table[counts].astype("Int64")
    table["rank_corr_with_lgbm"] = pd.Series(
        {
            name: float(per_era_benchmark_corr(prediction, preds["lgbm_example"], eras_val).mean())
            for name, prediction in preds.items()
            if name != "lgbm_example"
        }
    )

    t0 = time.perf_counter()
    search_table = None
    if args.search_trials > 0:
        space = {
            "n_block": [1, 2],
            "d": [16, 32],
            "dropout": [0.0, 0.1],
            "lr": [3e-3, 2e-2],
            "era_context": [True, False],
            "cluster_tokens": [True, False],
        }
        search_table = search(
            train,
            space=space,
            base_params={"ff": 64, "context_dim": 8, "feature_sets": sets}
            | common
            | {"max_epochs": args.search_epochs},
            n_trials=args.search_trials,
            budget_s=args.search_budget,
            n_splits=1,
            eras=fit_eras,
            aux_targets=aux,
            seed=args.seed,
        )
    search_seconds = time.perf_counter() - t0

    best, worst, torch_loaded = time_numpy_forward(numerai_width_member(tsm_params))

    pd.set_option("display.width", 200)
    pd.set_option("display.max_columns", 20)
    print("\nValidation (per-era numerai_corr on scored eras):")
    print(table.to_string(float_format=lambda v: f"{v:.4f}"))
    pair = (f"{chosen}_x{len(seeds)}_seeds", f"mlp_x{len(seeds)}_seeds") if len(seeds) > 1 else (chosen, "mlp")
    print(
        f"\nTSMixer-Ext variant chosen on train-era early-stopping CORR: {chosen}. Per-era paired difference "
        f"(first minus second), mean +- one standard error; 'beats' needs more than 2 standard errors:"
    )
    for first, other in dict.fromkeys([pair, (chosen, "mlp"), (chosen, "mlp_one_hot"), (chosen, "lgbm_example")]):
        line = verdict(scores[first], scores[other], "validation CORR")
        if truth is not None:
            line += "; " + verdict(truth_scores[first], truth_scores[other], "rank correlation with the truth")
        print(f"  {first} vs {other}: {line}")
    for seed in seeds[1:]:
        mean, se = paired_difference(scores[f"{chosen}_seed{seed}"], scores[f"mlp_seed{seed}"])
        print(f"  seed {seed} alone: {mean:+.4f} +- {se:.4f} validation CORR")
    if search_table is not None:
        print(f"\nSearch ({len(search_table)} trials, walk-forward CV inside train, {search_seconds:.0f} s):")
        print(search_table.drop(columns=["trial"]).to_string(float_format=lambda v: f"{v:.4f}"))
    print(
        f"\nnumpy forward of TSMixer-Ext at {LIVE_ROWS} x {NUMERAI_FEATURES}, 1 thread: best {best:.2f} s, "
        f"worst {worst:.2f} s of 3 (limit 10 s; torch imported: {torch_loaded})"
    )
    print(f"total bench time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
