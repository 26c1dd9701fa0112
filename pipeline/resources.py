"""What a build's processes take of the machine: their peak memory, each stage's seconds and peak
(`Timings`), and the cores that the worker processes of `--jobs` share (`ThreadShare`)."""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
from threadpoolctl import threadpool_limits

if TYPE_CHECKING:
    from pipeline.parallel import Runner

logger = logging.getLogger(__name__)


def reset_peak() -> None:
    """Start this process's VmHWM afresh (Linux), so that it measures what follows."""
    with contextlib.suppress(OSError), open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM) since it started or since `reset_peak`."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) / 1024.0 for line in status if line.startswith("VmHWM:"))


def threads_per_job(threads: int, jobs: int) -> int:
    """`--threads` (0: every core) divided among `jobs` processes, at least one each."""
    return max(1, (threads or os.cpu_count() or 1) // jobs)


@dataclass
class ThreadShare:
    """The cores of `--jobs`' workers, shared by what runs on them: a worker's LightGBM fit starts on
    its process's `threads` and, while fewer tasks run than there are workers (none waits: the
    stage's last fits), takes `cores // running` of them, set between trees (`GrowThreads`), so a
    stage's tail does not leave cores idle. LightGBM's column-wise training gives the same trees on
    any number of threads; the fit leaves its thread count to OpenMP, which this sets, because
    LightGBM's `reset_parameter` would draw its feature fractions afresh. `most`: the largest share
    granted in this process since `remote_fit` last reset it (its fit's `Fitted.threads`)."""

    running: Any  # a multiprocessing Value: tasks running on the workers, and this process's `occupy`
    cores: int
    threads: int
    most: int = 0

    def now(self) -> int:
        return max(self.threads, self.cores // max(1, self.running.value))

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Count as running for as long as the context lasts."""
        with self.running.get_lock():
            self.running.value += 1
        try:
            yield
        finally:
            with self.running.get_lock():
                self.running.value -= 1


class GrowThreads:
    """A LightGBM callback that gives its fit the threads of its `ThreadShare` after each tree."""

    order = 0

    def __init__(self, share: ThreadShare):
        self.share = share
        self.threads = 0

    def grant(self) -> None:
        threads = self.share.now()
        if threads != self.threads:
            threadpool_limits(threads, user_api="openmp")
            self.threads = threads
            self.share.most = max(self.share.most, threads)

    def __call__(self, env: lgb.callback.CallbackEnv) -> None:
        self.grant()


@dataclass
class Timings:
    """Seconds and peak RSS of each stage of a build (the report's "timings", what `pipeline.plan`
    estimates): wall seconds, this process's CPU seconds (all its threads; not the workers'), its
    peak (VmHWM since the stage began) and, with `--jobs` or Dask, the largest peak of one of its
    tasks elsewhere (whose int8 matrix pages are shared, not copied)."""

    runner: Runner
    stages: dict[str, dict[str, float]] = field(default_factory=dict)

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        reset_peak()
        self.runner.take_peak_mb()
        start, cpu = time.perf_counter(), time.process_time()
        yield
        entry = {
            "seconds": round(time.perf_counter() - start, 2),
            "cpu_seconds": round(time.process_time() - cpu, 2),
            "peak_rss_mb": round(peak_rss_mb(), 1),
        }
        workers = self.runner.take_peak_mb()
        if workers:
            entry["worker_peak_rss_mb"] = round(workers, 1)
        self.stages[name] = entry
        logger.info("stage %s: %.1f s, peak RSS %.0f MB", name, entry["seconds"], entry["peak_rss_mb"])

    def table(self) -> dict[str, Any]:
        """Every stage so far and the total seconds."""
        return {
            "stages": self.stages,
            "total_seconds": round(sum(s["seconds"] for s in self.stages.values()), 2),
            "total_cpu_seconds": round(sum(s["cpu_seconds"] for s in self.stages.values()), 2),
            "jobs": self.runner.jobs,
        }
