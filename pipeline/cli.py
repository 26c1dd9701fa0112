"""Command line of build_model.py: argparse subcommands `build` (the default), `verify` and `upload`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from pipeline import data as nd
from pipeline.budget import fit_budget
from pipeline.build import build, format_result
from pipeline.config import BuildConfig
from pipeline.cv import EMBARGO_20D
from pipeline.images import DEFAULT_IMAGE, IMAGES, ImageError, image_environment, record_run, sidecar_path
from pipeline.objective import CORR_MULTIPLIER, MMC_MULTIPLIER, OBJECTIVES
from pipeline.outputs import terminate_as_exit
from pipeline.plan import PlanFor, plan_build
from pipeline.plan_choices import Choices, read_choices
from pipeline.presets import PRESETS
from pipeline.refresh import format_refresh, refresh
from pipeline.synthetic import cache_root
from pipeline.upload import DEFAULT_DOCKER_IMAGE, add_numerai_options, upload_command
from pipeline.verify import LIMIT_SECONDS, VerificationError, file_sha256, verify_pickle

DESCRIPTION = """\
Build ONE cloudpickled predict(live_features) for Numerai's model upload, validated era-wise with
numerai-tools and verified the way Numerai's container runs it.

  python build_model.py                                   # demo: embedded synthetic data
  python build_model.py --data-dir DIR --out model.pkl    # any Numerai v5 data directory
  python build_model.py --data-dir DIR --download         # fetch v5.3 with numerapi, then build
  python build_model.py --data-dir DIR --init-model model_artifacts   # weekly refresh on the new eras
  python build_model.py verify model.pkl --live live.parquet
  python build_model.py upload model.pkl --model-name NAME [--dry-run]

  python build_model.py plan [options] [--json] [--rows R --features F --eras E] [--cores C]

Commands: build (the default: `python build_model.py [build] [options]`), plan, verify, upload;
`python build_model.py COMMAND --help` explains each.
"""


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """Where the data comes from and what of it a build reads."""
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="Numerai v5 data directory (features.json, train.parquet, validation.parquet, optional "
        "live.parquet). Default: the embedded synthetic world, generated once into the cache "
        "($NUMERAI_PIPELINE_CACHE or ~/.cache/numerai-pipeline).",
    )
    parser.add_argument(
        "--download",
        nargs="?",
        const=nd.DEFAULT_DATA_VERSION,
        default=None,
        metavar="VERSION",
        help=f"first fetch data VERSION (default {nd.DEFAULT_DATA_VERSION}; v5.2 still works) with numerapi into "
        "--data-dir, skipping files already there; each call to Numerai has a timeout and retries",
    )
    parser.add_argument(
        "--out", type=Path, default=Path("model.pkl"), help="where the verified pickle goes (default model.pkl)"
    )
    parser.add_argument(
        "--report-dir", type=Path, default=None, help="report directory (default: next to the pickle, <out>_report)"
    )
    parser.add_argument(
        "--feature-set",
        default="all",
        help="feature set or group named in features.json (small, medium, all, a group, ...); default all",
    )
    parser.add_argument("--features", default=None, help="comma-separated feature names; overrides --feature-set")
    parser.add_argument("--target", default=nd.MAIN_TARGET, help="target column to train and score on (default target)")


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The members, their CV and the blend's neutralization."""
    parser.add_argument(
        "--preset",
        default="demo",
        choices=sorted(PRESETS),
        help="members to train, blended on the CV: 'example' is Numerai's example model alone; 'demo' (default) adds "
        "deeper trees and an auxiliary-target member at a 5x learning rate (minutes on 2 cores); 'standard' trains "
        "them at full size plus a 60-day-target member (embargo 16); 'large' adds Numerai's 20,000-tree settings",
    )
    parser.add_argument(
        "--embargo",
        type=int,
        default=None,
        help=f"eras left out between training and scored eras (default {EMBARGO_20D}, or 16 when a 60-day target is "
        "trained on)",
    )
    parser.add_argument(
        "--cv-folds",
        type=int,
        default=3,
        help="forward-chained CV folds over the newer half of the training eras (default 3)",
    )
    parser.add_argument(
        "--cv-max-train-eras",
        type=int,
        default=None,
        help="rolling CV: each fold trains on at most this many newest eras before its embargo (default: expanding)",
    )
    parser.add_argument(
        "--drop-unstable",
        action="store_true",
        help="drop the features flagged as unstable over training eras (their effect on CV CORR is in the report "
        "either way)",
    )
    parser.add_argument(
        "--no-refit",
        dest="refit",
        action="store_false",
        help="ship the model trained on train eras only, instead of refitting on train and validation eras",
    )
    parser.add_argument(
        "--era-stride",
        type=int,
        default=None,
        help="train every member on every N-th era (default: each member's own; Numerai's example takes every 4th)",
    )
    parser.add_argument(
        "--trees",
        dest="num_boost_round",
        type=int,
        default=None,
        metavar="N",
        help="cap on every member's boosting rounds (default: each preset member's own, e.g. 2000 for Numerai's "
        "example)",
    )
    parser.add_argument(
        "--tree-scale",
        type=float,
        default=1.0,
        metavar="S",
        help="train every LightGBM member on S (0 < S <= 1) times its trees at 1/S times its learning rate: about the "
        "same model for less time (default 1; --time-budget sets it)",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="random seed (same seed and data give the same pickle predictions)"
    )
    parser.add_argument(
        "--neutralization",
        type=float,
        default=None,
        metavar="P",
        help="proportion (0..1) of feature exposure to remove from the blend within each era (default: the CV's "
        "choice)",
    )
    add_objective_arguments(parser)


