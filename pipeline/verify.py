"""Verify a model pickle as Numerai's container would run it, and write pickles only once verified."""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import cloudpickle
import pandas as pd

from pipeline import runtime
from pipeline.images import record_run, sidecar_path

# Numerai's hosted-compute limits (numerai-predict): 1 CPU, 4 GB RAM, 10 minutes.
LIMIT_MEMORY_MB = 4096.0
LIMIT_SECONDS = 600.0
ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}
# The only variables of the caller's environment (besides LC_*) the verification process sees.
CHILD_ENV_VARS = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ")
CHILD = Path(__file__).with_name("verify_child.py")
BENCHMARKS_FILE = "live_benchmark_models.parquet"
PARAMETER_NAMES = {1: "live_features", 2: "live_features, live_benchmark_models"}
FIRST_CALL, SECOND_CALL = "first", "second"
POLL_S = 0.05
# The child's result fields and their JSON types.
RESULT_FIELDS = {
    "problems": list,
    "notes": list,
    "completed": bool,
    "modules": list,
    "versions": dict,
    "load_s": (int, float),
    "predict_s": (int, float),
    "peak_rss_mb": (int, float),
    "live_rows": int,
    "parameters": int,
}


class VerificationError(RuntimeError):
    """A pickle that would fail, or misbehave, in Numerai's container."""


@dataclass
class VerificationReport:
    """What the isolated run of the pickle measured and found.

    `ok` needs positive evidence: the child reported that predict ran to completion on the live rows
    and every check ran (`completed`), and nothing was found. A run that could not start, died, ran
    past the limit or left no readable result is FAILED with the reason in `problems`.
    """

    model_path: Path
    size_mb: float
    load_s: float = float("nan")
    predict_s: float = float("nan")
    peak_rss_mb: float = float("nan")
    live_rows: int = 0
    parameters: int | None = None
    completed: bool = False
    time_limit: float = LIMIT_SECONDS
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.completed and not self.problems

    def summary(self) -> str:
        status = "PASSED" if self.ok else "FAILED"
        lines = [
            f"verification {status}: {self.model_path}",
            f"  size {self.size_mb:.1f} MB | load {_measured(self.load_s, '.2f', 's')} | predict "
            f"{_measured(self.predict_s, '.2f', 's')} on {self.live_rows} live rows | peak RSS "
            f"{_measured(self.peak_rss_mb, '.0f', 'MB')} (limits: {self.time_limit:g} s, {LIMIT_MEMORY_MB:.0f} MB, "
            "1 CPU)",
        ]
        if self.parameters in (1, 2):
            lines.append(f"  predict({PARAMETER_NAMES[self.parameters]})")
        if self.versions:
            lines.append("  ran with " + ", ".join(f"{k} {v}" for k, v in self.versions.items()))
        lines += [f"  note: {note}" for note in self.notes]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def _measured(value: float, spec: str, unit: str) -> str:
    return "-" if math.isnan(value) else f"{value:{spec}} {unit}"


@dataclass
class ChildRun:
    """How the verification process ended: its exit status, the phase it overran (None: it did not),
    and the end of what it printed."""

    returncode: int
    overrun: str | None
    output: str


def child_env() -> dict[str, str]:
    """The caller's environment reduced to an allowlist: no credential (NUMERAI_SECRET_KEY, cloud
    keys, tokens) reaches the pickle."""
    kept = {k: v for k, v in os.environ.items() if k in CHILD_ENV_VARS or k.startswith("LC_")}
    return kept | ONE_THREAD_ENV


