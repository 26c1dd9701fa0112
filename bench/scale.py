"""Memory and time per stage as the data grows towards Numerai's full size (2,748 features x 2.75M rows).

    python -m bench.scale [--eras 20 60 120] [--rows 4800] [--features 2748] [--trees 50] [--modes memory disk]
    python -m bench.scale --build [--build-rows 100 300 800] [--build-eras 100] [--trees 50] [--threads 1]
    python -m bench.scale --fits [--rows 4800] [--fit-eras 130] [--build-eras 100] [--trees 50]
    python -m bench.scale --full-size DATA_DIR

`--fits`: what the full-size plan rests on. The plan costs a LightGBM fit from measurements on a
sample of the data it is given (`pipeline.calibration`): binning, a fit's setup, each tree and
prediction. This calibrates on a Numerai-width world of 100 rows per era (the world `--build`'s
full-size plans are calibrated on) and on one of `--rows` rows per era (`--fit-eras` eras), then
bins the standard preset's engineered view of a quarter, half and all of the latter's training eras
and trains `--trees` trees of its deep settings on them, one thread, and prints each cost measured
next to what each calibration plans for it.

`--build`: complete builds of the default preset (and of `standard` at the smallest size) on
Numerai-width worlds of `--build-eras` eras x each `--build-rows` rows per era, each in a fresh
process: first `build_model.py plan --json` with the build's options, then the build itself; prints
each stage's measured seconds and peak RSS (the report's "timings") next to the plan's, and the
measured total against the plan's (bar: within 25 %), and the plan given the build's own choices
(`plan --choices` its report: what the cost model misses once the CV's choices are known). Then the
plan of `standard` at Numerai's full size (2,750,000 rows x 2,748 features in 680 eras) on 2 cores
and on 16 (with --jobs 1, 4 and 8), all from one calibration on the smallest world
(`--full-size DATA_DIR`: only those plans, calibrated on that data).

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


def stages(args: argparse.Namespace) -> None:
    """The stages of one member's path at each size, in memory and on disk."""
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


FITS = r"""
import json, sys, time
import lightgbm as lgb
from threadpoolctl import threadpool_limits
from pipeline.binning import Rows, labelled
from pipeline.build import prepare
from pipeline.calibration import Calibration, View, timed
from pipeline.config import BuildConfig
from pipeline.features import FeaturePipeline
from pipeline.models.lgbm import LGBMModel
from pipeline.presets import DEEP_PARAMS
from pipeline.runtime import booster_predict

worlds, trees = sys.argv[1:3], int(sys.argv[3])
params = LGBMModel(DEEP_PARAMS).lgb_params() | {"num_threads": 1}
preps = [prepare(BuildConfig(data_dir=world, preset="standard")) for world in worlds]
prep = preps[-1]  # measured on the last world; every world's calibration plans for its training rows
costs = {world: Calibration(each, 0.0, len(prep.train)).costs for world, each in zip(worlds, preps)}
train, eras = prep.train, prep.train.era_order
pipeline = FeaturePipeline(prep.groups, missing="keep", clusters=True, group_stats=True).fit([(train, eras)])
view = View(len(prep.features), len(pipeline.feature_names_) - len(prep.features), False)
with threadpool_limits(1):
    for share in (4, 2, 1):
        rows = Rows.of(pipeline, [(train, eras[-(len(eras) // share):])], 1, pipeline.feature_names_, 0)
        start = time.process_time()
        dataset = labelled(rows.bin(), rows.labels(prep.config.target))
        binning = time.process_time() - start
        one = timed(lgb.train, params, dataset, num_boost_round=1)
        start = time.process_time()
        booster = lgb.train(params, dataset, num_boost_round=trees)
        per_tree = (time.process_time() - start - one) / (trees - 1)
        scored = pipeline.matrix(train.features[-len(rows) // 4:], train.eras[-len(rows) // 4:])
        predict = timed(booster_predict, booster, scored)
        measured = {"binning": binning, "setup": max(0.0, one - per_tree), "tree": per_tree, "predict": predict}
        planned = {
            world: {
                "binning": c.binning(len(rows), view, len(rows)),
                "setup": c.setup(params, view.width),
                "tree": c.tree(params, len(rows), view.width),
                "predict": c.predict(params, len(scored), trees),
            }
            for world, c in costs.items()
        }
        found = {"rows": len(rows), "columns": view.width, "measured": measured, "planned": planned}
        print(json.dumps(found), flush=True)
"""