def add_objective_arguments(parser: argparse.ArgumentParser) -> None:
    """What the blend is chosen on: CORR, BMC or Numerai's payout mix."""
    parser.add_argument(
        "--objective",
        default="corr",
        choices=OBJECTIVES,
        help="what the blend weights, the rule choosing them, member selection and neutralization are chosen on, "
        "per era on the CV: corr (default), bmc (contribution to the benchmark model's CORR) or payout "
        "(--corr-multiplier x CORR + --mmc-multiplier x MMC, BMC standing in for MMC); bmc and payout use the eras "
        "the benchmark predictions cover",
    )
    parser.add_argument(
        "--corr-multiplier",
        type=float,
        default=CORR_MULTIPLIER,
        help=f"CORR's multiplier in the payout mix (default {CORR_MULTIPLIER:g}, Numerai's: see the README)",
    )
    parser.add_argument(
        "--mmc-multiplier",
        type=float,
        default=MMC_MULTIPLIER,
        help=f"MMC's multiplier in the payout mix, applied to BMC (default {MMC_MULTIPLIER:g}, Numerai's)",
    )
    parser.add_argument(
        "--benchmark-model",
        default=None,
        metavar="NAME",
        help="the column of *_benchmark_models.parquet that BMC is measured against and benchmark members read "
        "(default: Numerai's main benchmark, the newest vNN_lgbm_ender20, e.g. v53_lgbm_ender20)",
    )