def end_group(proc: subprocess.Popen) -> None:
    """Kill the child's whole process group (what the pickle started too) and reap the child."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()


def wait_within(proc: subprocess.Popen, marker: Path, time_limit: float) -> str | None:
    """Wait for the child; the phase it was in when it ran past `time_limit`, or None.

    The first phase (start, load, the first predict and its checks) has `time_limit`, as Numerai's
    container has; the determinism check's second predict call, once `marker` exists, gets as long again.
    """
    deadline, phase = time.monotonic() + time_limit, FIRST_CALL
    while proc.poll() is None:
        now = time.monotonic()
        if phase == FIRST_CALL and marker.exists():
            deadline, phase = now + time_limit, SECOND_CALL
        if now >= deadline:
            return phase
        time.sleep(POLL_S)
    return None


def run_child(command: list[str], scratch: Path, time_limit: float) -> ChildRun:
    """Run the verification process in its own session; on any exit from here, the parent's
    interruption (KeyboardInterrupt, SystemExit from a SIGTERM handler) included, its process group
    is killed and reaped first."""
    log_path = scratch / "output.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command,
            cwd=scratch,
            env=child_env() | {"TMPDIR": str(scratch)},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            overrun = wait_within(proc, scratch / "predicted", time_limit)
        finally:
            end_group(proc)
    output = log_path.read_bytes()[-2000:].decode(errors="replace").strip()
    return ChildRun(proc.returncode, overrun, output)


def read_result(path: Path) -> dict:
    """The child's result, checked field by field; ValueError says what is wrong with it."""
    try:
        found = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"not JSON ({err})") from None
    if not isinstance(found, dict):
        raise ValueError(f"expected a JSON object, got {type(found).__name__}")
    for key in ("problems", "completed"):
        if key not in found:
            raise ValueError(f"no field {key!r}")
    for key, kind in RESULT_FIELDS.items():
        if key in found and not isinstance(found[key], kind):
            raise ValueError(f"field {key!r} is a {type(found[key]).__name__}, expected {kind}")
    if not all(isinstance(item, str) for item in found["problems"] + found.get("notes", [])):
        raise ValueError("problems and notes must be strings")
    return found


