"""Verify a model pickle as Numerai's container would run it, and write pickles only once verified."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import cloudpickle
import pandas as pd

from pipeline import runtime

# Numerai's hosted-compute limits (numerai-predict): 1 CPU, 4 GB RAM, 10 minutes.
LIMIT_MEMORY_MB = 4096.0
LIMIT_SECONDS = 600.0
# The libraries of Numerai's "Python 3.11" image (numerai-predict's poetry.lock). torch is left out:
# the pickle never imports it, and its CUDA wheels are gigabytes.
RUNTIME_PINS = (
    "pandas==2.3.2",
    "numpy==2.1.3",
    "lightgbm==4.6.0",
    "scikit-learn==1.6.1",
    "cloudpickle==3.1.1",
    "pyarrow==21.0.0",
    "scipy==1.16.2",
    "numerai-tools==0.4.3",
)
ONE_THREAD_ENV = {
    "OMP_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "NUMEXPR_NUM_THREADS": "1",
}


class VerificationError(RuntimeError):
    """A pickle that would fail, or misbehave, in Numerai's container."""


@dataclass
class VerificationReport:
    """What the isolated run of the pickle measured and found."""

    model_path: Path
    size_mb: float
    load_s: float = float("nan")
    predict_s: float = float("nan")
    peak_rss_mb: float = float("nan")
    live_rows: int = 0
    problems: list[str] = field(default_factory=list)
    modules: list[str] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> str:
        status = "PASSED" if self.ok else "FAILED"
        lines = [
            f"verification {status}: {self.model_path}",
            f"  size {self.size_mb:.1f} MB | load {self.load_s:.2f} s | predict {self.predict_s:.2f} s "
            f"on {self.live_rows} live rows | peak RSS {self.peak_rss_mb:.0f} MB "
            f"(limits: {LIMIT_SECONDS:.0f} s, {LIMIT_MEMORY_MB:.0f} MB, 1 CPU)",
            "  ran with " + ", ".join(f"{k} {v}" for k, v in self.versions.items()),
        ]
        lines += [f"  - {problem}" for problem in self.problems]
        return "\n".join(lines)


def verify_pickle(model_path: str | Path, live_path: str | Path, python: str | None = None) -> VerificationReport:
    """Run the pickle on a live file in a fresh one-thread process that cannot import this package."""
    # Absolute paths: the isolated process runs in a scratch directory.
    model_path, live_path = Path(model_path).resolve(), Path(live_path).resolve()
    if not model_path.is_file():
        raise FileNotFoundError(f"{model_path}: no such model pickle")
    report = VerificationReport(model_path=model_path, size_mb=model_path.stat().st_size / 2**20)
    child = Path(__file__).with_name("verify_child.py")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | ONE_THREAD_ENV
        proc = subprocess.run(
            [python or sys.executable, "-I", str(child), str(model_path), str(live_path), str(out)],
            cwd=tmp,
            env=env,
            capture_output=True,
            text=True,
            timeout=LIMIT_SECONDS * 2,
        )
        if not out.is_file():
            report.problems.append(f"the verification process died (exit {proc.returncode}): {proc.stderr[-2000:]}")
            return report
        found = json.loads(out.read_text())
    report.problems = list(found["problems"])
    report.modules = list(found.get("modules", []))
    report.versions = dict(found.get("versions", {}))
    for key in ("load_s", "predict_s", "peak_rss_mb", "live_rows"):
        if key in found:
            setattr(report, key, found[key])
    if report.predict_s > LIMIT_SECONDS:
        report.problems.append(f"predict took {report.predict_s:.0f} s; Numerai allows {LIMIT_SECONDS:.0f} s")
    if report.peak_rss_mb > LIMIT_MEMORY_MB:
        report.problems.append(f"peak memory {report.peak_rss_mb:.0f} MB exceeds Numerai's {LIMIT_MEMORY_MB:.0f} MB")
    return report


def runtime_python(cache_dir: str | Path) -> Path:
    """Python of a virtual environment with exactly the Numerai image's pinned versions, made once."""
    if sys.version_info[:2] != (3, 11):
        raise RuntimeError(
            f"--runtime-env builds Numerai's Python 3.11 image and needs Python 3.11; this is {sys.version.split()[0]}"
        )
    env_dir = Path(cache_dir) / "numerai-runtime-py311"
    python = env_dir / "bin" / "python"
    marker = env_dir / "pins.txt"
    if marker.is_file() and marker.read_text() == "\n".join(RUNTIME_PINS):
        return python
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(env_dir)], check=True)
    subprocess.run([str(python), "-m", "pip", "install", "--quiet", *RUNTIME_PINS], check=True)
    marker.write_text("\n".join(RUNTIME_PINS))
    return python


def dump_predict(
    predict: Callable[[pd.DataFrame], pd.DataFrame], path: str | Path, by_value: Sequence[ModuleType] = ()
) -> None:
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
    predict: Callable[[pd.DataFrame], pd.DataFrame],
    out_path: str | Path,
    live_path: str | Path,
    by_value: Sequence[ModuleType] = (),
) -> VerificationReport:
    """Write the pickle under a temporary name, verify it, and only then move it to `out_path`.

    On failure no pickle is left at `out_path`, not even an older one, so a stale model is never
    uploaded by mistake after a failed build.
    """
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    pending = out_path.with_name(out_path.name + ".unverified")
    dump_predict(predict, pending, by_value)
    try:
        report = verify_pickle(pending, live_path)
    except BaseException:
        pending.unlink(missing_ok=True)
        raise
    if not report.ok:
        pending.unlink(missing_ok=True)
        out_path.unlink(missing_ok=True)
        raise VerificationError(report.summary())
    os.replace(pending, out_path)
    report.model_path = out_path
    return report