def add_compute_arguments(parser: argparse.ArgumentParser) -> None:
    """Threads, clusters and where the int8 matrix lives."""
    parser.add_argument("--threads", type=int, default=0, help="training threads (default 0: all cores)")
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="run the independent fits (members x CV folds, probes, holdout, refit; each neural member as one) as N "
        "worker processes on this machine, --threads divided among them (a stage's last fits take the idle ones' "
        "threads); the same predictions as --jobs 1. The int8 matrices are files all of them map (in --spill-dir, "
        "else a temporary directory). Default 1",
    )
    parser.add_argument(
        "--time-budget",
        type=float,
        default=None,
        metavar="HOURS",
        help="fit the build into HOURS on this machine: plan it first (see the plan command) and take the largest "
        "settings whose plan fits (era stride, CV folds, trees with a larger learning rate, members), logging each "
        "change",
    )
    cluster = parser.add_mutually_exclusive_group()
    cluster.add_argument(
        "--dask-scheduler",
        default=None,
        metavar="ADDRESS",
        help="train the LightGBM members on the Dask cluster of this scheduler (e.g. tcp://10.0.0.5:8786) with "
        "lightgbm.dask; its workers read the parquet files themselves, so --data-dir must be at the same path on "
        "them. CV, the neural members and verification stay on this machine. Needs: pip install .[dask]",
    )
    cluster.add_argument(
        "--dask-local",
        type=int,
        default=None,
        metavar="N",
        help="like --dask-scheduler, on a local Dask cluster of N worker processes with 1 thread each, started for "
        "the build",
    )
    parser.add_argument(
        "--torch-processes",
        type=int,
        default=1,
        metavar="N",
        help="train the neural members (MLP, TSMixer-Ext) data-parallel over N CPU processes with torch.distributed "
        "(gloo): each takes a share of every step's eras and the gradients are averaged (default 1: one process)",
    )
    parser.add_argument(
        "--spill-dir",
        type=Path,
        default=None,
        metavar="DIR",
        help="keep the int8 feature matrices in a file in DIR (deleted when the build ends) instead of in memory: "
        "LightGBM's datasets read them in batches and give the pages back, so a build holds LightGBM's bins "
        "rather than both them and the matrix (for data near this machine's memory; DIR needs room for the matrix)",
    )


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    """The searches of the LightGBM members' and the TSMixer-Ext member's settings."""
    gbdt = parser.add_argument_group("LightGBM settings search (preset entries with a search)")
    gbdt.add_argument(
        "--gbdt-search-trials",
        type=int,
        default=None,
        metavar="N",
        help="trials of a searched LightGBM member's settings (depth and leaves, columns, rows per leaf, L2, bagging, "
        "era stride, recency weights, window), each scored by its CV on the build's folds; the entry's own "
        "settings, Numerai's example and deep recipes first (default: the preset's: demo 8, standard 16, large 32)",
    )
    gbdt.add_argument(
        "--gbdt-search-budget",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also stop the LightGBM search from taking further trials when, at the pace of its first round, it "
        "would be expected to end past this many seconds (default: no time limit; with one, the trials run depend "
        "on the machine's speed)",
    )
    search_options = parser.add_argument_group("TSMixer-Ext hyperparameter search (presets standard and large)")
    search_options.add_argument(
        "--tsmixer-search",
        type=int,
        default=0,
        metavar="N",
        help="random-search TSMixer-Ext's blocks, width, ff width, dropout, learning rate, era context and head over N "
        "trials (trial 0: the preset's settings) on CV folds of the training eras before the build's CV scores; train "
        "the member with the best and report the table (default 0: no search)",
    )
    search_options.add_argument(
        "--tsmixer-search-budget",
        type=float,
        default=3600.0,
        metavar="SECONDS",
        help="no further search trial starts when it would be expected to end past this many seconds (default 3600)",
    )


def add_refresh_arguments(parser: argparse.ArgumentParser) -> None:
    """The weekly refresh (`--init-model`)."""
    refresh_options = parser.add_argument_group("weekly refresh")
    refresh_options.add_argument(
        "--init-model",
        type=Path,
        default=None,
        metavar="DIR",
        help="refresh instead of a full build: continue the model a previous build left in DIR (its <out>_artifacts) "
        "on the labelled eras after the last one it was trained on, with the same --preset, --target and features. "
        "LightGBM members get more trees, neural members are fine-tuned; the report compares it with the previous "
        "model and a full retrain on the newest eras",
    )
    refresh_options.add_argument(
        "--refresh-trees",
        type=float,
        default=0.1,
        metavar="SHARE",
        help="trees a refresh adds to each LightGBM member, as a share of the trees its CV chose (default 0.1)",
    )
    refresh_options.add_argument(
        "--refresh-epochs", type=int, default=3, help="epochs a refresh fine-tunes each neural member for (default 3)"
    )
    refresh_options.add_argument(
        "--refresh-test-eras",
        type=int,
        default=4,
        help="newest labelled eras held out to compare the previous, refreshed and fully retrained models (default 4)",
    )