def how_it_ended(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by signal {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


def outcome_problems(report: VerificationReport, run: ChildRun, result: Path) -> list[str]:
    """Fill `report` from the child's result; the problems of the run itself (limit, death, result)."""
    problems = []
    if run.overrun is not None:
        what = "loading the pickle and predict" if run.overrun == FIRST_CALL else "the determinism check's second call"
        problems.append(
            f"{what} ran past the time limit of {report.time_limit:g} s (Numerai allows {LIMIT_SECONDS:.0f} s); "
            "the verification process was killed at the limit"
        )
    try:
        found = read_result(result)
    except FileNotFoundError:
        if run.overrun is None:
            problems.append(
                f"the verification process {how_it_ended(run.returncode)} before writing its result; it printed: "
                f"{run.output or 'nothing'}"
            )
        return problems
    except ValueError as err:
        return [*problems, f"the verification process wrote a malformed result: {err}"]
    for key in ("load_s", "predict_s", "peak_rss_mb", "live_rows", "parameters", "completed"):
        if key in found:
            setattr(report, key, found[key])
    report.notes, report.modules = list(found.get("notes", [])), list(found.get("modules", []))
    report.versions = {str(k): str(v) for k, v in found.get("versions", {}).items()}
    if not report.completed and not found["problems"] and not problems:
        problems.append("the verification process did not report that predict ran to completion")
    if run.returncode != 0 and run.overrun is None:
        problems.append(f"the verification process {how_it_ended(run.returncode)}: {run.output or 'no output'}")
    return [*found["problems"], *problems]


def input_problems(model_path: Path, live_path: Path) -> list[str]:
    problems = []
    if not model_path.is_file():
        problems.append(f"{model_path}: no such model pickle")
    if not live_path.is_file():
        problems.append(f"{live_path}: live file not found; expected a live.parquet (index id, feature columns)")
    return problems


def verify_pickle(
    model_path: str | Path,
    live_path: str | Path,
    *,
    benchmarks_path: str | Path | None = None,
    time_limit: float = LIMIT_SECONDS,
    python: str | None = None,
) -> VerificationReport:
    """Run the pickle on a live file in a fresh one-thread process that cannot import this package.

    A predict taking two parameters gets `pd.read_parquet(benchmarks_path)` as its second, as
    numerai-predict passes the live benchmark models (default: live_benchmark_models.parquet beside
    the live file). The process is killed at `time_limit` seconds. Every way the run can go wrong is
    a FAILED report, never an exception, except the caller's own interruption, which ends the
    process before it propagates.
    """
    if not time_limit > 0:
        raise ValueError(f"time_limit must be more than 0 seconds, got {time_limit}")
    # Absolute paths: the isolated process runs in a scratch directory.
    model_path, live_path = Path(model_path).resolve(), Path(live_path).resolve()
    benchmarks = Path(benchmarks_path).resolve() if benchmarks_path else live_path.with_name(BENCHMARKS_FILE)
    size_mb = model_path.stat().st_size / 2**20 if model_path.is_file() else 0.0
    report = VerificationReport(model_path=model_path, size_mb=size_mb, time_limit=time_limit)
    report.problems = input_problems(model_path, live_path)
    if report.problems:
        return report
    with tempfile.TemporaryDirectory(prefix="numerai-verify-") as tmp:
        scratch = Path(tmp)
        result = scratch / "result.json"
        command = [python or sys.executable, "-I", str(CHILD), str(model_path), str(live_path), str(benchmarks)]
        try:
            run = run_child([*command, str(result), str(scratch / "predicted")], scratch, time_limit)
        except OSError as err:
            report.problems = [f"could not start the verification process with {command[0]}: {err}"]
            return report
        report.problems = outcome_problems(report, run, result)
    if report.predict_s > LIMIT_SECONDS:
        report.problems.append(f"predict took {report.predict_s:.0f} s; Numerai allows {LIMIT_SECONDS:.0f} s")
    if report.peak_rss_mb > LIMIT_MEMORY_MB:
        report.problems.append(f"peak memory {report.peak_rss_mb:.0f} MB exceeds Numerai's {LIMIT_MEMORY_MB:.0f} MB")
    return report


def dump_predict(predict: Callable[..., pd.DataFrame], path: str | Path, by_value: Sequence[ModuleType] = ()) -> None:
    """Cloudpickle the closure with the runtime module (and `by_value`, the modules of a user's own
    members) by value: Numerai's container lacks this package."""
    modules = [runtime, *by_value]
    for module in modules:
        cloudpickle.register_pickle_by_value(module)
    try:
        Path(path).write_bytes(cloudpickle.dumps(predict))
    finally:
        for module in modules:
            cloudpickle.unregister_pickle_by_value(module)


def write_verified_pickle(
    predict: Callable[..., pd.DataFrame],
    out_path: str | Path,
    live_path: str | Path,
    by_value: Sequence[ModuleType] = (),
    benchmarks_path: str | Path | None = None,
    sidecar: str | Path | None = None,
) -> VerificationReport:
    """Write the pickle under a temporary name, verify it (a two-parameter predict on `benchmarks_path`,
    by default live_benchmark_models.parquet beside the live file), and only then move it to `out_path`
    and record the images it passed for in `sidecar` (default: beside it, `pipeline.images`).

    On failure no pickle is left at `out_path`, not even an older one, so a stale model is never
    uploaded by mistake after a failed build.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pending = out_path.with_name(out_path.name + ".unverified")
    dump_predict(predict, pending, by_value)
    try:
        report = verify_pickle(pending, live_path, benchmarks_path=benchmarks_path)
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    if not report.ok:
        pending.unlink(missing_ok=True)
        out_path.unlink(missing_ok=True)
        raise VerificationError(report.summary())
    os.replace(pending, out_path)
    report.model_path = out_path
    sidecar = Path(sidecar) if sidecar is not None else sidecar_path(out_path)
    record_run(sidecar, file_sha256(out_path), report.versions, True, report.parameters)
    return report


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
