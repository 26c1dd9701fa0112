"""A build that cannot be left half-written: outputs checked before training, one build per --out,
pickle, artifacts and report replaced together, interrupts that leave no temporary file or process."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pytest

from pipeline.cli import main
from pipeline.outputs import BuildOutputs, OutputError, OutputPaths
from pipeline.synthetic import WorldSpec, write_world
from tests.conftest import write_foreign_layout

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--preset", "example", "--trees", "40", "--threads", "1", "--embargo", "2"]
LEFTOVERS = ("*.tmp-*", "*.old-*", "*.lock", "*.unverified", "*.partial")


def leftovers(directory: Path) -> list[Path]:
    return [path for pattern in LEFTOVERS for path in directory.rglob(pattern)]


def outputs_of(out: Path) -> tuple[str, str, str]:
    """sha256 of the pickle, and the pickle sha256 its report and its artifacts' manifest record."""
    report = json.loads(out.with_name(out.stem + "_report").joinpath("report.json").read_text())
    manifest = json.loads(out.with_name(out.stem + "_artifacts").joinpath("manifest.json").read_text())
    return hashlib.sha256(out.read_bytes()).hexdigest(), report["data"]["pickle_sha256"], manifest["pickle_sha256"]


def test_out_is_checked_before_any_data_is_read(tmp_path: Path, caplog) -> None:
    absent = tmp_path / "no_data_here"
    absent.mkdir()
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    cases = [
        (tmp_path, "is a directory; expected the path of the pickle"),
        (a_file / "model.pkl", "is a file, so"),
        (Path("/proc/no_such_dir/model.pkl"), "cannot write in /proc/no_such_dir"),
    ]
    for out, message in cases:
        caplog.clear()
        # The data directory holds nothing: a data error would mean the data was read first.
        assert main(["--data-dir", str(absent), "--out", str(out), *SMALL]) == 1
        assert message in caplog.text
    assert not leftovers(tmp_path)
    report = tmp_path / "report_as_file"
    report.write_text("x")
    assert main(["--data-dir", str(absent), "--out", str(tmp_path / "m.pkl"), "--report-dir", str(report)]) == 1
    assert "--report-dir: " in caplog.text and "is not a directory" in caplog.text


def test_trees_zero_is_refused(tmp_path: Path, caplog) -> None:
    assert main(["--out", str(tmp_path / "m.pkl"), "--trees", "0"]) == 1
    assert "--trees must be at least 1 boosting round, got 0" in caplog.text


def test_a_second_build_on_the_same_out_is_refused(tmp_path: Path) -> None:
    out = tmp_path / "model.pkl"
    with BuildOutputs(OutputPaths.for_build(out)):
        with pytest.raises(OutputError, match=rf"--out {out}: another build \(pid {os.getpid()}, started"):
            with BuildOutputs(OutputPaths.for_build(out)):
                pass
    assert not leftovers(tmp_path), "the lock goes with the build"
    with BuildOutputs(OutputPaths.for_build(out)):
        pass


def test_a_stale_lock_and_leftovers_of_a_killed_build_are_cleaned(tmp_path: Path) -> None:
    out = tmp_path / "model.pkl"
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    (tmp_path / "model.pkl.lock").mkdir()
    (tmp_path / "model.pkl.lock" / "pid").write_text(f"{child.pid} 0\n")
    (tmp_path / f"model.pkl.tmp-{child.pid}-abcd").write_bytes(b"half")
    (tmp_path / f"model_report.tmp-{child.pid}-abcd").mkdir()
    with BuildOutputs(OutputPaths.for_build(out)):
        assert [p.name for p in leftovers(tmp_path)] == ["model.pkl.lock"]
    assert not leftovers(tmp_path)


def test_one_fold_builds_and_the_too_few_eras_advice_works(tmp_path: Path, caplog) -> None:
    world = write_foreign_layout(tmp_path / "short", n_eras=20)
    base = ["--data-dir", str(world), "--out", str(tmp_path / "m.pkl"), "--trees", "10", "--threads", "1"]
    assert main(base) == 1
    advice = caplog.text.split("use --embargo ")[1].split(" ")[0]
    assert main([*base, "--embargo", advice, "--preset", "example"]) == 0, "the advised embargo builds"
    assert main([*base, "--cv-folds", "1", "--embargo", "0", "--preset", "example"]) == 0
    assert len(json.loads((tmp_path / "m_report" / "report.json").read_text())["folds"]) == 1