def add_build_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of a build; each is stored under the name of its `BuildConfig` field."""
    groups = (
        add_data_arguments,
        add_model_arguments,
        add_compute_arguments,
        add_search_arguments,
        add_refresh_arguments,
    )
    for add_group in groups:
        add_group(parser)
    parser.add_argument(
        "--member",
        dest="members",
        action="append",
        default=[],
        metavar="FILE.py:CLASS",
        help="add a member of your own kind: a class in FILE.py implementing pipeline.members.Member (see the README, "
        "'Members of your own'); it is cross-validated, blended, pickled and refreshed like the preset's members. "
        "Repeat for several",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def add_verify_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="the model pickle")
    parser.add_argument("--live", type=Path, required=True, help="a live.parquet (index id, feature columns)")
    parser.add_argument(
        "--benchmarks",
        type=Path,
        default=None,
        metavar="FILE",
        help="live benchmark models, the second argument of a two-parameter predict, as numerai-predict passes them "
        "(default: live_benchmark_models.parquet beside the live file)",
    )
    parser.add_argument(
        "--time-limit",
        type=float,
        default=LIMIT_SECONDS,
        metavar="SECONDS",
        help=f"kill the pickle's run and fail after this many seconds (default {LIMIT_SECONDS:.0f}, Numerai's)",
    )
    parser.add_argument(
        "--image",
        default=None,
        choices=sorted(IMAGES),
        help="run in a virtual environment standing for this Numerai image (created once in the cache; needs the "
        "package registry the first time): the image's Python where it runs here (this one, pythonX.Y on PATH, or "
        "pyenv's) and exactly its locked libraries, else this Python with the image's library versions. The result "
        "is recorded in MODEL.verified.json, which upload --docker-image checks",
    )
    parser.add_argument(
        "--runtime-env",
        dest="image",
        action="store_const",
        const=DEFAULT_IMAGE,
        help=f'the same as --image "{DEFAULT_IMAGE}": exactly the versions of the image this project builds for',
    )


def add_upload_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="the model pickle (must end in .pkl)")
    parser.add_argument("--model-name", required=True, help="your Numerai model's name (resolved to its id)")
    parser.add_argument(
        "--data-version",
        default=nd.DEFAULT_DATA_VERSION,
        help=f"data version Numerai feeds the pickle (default {nd.DEFAULT_DATA_VERSION})",
    )
    parser.add_argument(
        "--docker-image",
        default=DEFAULT_DOCKER_IMAGE,
        help=f"Numerai's runtime image (default {DEFAULT_DOCKER_IMAGE!r}, the versions this project pins)",
    )
    parser.add_argument(
        "--live",
        type=Path,
        default=None,
        help="live.parquet to verify on (default: download the data version's current one, and its "
        "live_benchmark_models.parquet for a two-parameter predict)",
    )
    parser.add_argument(
        "--benchmarks",
        type=Path,
        default=None,
        metavar="FILE",
        help="live benchmark models for a two-parameter predict (default: live_benchmark_models.parquet beside --live)",
    )
    parser.add_argument("--dry-run", action="store_true", help="verify and resolve names, but do not upload")
    add_numerai_options(parser)


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("matplotlib").setLevel(logging.WARNING)


def run_build(args: argparse.Namespace) -> int:
    setup_logging(args.verbose)
    log = logging.getLogger("build_model")
    if args.download is not None and args.data_dir is None:
        log.error("--download needs --data-dir DIR to download into")
        return 2
    config = BuildConfig.from_options(args)
    try:
        if args.download is not None:
            nd.download(args.data_dir, args.download)
        if config.time_budget is not None and config.init_model is None:
            config, _, _ = fit_budget(config)
        result = refresh(config) if config.init_model is not None else build(config)
    except (nd.DataError, VerificationError, ValueError) as err:
        log.error("%s", err)
        if Path(config.out).is_file():
            log.error("%s is left as it was (the previous build's), with its artifacts and report", config.out)
        return 1
    print(format_refresh(result) if config.init_model is not None else format_result(result))
    return 0


def add_plan_arguments(parser: argparse.ArgumentParser) -> None:
    """The build's options, and the size and machine to plan for."""
    add_build_arguments(parser)
    size = parser.add_argument_group("what to plan for (default: this data on this machine)")
    size.add_argument("--json", action="store_true", help="print the plan as one JSON object")
    size.add_argument("--rows", type=int, default=None, metavar="R", help="plan R training rows (e.g. 2750000)")
    size.add_argument("--eras", type=int, default=None, metavar="E", help="plan E training eras (e.g. 680)")
    size.add_argument(
        "--cores", type=int, default=None, metavar="C", help="plan a machine of C cores (default: this one's)"
    )
    size.add_argument(
        "--choices",
        type=Path,
        default=None,
        metavar="REPORT",
        help="cost the CV's choices (feature pipeline, trees, the search's survivors, shipped members) as an earlier "
        "build of this preset on this data made them: its report.json or report directory (default: the costliest)",
    )
    size.description = "--features takes a number here too: plan that many features (a build's --features names them)"