def json_lines(stdout: str) -> list[dict]:
    """The JSON objects a child printed, one a line (other lines, a library's stray output, skipped)."""
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def fits(args: argparse.Namespace) -> None:
    """Binning, setup, trees and prediction measured at Numerai's rows per era against the plan's
    costs from two calibrations (see the module docstring)."""
    with tempfile.TemporaryDirectory() as tmp:
        worlds = []
        for rows, eras in ((100, args.build_eras), (args.rows, args.fit_eras)):
            spec = dataclasses.replace(
                DEFAULT_WORLD,
                n_eras=eras,
                n_validation_eras=max(24, eras // 4),
                rows_per_era=rows,
                live_rows=rows,
                n_features=args.features,
            )
            worlds.append(str(write_world(Path(tmp) / f"world{rows}" / "data", spec, progress=False)))
        command = [sys.executable, "-c", FITS, *worlds, str(args.trees)]
        out = subprocess.run(
            command, capture_output=True, text=True, check=True, env=os.environ | {"OMP_NUM_THREADS": "1"}
        )
    labels = {worlds[0]: "100 rows per era", worlds[1]: f"{args.rows} rows per era"}
    print(f"one thread; the standard preset's deep settings, {args.trees} trees; CPU seconds measured / planned")
    print(
        f"{'rows':>9} {'calibrated on':>18} | "
        + " | ".join(f"{c:>22}" for c in ("binning", "setup", "tree", "predict"))
    )
    for found in json_lines(out.stdout):
        for world, planned in found["planned"].items():
            cells = [
                f"{found['measured'][c]:>8.3f} / {planned[c]:>8.3f}"
                + f" {found['measured'][c] / max(planned[c], 1e-9):>4.2f}"
                for c in ("binning", "setup", "tree", "predict")
            ]
            print(f"{found['rows']:>9,} {labels[world]:>18} | " + " | ".join(cells))


def run_json(command: list[str]) -> dict:
    """The last line a command prints, as JSON (its log goes to stderr)."""
    out = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_versus_plan(world: Path, options: list[str]) -> dict:
    """The plan of a build, the build itself (its report's timings), and the plan given the build's own
    choices (`plan --choices`: what the cost model misses once the choices are known), each in a fresh
    process."""
    planning = [sys.executable, "build_model.py", "plan", "--json", "--data-dir", str(world), *options]
    plan = run_json(planning)
    out = world.parent / "model.pkl"
    subprocess.run(
        [sys.executable, "build_model.py", "--data-dir", str(world), "--out", str(out), *options],
        capture_output=True,
        check=True,
        env=os.environ | {"OMP_NUM_THREADS": "1"},
    )
    report = world.parent / "model_report"
    measured = json.loads((report / "report.json").read_text())["timings"]
    return {"plan": plan, "measured": measured, "chosen": run_json([*planning, "--choices", str(report)])}


def print_comparison(label: str, found: dict) -> float:
    """One table: each stage's measured and planned seconds (before the build, and given its choices)
    and peak RSS; returns measured / plan."""
    plan, measured, chosen = found["plan"], found["measured"], found["chosen"]
    print(f"\n{label}: plan {plan['total_seconds']:.0f} s, measured {measured['total_seconds']:.0f} s")
    print(f"{'stage':<20} {'measured s':>10} {'plan s':>8} {'given choices':>13} {'measured MB':>12} {'plan MB':>8}")
    none = {"seconds": 0.0, "peak_rss_mb": 0.0}
    for stage, figures in measured["stages"].items():
        planned, given = plan["stages"].get(stage, none), chosen["stages"].get(stage, none)
        print(
            f"{stage:<20} {figures['seconds']:>10.1f} {planned['seconds']:>8.1f} {given['seconds']:>13.1f} "
            f"{figures['peak_rss_mb']:>12.0f} {planned['peak_rss_mb']:>8.0f}"
        )
    ratio = measured["total_seconds"] / plan["total_seconds"]
    verdict = "within 25 %" if abs(ratio - 1) <= 0.25 else "OUTSIDE 25 %"
    total = f"{'total':<20} {measured['total_seconds']:>10.1f} {plan['total_seconds']:>8.1f}"
    given = measured["total_seconds"] / chosen["total_seconds"]
    print(
        f"{total} {chosen['total_seconds']:>13.1f}   measured / plan {ratio:.2f}: {verdict}; "
        f"given its choices {given:.2f}"
    )
    return ratio


FULL_SIZE = r"""
import dataclasses, json, sys
from pipeline.config import BuildConfig
from pipeline.plan import PlanFor, calibrated, make_plan

world, machines = sys.argv[1], json.loads(sys.argv[2])
config = BuildConfig(data_dir=world, preset="standard")
prep, calibration, size, _ = calibrated(config, PlanFor(rows=2_750_000, features=2748, eras=680))
for cores, jobs, torch in machines:
    options = dataclasses.replace(config, jobs=jobs, torch_processes=torch)
    plan = make_plan(dataclasses.replace(prep, config=options), calibration.costs, size, cores).to_json()
    print(json.dumps({"cores": cores, "jobs": jobs, "torch": torch} | plan), flush=True)
"""
FULL_SIZE_MACHINES = ((2, 1, 1), (2, 2, 1), (16, 1, 1), (16, 4, 1), (16, 8, 1), (16, 8, 4))


def full_size_plans(world: Path) -> None:
    """The plan of `standard` at Numerai's full size on 2 cores and on 16, every machine from one
    calibration (a calibration's figures move between runs; one keeps the machines comparable)."""
    print("\nstandard at Numerai's full size (2,750,000 rows x 2,748 features, 680 training eras), one calibration:")
    command = [sys.executable, "-c", FULL_SIZE, str(world), json.dumps(FULL_SIZE_MACHINES)]
    out = subprocess.run(command, capture_output=True, text=True, env=os.environ | {"OMP_NUM_THREADS": "1"})
    if out.returncode != 0:
        raise RuntimeError(f"the full-size plans failed:\n{out.stderr[-3000:]}")
    for plan in json_lines(out.stdout):
        stages = plan["stages"]
        one_thread = sum(item["seconds_one_thread"] for s in stages.values() for item in s["items"]) / 3600
        binning = sum(item["binning_one_thread"] for s in stages.values() for item in s["items"]) / 3600
        hours = {name: stages[name]["seconds"] / 3600 for name in ("search_gbdt", "cross_validate", "score_holdout")}
        machine = f"{plan['cores']:>2} cores, --jobs {plan['jobs']}, --torch-processes {plan['torch']}"
        print(
            f"  {machine}: {plan['total_hours']:>6.2f} h, peak {plan['peak_rss_mb'] / 1024:>6.1f} GB (search "
            f"{hours['search_gbdt']:.2f} h, CV {hours['cross_validate']:.2f} h, holdout and refit "
            f"{hours['score_holdout']:.2f} h; {one_thread:.1f} one-thread hours, {binning:.1f} of them binning)"
        )


def builds(args: argparse.Namespace) -> None:
    """Complete builds at Numerai's width against their plans (see the module docstring)."""
    common = ["--threads", str(args.threads), "--trees", str(args.trees)]
    ratios = {}
    with tempfile.TemporaryDirectory() as tmp:
        for k, rows in enumerate(args.build_rows):
            spec = dataclasses.replace(
                DEFAULT_WORLD,
                n_eras=args.build_eras,
                n_validation_eras=max(24, args.build_eras // 4),  # standard's 60-day target: embargo 16
                rows_per_era=rows,
                live_rows=rows,
                n_features=args.features,
            )
            world = write_world(Path(tmp) / f"world{k}" / "data", spec, progress=False)
            ratios[f"demo, {rows} rows per era"] = print_comparison(
                f"demo preset, {rows} rows x {args.build_eras} eras", build_versus_plan(world, common)
            )
            if k == 0:
                standard = build_versus_plan(world, [*common, "--preset", "standard"])
                ratios[f"standard, {rows} rows per era"] = print_comparison(
                    f"standard preset, {rows} rows x {args.build_eras} eras", standard
                )
                full_size_plans(world)
    print("\nmeasured / plan: " + ", ".join(f"{name} {ratio:.2f}" for name, ratio in ratios.items()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--eras", type=int, nargs="+", default=[20, 60, 120], help="eras of each world (all train)")
    parser.add_argument("--rows", type=int, default=4800, help="rows per era (Numerai: about 4,800 in recent eras)")
    parser.add_argument("--features", type=int, default=2748)
    parser.add_argument("--trees", type=int, default=50)
    parser.add_argument("--modes", nargs="+", choices=("memory", "disk"), default=["memory", "disk"])
    parser.add_argument("--build", action="store_true", help="complete builds against their plans (see above)")
    parser.add_argument("--build-rows", type=int, nargs="+", default=[100, 300, 800], help="rows per era of each world")
    parser.add_argument("--build-eras", type=int, default=100, help="eras of each build's world (train + validation)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fits", action="store_true", help="a fit's costs at --rows per era against the plan's")
    parser.add_argument("--fit-eras", type=int, default=130, help="eras of the --fits world (train + validation)")
    parser.add_argument("--full-size", type=Path, help="only the full-size plans, calibrated on this data directory")
    args = parser.parse_args()
    if args.full_size:
        full_size_plans(args.full_size)
    elif args.fits:
        fits(args)
    elif args.build:
        builds(args)
    else:
        stages(args)


if __name__ == "__main__":
    main()
