"""Faults and bad input (issue 15): verification passes only what it ran to completion, every
message names the file, column or option and what was expected, and a build cannot be left
half-written: outputs checked before training, one build per --out, pickle, artifacts and report
replaced together, interrupts that leave no temporary file or process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import pyarrow.parquet as pq
import pytest

from pipeline import data as nd
from pipeline import runtime
from pipeline.cli import main
from pipeline.outputs import BuildOutputs, OutputError, OutputPaths
from pipeline.synthetic import WorldSpec, write_world
from pipeline.upload import upload
from pipeline.verify import VerificationError, dump_predict, verify_pickle, write_verified_pickle
from tests.conftest import write_foreign_layout
from tests.test_pickle import train_state

REPO = Path(__file__).resolve().parents[1]
SECRETS = {"NUMERAI_PUBLIC_ID": "PUBLIC-ID", "NUMERAI_SECRET_KEY": "SECRET-KEY", "AWS_SECRET_ACCESS_KEY": "AWS-KEY"}


def predict_for(kind: str, scratch: Path | None = None):
    """Pickles that each behave in one way (nested functions, so cloudpickle stores them by value)."""

    def valid(live_features):
        return live_features["feature_0001"].rank(method="first", pct=True).rename("prediction").to_frame()

    def exits(live_features):
        sys.exit(0)

    def interrupted(live_features):
        raise KeyboardInterrupt("stopped")

    def generator_exit(live_features):
        raise GeneratorExit("closed")

    def sleeps(live_features):
        helper = subprocess.Popen(["sleep", "60"])
        (scratch / "pids.partial").write_text(f"{os.getpid()} {helper.pid}")
        os.replace(scratch / "pids.partial", scratch / "pids")
        time.sleep(60)
        return valid(live_features)

    def killed(live_features):
        os.kill(os.getpid(), signal.SIGKILL)

    def quits(live_features):
        os._exit(0)

    def garbles_its_result(live_features):
        Path("result.json").write_text("{half a result")
        os._exit(0)

    def reads_secrets(live_features):
        seen = sorted(name for name in SECRETS if name in os.environ)
        if seen or os.environ.get("OMP_NUM_THREADS") != "1":
            raise RuntimeError(f"the pickle sees {seen}, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
        return valid(live_features)

    def with_benchmarks(live_features, live_benchmark_models):
        if live_benchmark_models.index.name != "id" or list(live_benchmark_models.columns)[0] != "era":
            raise ValueError("not the benchmark file as numerai-predict reads it")
        column = live_benchmark_models.loc[live_features.index, "v53_lgbm_ender20"]
        return column.rank(pct=True).rename("prediction").to_frame()

    def with_benchmarks_misjoined(live_features, live_benchmark_models):
        column = live_benchmark_models["v53_lgbm_ender20"].reindex(live_features.index.str.upper())
        return pd.DataFrame({"prediction": column.to_numpy()}, index=live_features.index)

    def benchmarks_by_default(live_features, live_benchmark_models=None):
        return with_benchmarks(live_features, live_benchmark_models)

    def three_parameters(live_features, live_benchmark_models, extra):
        return valid(live_features)

    kinds = (valid, exits, interrupted, generator_exit, sleeps, killed, quits, garbles_its_result, reads_secrets)
    kinds += (with_benchmarks, with_benchmarks_misjoined, benchmarks_by_default, three_parameters)
    return {f.__name__: f for f in kinds}[kind]


def pickled(directory: Path, kind: str, scratch: Path | None = None) -> Path:
    path = directory / f"{kind}.pkl"
    dump_predict(predict_for(kind, scratch), path)
    return path


def gone(pid: int, wait_s: float = 5.0) -> bool:
    """The process has ended (a zombie waiting for its reaper counts as ended)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        time.sleep(0.05)
    return False