def run_plan(args: argparse.Namespace) -> int:
    """Print the plan of the build the options describe; 1 on options that cannot work."""
    setup_logging(args.verbose)
    count = None
    if args.features is not None and args.features.strip().isdigit():
        count, args.features = int(args.features), None
    problems = [
        f"{option} must be at least 1, got {value}"
        for option, value in (
            ("--rows", args.rows),
            ("--eras", args.eras),
            ("--cores", args.cores),
            ("--features", count),
        )
        if value is not None and value < 1
    ]
    config = BuildConfig.from_options(args)
    try:
        if problems:
            raise ValueError("; ".join(problems))
        choices = read_choices(args.choices, config.preset) if args.choices else Choices()
        target = PlanFor(args.rows, count, args.eras, args.cores, choices)
        plan = fit_budget(config, target)[2] if config.time_budget is not None else plan_build(config, target)
    except (nd.DataError, ValueError) as err:
        logging.getLogger("build_model").error("%s", err)
        return 1
    print(json.dumps(plan.to_json()) if args.json else plan.table())
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """0 when the pickle PASSED, 1 when it FAILED, 2 (argparse's) for bad options."""
    if not args.time_limit > 0:
        args.parser.error(f"--time-limit must be more than 0 seconds, got {args.time_limit:g}")
    if not args.model.is_file():
        args.parser.error(f"{args.model}: no such model pickle")
    try:
        environment = image_environment(cache_root(), IMAGES[args.image]) if args.image else None
    except ImageError as err:
        args.parser.exit(2, f"verify: {err}\n")
    report = verify_pickle(
        args.model,
        args.live,
        benchmarks_path=args.benchmarks,
        time_limit=args.time_limit,
        python=str(environment.python) if environment else None,
    )
    print(report.summary())
    if environment is not None:
        print(f"  environment of {args.image!r}: {environment.match} ({environment.python})")
    record = record_run(
        sidecar_path(args.model), file_sha256(args.model), report.versions, report.ok, report.parameters, args.image
    )
    verified = ", ".join(f"{name} ({entry['match']})" for name, entry in sorted(record["images"].items()))
    print(f"  verified for: {verified or 'no image'} ({sidecar_path(args.model)})")
    return 0 if report.ok else 1


def run_upload(args: argparse.Namespace) -> int:
    setup_logging(verbose=False)
    return upload_command(args, args.parser)


COMMANDS: dict[str, tuple[Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int], str]] = {
    "build": (add_build_arguments, run_build, "build, verify and write the pickle (the default command)"),
    "plan": (
        add_plan_arguments,
        run_plan,
        "print what the build these options describe would do and cost, before any training: each stage's fits, "
        "rows x features, trees or epochs, seconds and peak memory (--json, --rows/--features/--eras, --cores)",
    ),
    "verify": (
        add_verify_arguments,
        run_verify,
        "run a pickle as Numerai's container does (one thread, this package not importable) and check its output",
    ),
    "upload": (
        add_upload_arguments,
        run_upload,
        "verify a pickle, then upload it to Numerai's hosted compute with numerapi (credentials from "
        "NUMERAI_PUBLIC_ID and NUMERAI_SECRET_KEY only)",
    ),
}


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="build_model.py", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (add_arguments, run, text) in COMMANDS.items():
        description = DESCRIPTION if name == "build" else text[0].upper() + text[1:] + "."
        command = commands.add_parser(
            name, help=text, description=description, formatter_class=argparse.RawDescriptionHelpFormatter
        )
        add_arguments(command)
        command.set_defaults(run=run, parser=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`build_model.py [COMMAND] [options]`; without a command, `build`."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        argv = ["build", *argv]
    args = make_parser().parse_args(argv)
    # SIGTERM exits 143 at any moment, also after a build has committed its outputs (printing the
    # summary), not only inside `build` (a seeded-SIGTERM test caught a -15 there).
    with terminate_as_exit():
        return args.run(args)