def test_eighteen_training_eras_build_on_the_one_fold_they_hold(tmp_path: Path) -> None:
    spec = WorldSpec(
        n_eras=35,
        n_validation_eras=17,
        n_unlabelled_eras=0,
        rows_per_era=120,
        live_rows=100,
        n_features=20,
        n_target_names=2,
        seed=5,
    )
    world = write_world(tmp_path / "eighteen", spec, progress=False)
    out = tmp_path / "m.pkl"
    assert (
        main(["--data-dir", str(world), "--out", str(out), "--preset", "example", "--trees", "10", "--threads", "1"])
        == 0
    )
    report = json.loads((tmp_path / "m_report" / "report.json").read_text())
    assert len(report["folds"]) == 1 and report["settings"]["embargo"] == 8, "the build chose one fold itself"
    assert report["models"]["ensemble"]["cv"]["eras"] > 0


def test_an_id_in_train_and_validation_is_refused(tmp_path: Path, caplog) -> None:
    world = write_foreign_layout(tmp_path / "dup")
    validation = pd.read_parquet(world / "validation.parquet")
    train = pd.read_parquet(world / "train.parquet")
    validation.index = pd.Index([train.index[0], *validation.index[1:]], name="id")
    validation.to_parquet(world / "validation.parquet")
    assert main(["--data-dir", str(world), "--out", str(tmp_path / "m.pkl"), *SMALL]) == 1
    assert "share 1 id(s)" in caplog.text and train.index[0] in caplog.text


def test_a_failed_build_leaves_the_previous_build_whole(tiny_world: Path, tmp_path: Path, caplog) -> None:
    out = tmp_path / "model.pkl"
    assert main(["--data-dir", str(tiny_world), "--out", str(out), *SMALL]) == 0
    before = outputs_of(out)
    assert len(set(before)) == 1, "pickle, report and artifacts of one build"
    assert main(["--data-dir", str(tiny_world), "--out", str(out), *SMALL, "--feature-set", "nope"]) == 1
    assert "is left as it was" in caplog.text
    assert outputs_of(out) == before and not leftovers(tmp_path)


def build_process(world: Path, out: Path, seed: int) -> subprocess.Popen:
    """A build in a process of its own; each seed gives another pickle, so a mix of two builds shows."""
    args = [sys.executable, "build_model.py", "--data-dir", str(world), "--out", str(out), *SMALL, "--seed", str(seed)]
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def own_processes(marker: str) -> list[psutil.Process]:
    """Processes (a build or its verification child) whose command line names `marker`."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        if marker in " ".join(process.info["cmdline"] or []) and process.pid != os.getpid():
            found.append(process)
    return found


def test_sigterm_at_seeded_moments_leaves_one_whole_build(tiny_world: Path, tmp_path: Path) -> None:
    out = tmp_path / "model.pkl"
    start = time.monotonic()
    first = build_process(tiny_world, out, 0)
    assert first.wait(timeout=600) == 0, first.stderr.read()
    duration = time.monotonic() - start
    rng = np.random.default_rng(15)
    # Moments over the whole build, more of them late, where verification and the commit happen.
    moments = sorted([*rng.uniform(0.05, 0.7, 2) * duration, *rng.uniform(0.7, 1.0, 4) * duration])
    for seed, moment in enumerate(moments, start=1):
        process = build_process(tiny_world, out, seed)
        time.sleep(moment)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=120)
        assert code in (0, 143), process.stderr.read()
        pickle, report, manifest = outputs_of(out)
        assert pickle == report == manifest, f"SIGTERM at {moment:.1f} s: the outputs are of one build"
        assert not leftovers(tmp_path), f"SIGTERM at {moment:.1f} s left {leftovers(tmp_path)}"
        assert not own_processes(str(tmp_path)), "no build or verification process is left"