def test_a_text_file_with_a_typo_in_the_live_path_fails(tiny_world: Path, tmp_path: Path) -> None:
    text = tmp_path / "x.pkl"
    text.write_text("hi\n")
    proc = subprocess.run(
        [sys.executable, str(REPO / "build_model.py"), "verify", str(text), "--live", str(tmp_path / "typo.parquet")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "verification FAILED" in proc.stdout and "typo.parquet: live file not found" in proc.stdout
    assert "Traceback" not in proc.stderr
    report = verify_pickle(text, tiny_world / "live.parquet")
    assert not report.ok and len(report.problems) == 1
    assert report.problems[0].startswith(f"{text.resolve()}: not a valid pickle (UnpicklingError")


def test_a_corrupt_live_file_fails_naming_it(tiny_world: Path, tmp_path: Path) -> None:
    data = (tiny_world / "live.parquet").read_bytes()
    live = tmp_path / "live.parquet"
    live.write_bytes(data[: len(data) // 2])
    report = verify_pickle(pickled(tmp_path, "valid"), live)
    assert not report.ok and report.live_rows == 0
    assert f"{live}: live file is not a readable parquet file" in report.problems[0]


@pytest.mark.parametrize(
    "kind, message",
    [
        ("exits", "predict raised SystemExit: 0"),
        ("interrupted", "predict raised KeyboardInterrupt: stopped"),
        ("generator_exit", "predict raised GeneratorExit: closed"),
        ("killed", "the verification process was killed by signal SIGKILL before writing its result"),
        ("quits", "the verification process exited with code 0 before writing its result"),
        ("garbles_its_result", "the verification process wrote a malformed result: not JSON"),
    ],
)
def test_a_predict_that_raises_or_a_child_that_dies_fails(
    kind: str, message: str, tiny_world: Path, tmp_path: Path
) -> None:
    report = verify_pickle(pickled(tmp_path, kind), tiny_world / "live.parquet")
    assert not report.ok and not report.completed, report.summary()
    assert len(report.problems) == 1 and report.problems[0].startswith(message), report.summary()
    assert "verification FAILED" in report.summary() and "predict -" in report.summary()


def test_a_predict_past_the_time_limit_is_killed_at_the_limit(tiny_world: Path, tmp_path: Path) -> None:
    start = time.monotonic()
    report = verify_pickle(pickled(tmp_path, "sleeps", tmp_path), tiny_world / "live.parquet", time_limit=6)
    elapsed = time.monotonic() - start
    assert not report.ok and "ran past the time limit of 6 s" in report.problems[0]
    assert 6 <= elapsed < 30
    assert all(gone(int(pid)) for pid in (tmp_path / "pids").read_text().split()), "the whole process group is killed"


@pytest.mark.parametrize("signum, raised", [(signal.SIGINT, KeyboardInterrupt), (signal.SIGTERM, SystemExit)])
def test_an_interrupted_verification_leaves_no_process_or_directory(
    signum: int, raised: type, tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    model = pickled(tmp_path, "sleeps", tmp_path)
    stop = threading.Event()

    def interrupt_once_predict_runs() -> None:
        while not stop.wait(0.05):
            if (tmp_path / "pids").exists():
                os.kill(os.getpid(), signum)
                return

    def terminate(number: int, frame: object) -> None:
        raise SystemExit(128 + number)

    previous = {signal.SIGINT: signal.signal(signal.SIGINT, signal.default_int_handler)}
    previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, terminate)
    thread = threading.Thread(target=interrupt_once_predict_runs, daemon=True)
    thread.start()
    try:
        with pytest.raises(raised):
            verify_pickle(model, tiny_world / "live.parquet")
    finally:
        stop.set()
        thread.join()
        for number, handler in previous.items():
            signal.signal(number, handler)
    pids = [int(pid) for pid in (tmp_path / "pids").read_text().split()]
    assert all(gone(pid) for pid in pids), "the verification process and what it started are ended"
    assert list(temp.iterdir()) == [], "temporary directories are removed"


def test_the_pickle_does_not_see_the_callers_secrets(
    tiny_world: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    report = verify_pickle(pickled(tmp_path, "reads_secrets"), tiny_world / "live.parquet")
    assert report.ok, report.summary()


@pytest.mark.parametrize("kind", ["with_benchmarks", "benchmarks_by_default"])
def test_a_two_parameter_predict_gets_the_live_benchmark_models(kind: str, tiny_world: Path, tmp_path: Path) -> None:
    report = verify_pickle(pickled(tmp_path, kind), tiny_world / "live.parquet")
    assert report.ok and report.parameters == 2, report.summary()
    assert "predict(live_features, live_benchmark_models)" in report.summary()


def test_the_benchmark_file_is_found_beside_the_live_file_or_given(
    tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    model = pickled(tmp_path, "with_benchmarks")
    (tmp_path / "live").mkdir()
    live = Path(shutil.copy(tiny_world / "live.parquet", tmp_path / "live" / "live.parquet"))
    report = verify_pickle(model, live)
    expected = tmp_path / "live" / "live_benchmark_models.parquet"
    assert not report.ok and report.problems == [
        f"{expected}: benchmark file not found; predict takes 2 parameters (live_features, live_benchmark_models), "
        "so it is passed the live benchmark models: give their file with --benchmarks FILE"
    ]
    benchmarks = shutil.copy(tiny_world / "live_benchmark_models.parquet", tmp_path / "benchmarks.parquet")
    assert main(["verify", str(model), "--live", str(live), "--benchmarks", str(benchmarks)]) == 0
    assert "verification PASSED" in capsys.readouterr().out


@pytest.mark.parametrize(
    "kind, message",
    [
        ("with_benchmarks_misjoined", r"predictions contain 300 NaN value\(s\)"),
        (
            "three_parameters",
            r"predict must take 1 or 2 parameters \(live_features\[, live_benchmark_models\]\), .*takes 3",
        ),
    ],
)
def test_two_parameter_faults_fail(kind: str, message: str, tiny_world: Path, tmp_path: Path) -> None:
    report = verify_pickle(pickled(tmp_path, kind), tiny_world / "live.parquet")
    assert not report.ok and any(re.search(message, p) for p in report.problems)


def test_verify_command_exit_codes(tiny_world: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    live = str(tiny_world / "live.parquet")
    assert main(["verify", str(pickled(tmp_path, "valid")), "--live", live]) == 0
    assert "verification PASSED" in capsys.readouterr().out
    assert main(["verify", str(pickled(tmp_path, "exits")), "--live", live, "--time-limit", "30"]) == 1
    assert "verification FAILED" in capsys.readouterr().out
    bad_options = {
        "absent.pkl: no such model pickle": [str(tmp_path / "absent.pkl"), "--live", live],
        "--time-limit must be more than 0 seconds, got 0": [
            str(tmp_path / "valid.pkl"),
            "--live",
            live,
            "--time-limit",
            "0",
        ],
        "--time-limit must be more than 0 seconds, got -5": [
            str(tmp_path / "valid.pkl"),
            "--live",
            live,
            "--time-limit",
            "-5",
        ],
        "argument --time-limit: invalid float value: 'soon'": [
            str(tmp_path / "valid.pkl"),
            "--live",
            live,
            "--time-limit",
            "soon",
        ],
    }
    for message, argv in bad_options.items():
        with pytest.raises(SystemExit) as exited:
            main(["verify", *argv])
        assert exited.value.code == 2
        assert message in capsys.readouterr().err


def test_upload_with_a_typo_in_the_live_path_posts_nothing(
    fake_numerai, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_numerai.models["my_model"] = "11111111-1111-4111-8111-111111111111"
    fake_numerai.data_versions["v5.2"] = "52525252-5252-4252-8252-525252525252"
    fake_numerai.docker_images["Python 3.11"] = "31131131-1311-4311-8311-311311311311"
    monkeypatch.setenv("NUMERAI_PUBLIC_ID", "PUBLIC")
    monkeypatch.setenv("NUMERAI_SECRET_KEY", "SECRET")
    text = tmp_path / "model.pkl"
    text.write_text("hi\n")
    with pytest.raises(VerificationError, match=r"typo\.parquet: live file not found"):
        upload(text, "my_model", live_path=tmp_path / "typo.parquet")
    assert fake_numerai.uploads == {} and fake_numerai.created == []


def test_a_build_verifying_on_a_missing_live_file_writes_no_pickle(tmp_path: Path) -> None:
    out = tmp_path / "model.pkl"
    with pytest.raises(VerificationError, match=r"typo\.parquet: live file not found"):
        write_verified_pickle(predict_for("valid"), out, tmp_path / "typo.parquet")
    assert list(tmp_path.iterdir()) == []


def test_a_damaged_parquet_file_is_named(tiny_world: Path, tmp_path: Path) -> None:
    features = nd.resolve_features(tiny_world, "all")
    data = (tiny_world / "train.parquet").read_bytes()
    (tmp_path / "train.parquet").write_bytes(data[: len(data) // 2])
    with pytest.raises(nd.DataError, match=r"train\.parquet: not a readable parquet file \(.*magic bytes"):
        nd.load_split(tmp_path / "train.parquet", features, ["target"], data_type="train")
    # The footer intact, one page header of a feature column overwritten: found while reading rows.
    damaged = Path(shutil.copy(tiny_world / "validation.parquet", tmp_path / "validation.parquet"))
    group = pq.ParquetFile(damaged).metadata.row_group(0)
    column = next(group.column(j) for j in range(group.num_columns) if group.column(j).path_in_schema == features[0])
    with open(damaged, "r+b") as handle:
        handle.seek(column.dictionary_page_offset if column.has_dictionary_page else column.data_page_offset)
        handle.write(b"\xff" * 32)
    with pytest.raises(nd.DataError, match=r"validation\.parquet: not a readable parquet file"):
        nd.load_split(damaged, features, ["target"], data_type="validation")


def test_an_all_nan_target_is_named(tiny_world: Path, tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    pd.read_parquet(tiny_world / "train.parquet").assign(target=np.nan).to_parquet(path)
    with pytest.raises(nd.DataError, match=r"train\.parquet: column 'target' has no value in any of its \d+ 'train'"):
        nd.load_split(path, nd.resolve_features(tiny_world, "all"), ["target"], data_type="train")


def test_an_id_in_both_train_and_validation_is_named(tiny_world: Path, tmp_path: Path) -> None:
    features = nd.resolve_features(tiny_world, "all")
    train = nd.load_split(tiny_world / "train.parquet", features, ["target"], data_type="train")
    validation = nd.load_split(tiny_world / "validation.parquet", features, ["target"], data_type="validation")
    nd.check_disjoint_ids(train, validation)
    frame = pd.read_parquet(tiny_world / "validation.parquet")
    frame.index = pd.Index(list(train.ids[:3]) + list(frame.index[3:]), name="id")
    frame.to_parquet(tmp_path / "validation.parquet")
    overlapping = nd.load_split(tmp_path / "validation.parquet", features, ["target"], data_type="validation")
    with pytest.raises(nd.DataError) as raised:
        nd.check_disjoint_ids(train, overlapping)
    message = str(raised.value)
    assert str(tiny_world / "train.parquet") in message and str(tmp_path / "validation.parquet") in message
    assert "3 id(s)" in message and repr(train.ids[0]) in message


def test_nan_in_live_features_are_predicted_as_missing_with_a_note(tiny_world: Path, tmp_path: Path) -> None:
    state = train_state(tiny_world, trees=10) | {"neutralization": 0.5}
    names = state["feature_names"][:12]
    live = pd.read_parquet(tiny_world / "live.parquet").astype({name: "float64" for name in names})
    for row, name in enumerate(names):
        live.iloc[row, live.columns.get_loc(name)] = np.nan
    predict = runtime.make_predict(state)
    with pytest.warns(UserWarning, match=rf"12 NaN value\(s\) in 12 column\(s\) \({names[0]}, .* and 2 more\)"):
        out = predict(live)
    assert np.isfinite(out["prediction"]).all() and out["prediction"].between(0, 1, inclusive="neither").all()
    assert out.index.equals(live.index)
    pd.testing.assert_frame_equal(out, predict(live.fillna(2)))
    live.to_parquet(tmp_path / "live.parquet")
    dump_predict(predict, tmp_path / "model.pkl")
    report = verify_pickle(tmp_path / "model.pkl", tmp_path / "live.parquet")
    assert report.ok, report.summary()
    assert any("12 NaN value(s) in 12 column(s)" in note for note in report.notes)
    assert "note: predict warned: UserWarning: live features hold 12 NaN" in report.summary()


# The build: outputs, the lock, folds, and interrupts.
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


def test_a_sigterm_after_the_build_has_ended_exits_without_being_killed(tiny_world: Path, tmp_path: Path) -> None:
    """Once the outputs are committed a SIGTERM is ignored: Python puts back the default action while
    it shuts down, where one had killed a finished build (-15) within the second after its report."""
    out = tmp_path / "model.pkl"
    process = build_process(tiny_world, out, 0)
    for line in process.stderr:
        if "stage write_build_report" in line:
            time.sleep(0.3)
            process.send_signal(signal.SIGTERM)
            break
    process.stderr.read()
    assert process.wait(timeout=120) in (0, 143)
    pickle, report, manifest = outputs_of(out)
    assert pickle == report == manifest and not leftovers(tmp_path)


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
