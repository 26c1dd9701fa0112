"""Where a build's files go, and how they are replaced: never half-written, never two builds at once.

A build writes four things for one `--out`: the verified pickle, the record of the images it was
verified for (`<out>.verified.json`, `pipeline.images`), its refresh artifacts and its report.
`BuildOutputs` checks the paths before any data is read, takes a lock on `--out` (a second build on
the same `--out` is refused at the start), stages everything under unique temporary names beside the
destinations, and `commit` moves them into place with SIGINT and SIGTERM held back, the pickle last.
Whatever ends the build — an error, a failed verification, SIGINT or SIGTERM — `--out` then holds
either the previous build's outputs or the new build's, and no temporary file is left.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from pipeline.images import sidecar_path

logger = logging.getLogger(__name__)

STAGED = ".tmp-"
REPLACED = ".old-"
LOCK_SUFFIX = ".lock"
HELD_SIGNALS = {signal.SIGINT, signal.SIGTERM}


class OutputError(ValueError):
    """An output path that cannot be written, or one another build is writing; names the option."""


@dataclass(frozen=True)
class OutputPaths:
    """The outputs of one build: the pickle first, moved into place last (`BuildOutputs.commit`)."""

    pickle: Path
    artifacts: Path
    report: Path
    verified: Path

    @classmethod
    def for_build(cls, out: Path, report_dir: Path | None = None) -> OutputPaths:
        """`--out`, `<out stem>_artifacts` beside it, the report directory (`--report-dir`, by
        default `<out stem>_report` beside the pickle) and `<out>.verified.json`."""
        out = Path(out)
        report = Path(report_dir) if report_dir is not None else out.with_name(out.stem + "_report")
        return cls(out, out.with_name(out.stem + "_artifacts"), report, sidecar_path(out))

    def staged(self, token: str) -> OutputPaths:
        """Temporary names beside each destination (same file system, so a rename is atomic)."""
        return OutputPaths(*(path.with_name(path.name + STAGED + token) for path in self.all()))

    def all(self) -> tuple[Path, Path, Path, Path]:
        return (self.pickle, self.artifacts, self.report, self.verified)


def _writable_directory(directory: Path, option: str, path: Path) -> None:
    """`directory` can hold new files: it exists (or can be made) and a file can be created there."""
    existing = directory
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise OutputError(f"{option} {path}: {existing} is a file, so {directory} cannot be a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
            pass
    except OSError as err:
        raise OutputError(f"{option} {path}: cannot write in {directory} ({err.strerror or err})") from err


def check_paths(paths: OutputPaths) -> None:
    """Fail at once, before any data is read, on outputs that could not be written after hours."""
    if paths.pickle.is_dir():
        raise OutputError(f"--out {paths.pickle} is a directory; expected the path of the pickle, e.g. model.pkl")
    for path, option in ((paths.artifacts, "--out"), (paths.report, "--report-dir")):
        if path.exists() and not path.is_dir():
            raise OutputError(f"{option}: {path} exists and is not a directory; the build writes a directory there")
    _writable_directory(paths.pickle.parent, "--out", paths.pickle)
    _writable_directory(paths.artifacts.parent, "--out", paths.artifacts)
    _writable_directory(paths.report.parent, "--report-dir", paths.report)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """SIGINT and SIGTERM wait until the block ends (then they are delivered as usual)."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, HELD_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def terminate_as_exit(afterwards: signal.Handlers | None = None) -> Iterator[None]:
    """SIGTERM raises SystemExit(143) in the main thread, so `finally` blocks and context managers
    clean up (temporary files, the verification process) as they do for SIGINT's KeyboardInterrupt.
    `afterwards`: the action the block leaves for SIGTERM (default: the one before it)."""

    def handler(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave signals to whoever owns it
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if afterwards is None else afterwards)


class BuildOutputs:
    """The lock on one `--out` and the staged outputs of the build holding it (a context manager)."""

    def __init__(self, paths: OutputPaths):
        self.paths = paths
        self.token = f"{os.getpid()}-{secrets.token_hex(4)}"
        self.staged = paths.staged(self.token)
        self.lock = paths.pickle.with_name(paths.pickle.name + LOCK_SUFFIX)
        self.committed = False

    def __enter__(self) -> BuildOutputs:
        check_paths(self.paths)
        self._acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        for path in self.staged.all():
            _remove(path)
        for path in self.paths.all():
            _remove(path.with_name(path.name + REPLACED + self.token))
        shutil.rmtree(self.lock, ignore_errors=True)

    def _acquire(self) -> None:
        """Take the lock: a directory holding the holder's pid, renamed into place in one step (the
        rename fails while another build's lock is there). A lock whose holder is gone is stale: it and
        that build's leftovers are removed."""
        for _ in range(2):
            claim = self.lock.with_name(self.lock.name + STAGED + self.token)
            claim.mkdir()
            (claim / "pid").write_text(f"{os.getpid()} {time.time():.0f}\n")
            try:
                os.rename(claim, self.lock)
            except OSError:
                shutil.rmtree(claim, ignore_errors=True)
                pid, started = self._holder()
                if pid is not None and _alive(pid):
                    raise OutputError(
                        f"--out {self.paths.pickle}: another build (pid {pid}, started "
                        f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(started))}) is writing it; wait for "
                        "it to finish or choose another --out"
                    ) from None
                logger.warning("removing the stale lock %s of a build that is gone", self.lock)
                shutil.rmtree(self.lock, ignore_errors=True)
                continue
            self._remove_leftovers()
            return
        raise OutputError(f"--out {self.paths.pickle}: could not take the lock {self.lock}")

    def _holder(self) -> tuple[int | None, float]:
        try:
            pid, started = (self.lock / "pid").read_text().split()
            return int(pid), float(started)
        except (OSError, ValueError):
            return None, 0.0

    def _remove_leftovers(self) -> None:
        """Staged or replaced outputs of builds that were killed (SIGKILL) before they could clean up."""
        for path in (*self.paths.all(), self.lock):
            for pattern in (path.name + STAGED + "*", path.name + REPLACED + "*"):
                for leftover in path.parent.glob(pattern):
                    logger.warning("removing %s, left by a build that was killed", leftover)
                    _remove(leftover)

    def commit(self) -> None:
        """Move the staged outputs into place, report and artifacts first and the pickle last, with
        SIGINT and SIGTERM held back so that they are replaced together; if a move fails, the
        ones already made are undone."""
        missing = [str(path) for path in self.staged.all() if not path.exists()]
        if missing:
            raise OutputError(f"cannot commit the build's outputs: {', '.join(missing)} were not written")
        done: list[tuple[Path, Path | None]] = []
        with signals_held():
            try:
                for staged, final in zip(self.staged.all()[1:], self.paths.all()[1:], strict=True):
                    previous = final.with_name(final.name + REPLACED + self.token) if final.exists() else None
                    if previous is not None:
                        final.rename(previous)
                    staged.rename(final)
                    done.append((final, previous))
                os.replace(self.staged.pickle, self.paths.pickle)
            except OSError:
                for final, previous in reversed(done):
                    _remove(final)
                    if previous is not None:
                        previous.rename(final)
                raise
        self.committed = True
