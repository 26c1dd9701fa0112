"""Fits in parallel (`--jobs N`): the build's independent fits as tasks of a runner.

A build's LightGBM fits (members x CV folds, the probes' folds, the holdout and the refit) do not
depend on each other, and neither do the neural members. Each stage hands its fits (`Fit`) and its
whole-member tasks to the build's runner and then collects them:
- `InProcess` (`--jobs 1`, the default) runs each one here at once, in the order given: the build as
  it always was;
- `Processes` (`--jobs N`) runs them in N spawned worker processes, `--threads` divided among them
  (a stage's last LightGBM fits take the cores of the workers that have nothing left: `ThreadShare`).
  Spawned, not forked: libgomp (LightGBM's OpenMP) is not fork-safe once the parent has run a
  parallel region. The int8 matrices are files mapped by every process (`--spill-dir`, or a scratch
  directory), never copied per worker: a worker reopens the parent's unlinked file through
  /proc/PID/fd. The first worker that needs a binned dataset bins it into a LightGBM binary file
  under a lock; every other fit on the same rows loads that file (bin once, as `DatasetCache` does
  in one process). Boosters come back as model text, CV fits' out-of-fold scores with them;
- `pipeline.distributed.DaskRunner` (`--dask-scheduler`, `--dask-local`) runs the same tasks on a
  Dask cluster, each worker reading its frames from the parquet files.

The same functions train and predict everywhere, and LightGBM's column-wise, deterministic training
gives the same trees whatever its thread count, so every runner gives the same predictions.
Neural members run as one task each (their CV's folds in one process, as they early-stop and choose
epochs per fold); members of a user's own kind (`--member`) stay in this process, as a worker could
not import their module.
"""

from __future__ import annotations

import contextlib
import contextvars
import fcntl
import io
import logging
import os
import pickle
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from multiprocessing import get_context
from pathlib import Path
from typing import Any, ClassVar, Protocol

import lightgbm as lgb
import numpy as np
from threadpoolctl import threadpool_limits

from pipeline.binning import DatasetCache, Parts, Rows, labelled, load_binary, lock_path
from pipeline.data import EraFrame
from pipeline.features import FeaturePipeline
from pipeline.models.lgbm import LGBMModel, TqdmCallback
from pipeline.resources import GrowThreads, ThreadShare, peak_rss_mb, reset_peak, threads_per_job
from pipeline.weighting import EraBoost, EraWeighting

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------
# Fits: one LightGBM training run, and what it gives back


@dataclass
class Prediction:
    """Rows a CV fit scores after each number of trees in `steps` (its out-of-fold scores)."""

    pipeline: FeaturePipeline | None
    frame: EraFrame
    rows: np.ndarray
    steps: np.ndarray

    def matrix(self) -> np.ndarray:
        x = self.frame.features[self.rows]
        return x.astype(np.float32) if self.pipeline is None else self.pipeline.matrix(x, self.frame.eras[self.rows])


@dataclass
class Fit:
    """One LightGBM training run: the rows of every `era_stride`-th era of each part as `pipeline`
    presents them (None: raw features), labelled with `target`, trained with native `params` for
    `rounds` trees; `prediction`: rows to score after it (a CV fold). `progress`: show a bar of trees
    when it runs in this process."""

    name: str
    pipeline: FeaturePipeline | None
    parts: Parts
    era_stride: int
    target: str
    feature_names: list[str]
    params: dict[str, Any]
    rounds: int
    prediction: Prediction | None = None
    progress: bool = False
    weighting: EraWeighting | None = None

    def era_weights(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """Each row's weight by its era, counted in the fit's own eras (None: not weighted)."""
        if self.weighting is None:
            return None
        return self.weighting.for_eras(np.concatenate([np.asarray(eras, dtype=object) for _, eras in self.parts]))

    def row_eras(self) -> np.ndarray:
        """The era of each row the fit trains on (its labelled rows, in its dataset's order)."""
        rows = Rows.of(self.pipeline, self.parts, self.era_stride, self.feature_names, 0)
        known = ~np.isnan(rows.labels(self.target))
        return np.concatenate([frame.eras[part] for frame, part in rows.parts])[known]


@dataclass
class Fitted:
    """A fit's booster (None once let go), its staged out-of-fold scores (steps x rows; None without a
    prediction), its seconds (binning, when this fit binned its dataset, included) and the most
    threads it trained on in a worker (0: here, on its own; `ThreadShare`)."""

    booster: lgb.Booster | None
    staged: np.ndarray | None
    seconds: float
    bin_seconds: float = 0.0
    threads: int = 0


def train_fit(fit: Fit, dataset: lgb.Dataset, threads: int | None = None) -> tuple[lgb.Booster, np.ndarray | None]:
    """Train `fit` on its labelled dataset (with `threads`, when given, instead of its own), then score
    its prediction rows. Every runner trains through this function."""
    params = fit.params if threads is None else fit.params | {"num_threads": threads}
    if fit.weighting is not None and fit.weighting.boost is not None:
        params = params | {"objective": EraBoost(fit.weighting.boost, fit.row_eras(), fit.weighting.boost_every)}
    callbacks = [TqdmCallback(fit.rounds, fit.name)] if fit.progress and threads is None else []
    if threads is not None and _SHARE is not None:
        # OpenMP's threads, which the callback sets between trees (`ThreadShare`).
        params = params | {"num_threads": 0}
        grow = GrowThreads(_SHARE)
        grow.grant()
        callbacks.append(grow)
    model = LGBMModel()
    model.booster_ = lgb.train(params, dataset, num_boost_round=fit.rounds, callbacks=callbacks)
    staged = None if fit.prediction is None else model.staged_predict(fit.prediction.matrix(), fit.prediction.steps)
    return model.booster_, staged


@dataclass
class FitPlan:
    """A member's fits and what turns their results into its own (`finish`). `cache`: the build's
    binned datasets (None: a cache for these fits alone, seeded with `seed`, cleared after them)."""

    fits: list[Fit]
    finish: Callable[[list[Fitted]], Any]
    cache: DatasetCache | None = None
    seed: int = 0


# ---------------------------------------------------------------------------------------------------
# Runners


class Handle(Protocol):
    def result(self) -> Any: ...


class Runner(Protocol):
    """Where fits and tasks run (see the module docstring)."""

    jobs: int
    # Where the int8 matrices must live for the workers to map them (None: anywhere).
    matrix_dir: Path | None
    # Whether a submitted task runs elsewhere while this process goes on; the threads of one there.
    concurrent: bool
    threads: int | None

    def cache(self, seed: int) -> DatasetCache:
        """A cache of binned datasets that this runner's fits can share."""
        ...

    def submit_fit(self, fit: Fit, cache: DatasetCache) -> Handle:
        """Start `fit` on the cache's dataset of its rows; the handle's result is its `Fitted`."""
        ...

    def submit(self, function: Callable[..., Any], *args: Any) -> Handle:
        """Start `function(*args)`; the handle's result is its return value."""
        ...

    def ships(self, obj: object) -> bool:
        """Whether `obj` can be sent to this runner's workers (its class importable there)."""
        ...

    def take_peak_mb(self) -> float:
        """The largest peak RSS of a task since the last call (0: none ran elsewhere)."""
        ...

    def occupy(self) -> contextlib.AbstractContextManager:
        """A context in which this process's own work holds one worker's share of the cores."""
        ...


def done(value: Any = None, error: BaseException | None = None) -> Future:
    future: Future = Future()
    if error is None:
        future.set_result(value)
    else:
        future.set_exception(error)
    return future


@dataclass
class InProcess:
    """Every fit and task here, at once, in the order given (`--jobs 1`)."""

    spill_dir: Path | None = None
    jobs: int = 1
    matrix_dir: Path | None = None
    concurrent: ClassVar[bool] = False
    threads: ClassVar[None] = None

    def cache(self, seed: int) -> DatasetCache:
        return DatasetCache(seed=seed, spill_dir=self.spill_dir)

    def submit_fit(self, fit: Fit, cache: DatasetCache) -> Future:
        start = time.perf_counter()
        binning = cache.seconds
        dataset = cache.dataset(
            fit.pipeline, fit.parts, fit.era_stride, fit.target, fit.feature_names, fit.era_weights()
        )
        booster, staged = train_fit(fit, dataset)
        return done(Fitted(booster, staged, time.perf_counter() - start, cache.seconds - binning))

    def submit(self, function: Callable[..., Any], *args: Any) -> Future:
        try:
            return done(function(*args))
        except Exception as err:  # raised again by result(), where the caller collects it
            return done(error=err)

    def ships(self, obj: object) -> bool:
        return True

    def take_peak_mb(self) -> float:
        return 0.0

    def occupy(self) -> contextlib.AbstractContextManager:
        return contextlib.nullcontext()


_ACTIVE: contextvars.ContextVar[Runner | None] = contextvars.ContextVar("pipeline_runner", default=None)


def current() -> Runner:
    """The build's runner (`active`), or one that runs everything here."""
    return _ACTIVE.get() or InProcess()


@contextlib.contextmanager
def active(runner: Runner) -> Iterator[Runner]:
    """Make `runner` the one every fit of this context goes through (the probes' too)."""
    token = _ACTIVE.set(runner)
    try:
        yield runner
    finally:
        _ACTIVE.reset(token)


def run_plan(plan: FitPlan, runner: Runner | None = None) -> Any:
    """Run a plan's fits on `runner` (default: the current one) and finish it."""
    return start_plan(plan, runner)()


def start_plan(plan: FitPlan, runner: Runner | None = None) -> Callable[[], Any]:
    """Start a plan's fits; the returned function waits for them and finishes the plan."""
    runner = runner or current()
    cache = plan.cache if plan.cache is not None else runner.cache(plan.seed)
    handles = [runner.submit_fit(fit, cache) for fit in plan.fits]

    def finish() -> Any:
        try:
            return plan.finish([handle.result() for handle in handles])
        finally:
            if plan.cache is None:
                cache.clear()

    return finish


# ---------------------------------------------------------------------------------------------------
# Frames sent to workers by reference


class FrameRef(Protocol):
    """What a worker opens instead of receiving a frame's matrix: `key` names it among the frames
    that worker has opened."""

    key: str

    def open(self) -> EraFrame: ...


_OPENED: dict[str, EraFrame] = {}


def opened(ref: FrameRef) -> EraFrame:
    """The frame `ref` names, opened once per process (how a task's frames are unpickled)."""
    frame = _OPENED.get(ref.key)
    if frame is None:
        frame = _OPENED[ref.key] = ref.open()
    return frame


class TaskPickler(pickle.Pickler):
    """A pickler that sends every `EraFrame` as the reference `share` gives it."""

    def __init__(self, file: io.BytesIO, share: Callable[[EraFrame], FrameRef]):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.share = share

    def reducer_override(self, obj: Any) -> Any:
        if isinstance(obj, EraFrame):
            return opened, (self.share(obj),)
        return NotImplemented


def task_payload(share: Callable[[EraFrame], FrameRef], function: Callable[..., Any], args: tuple) -> bytes:
    buffer = io.BytesIO()
    TaskPickler(buffer, share).dump((function, args))
    return buffer.getvalue()


@dataclass
class TaskResult:
    value: Any
    seconds: float
    peak_mb: float


def run_task(payload: bytes, threads: int | None = None) -> TaskResult:
    """A worker's side of a task: unpickle it (opening its frames), run it, and time it."""
    reset_peak()
    start = time.perf_counter()
    function, args = pickle.loads(payload)
    with (
        threadpool_limits(threads) if threads else contextlib.nullcontext(),
        _SHARE.holding() if _SHARE is not None else contextlib.nullcontext(),
    ):
        value = function(*args)
    return TaskResult(value, time.perf_counter() - start, peak_rss_mb())


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remote_fit(
    fit: Fit, rows: Rows, labels: np.ndarray, weights: np.ndarray | None, path: str | None, threads: int
) -> tuple:
    """A fit in a worker: bin its rows, or load them from `path` when another fit binned them there
    (the first to need them bins them under a lock), train, and return the booster as model text."""
    start = time.perf_counter()
    dataset, bin_seconds = None, 0.0
    if path is None:
        dataset = rows.bin()
    else:
        with file_lock(lock_path(Path(path))):
            if not os.path.exists(path):
                dataset = rows.bin()
                dataset.save_binary(f"{path}.part")
                os.replace(f"{path}.part", path)
    if dataset is not None:
        bin_seconds = time.perf_counter() - start
    else:
        dataset = load_binary(Path(path), rows.seed)
    if _SHARE is not None:
        _SHARE.most = 0
    booster, staged = train_fit(fit, labelled(dataset, labels, weights), threads)
    grown = _SHARE.most if _SHARE is not None else threads
    return booster.model_to_string(), staged, time.perf_counter() - start, bin_seconds, grown


def fitted_from(result: TaskResult) -> Fitted:
    text, staged, seconds, bin_seconds, threads = result.value
    return Fitted(lgb.Booster(model_str=text), staged, seconds, bin_seconds, threads)


def mapped_file(x: np.ndarray) -> tuple[str, int] | None:
    """(a path that reopens the file `x` is mapped from, the byte offset of `x` in it), or None when
    `x` is not a C-contiguous mapping of a file this process holds open (Linux /proc)."""
    if not x.flags.c_contiguous:
        return None
    address = x.__array_interface__["data"][0]
    with open("/proc/self/maps") as maps:
        found = None
        for line in maps:
            span, _, offset, device, inode, *_ = line.split() + [""]
            low, high = (int(v, 16) for v in span.split("-"))
            if low <= address < high and int(inode) != 0:
                major, minor = (int(v, 16) for v in device.split(":"))
                found = (int(inode), os.makedev(major, minor), int(offset, 16) + address - low)
                break
    if found is None:
        return None
    inode, device, offset = found
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            stat = os.fstat(int(fd))
            if stat.st_ino == inode and stat.st_dev == device:
                return f"/proc/{os.getpid()}/fd/{fd}", offset
    return None


@dataclass(frozen=True)
class FileFrame:
    """A frame whose int8 matrix a worker maps from a file and whose other fields it reads once."""

    key: str
    meta: str
    matrix: str
    offset: int
    shape: tuple[int, int]

    def open(self) -> EraFrame:
        meta = pickle.loads(Path(self.meta).read_bytes())
        features = np.memmap(self.matrix, dtype=np.int8, mode="r", offset=self.offset, shape=self.shape)
        return EraFrame(features=features, **meta)


@dataclass
class FileFrames:
    """The frames this build has sent to its worker processes, each written to `scratch` once: its
    matrix only when it is not a file mapping already (`--spill-dir`, or a matrix the build loaded
    into the scratch directory)."""

    scratch: Path
    refs: dict[int, tuple[EraFrame, FileFrame]] = field(default_factory=dict)

    def share(self, frame: EraFrame) -> FileFrame:
        known = self.refs.get(id(frame))
        if known is not None:
            return known[1]
        key = f"frame{len(self.refs)}-{uuid.uuid4().hex}"
        meta = self.scratch / f"{key}.pkl"
        fields = ("path", "ids", "eras", "feature_names", "targets", "dropped_rows", "data_type", "benchmark")
        meta.write_bytes(pickle.dumps({name: getattr(frame, name) for name in fields}, pickle.HIGHEST_PROTOCOL))
        mapped = mapped_file(frame.features)
        if mapped is None:
            path = self.scratch / f"{key}.int8"
            np.ascontiguousarray(frame.features).tofile(path)
            mapped = (str(path), 0)
        ref = FileFrame(key, str(meta), mapped[0], mapped[1], tuple(frame.features.shape))
        self.refs[id(frame)] = (frame, ref)  # the frame kept, so that its id stays its own
        return ref


# The cores this worker process shares with the others (`worker_start`; None in other processes).
_SHARE: ThreadShare | None = None


def worker_start(threads: int, share: ThreadShare | None = None) -> None:
    """Each worker process: `threads` for BLAS and OpenMP, and the cores its fits share."""
    global _SHARE
    threadpool_limits(threads)
    _SHARE = share


@dataclass
class Processes:
    """Fits and tasks in `jobs` spawned worker processes of `threads` each (see the module docstring)."""

    jobs: int
    threads: int
    scratch: Path
    matrix_dir: Path | None = None
    cores: int = 0
    frames: FileFrames = field(init=False)
    pool: ProcessPoolExecutor = field(init=False)
    share: ThreadShare = field(init=False)
    peak_mb: float = 0.0
    concurrent: ClassVar[bool] = True

    def __post_init__(self) -> None:
        self.matrix_dir = self.matrix_dir or self.scratch
        self.frames = FileFrames(self.scratch)
        context = get_context("spawn")
        self.share = ThreadShare(context.Value("i", 0), self.cores or self.jobs * self.threads, self.threads)
        self.pool = ProcessPoolExecutor(
            self.jobs, mp_context=context, initializer=worker_start, initargs=(self.threads, self.share)
        )

    def cache(self, seed: int) -> DatasetCache:
        return DatasetCache(seed=seed, spill_dir=self.scratch)

    def _submit(self, function: Callable[..., Any], args: tuple, name: str) -> Future:
        future = self.pool.submit(run_task, task_payload(self.frames.share, function, args), self.threads)
        return watch(future, name, self)

    def submit_fit(self, fit: Fit, cache: DatasetCache) -> Handle:
        entry, new = cache.reserve(fit.pipeline, fit.parts, fit.era_stride, fit.feature_names)
        if new:
            entry.path = cache.new_path()
        labels, weights = entry.rows.labels(fit.target), entry.rows.weights(fit.era_weights())
        args = (fit, entry.rows, labels, weights, str(entry.path), self.threads)
        return Mapped(self._submit(remote_fit, args, fit.name), fitted_from, cache)

    def submit(self, function: Callable[..., Any], *args: Any) -> Handle:
        return Mapped(self._submit(function, args, task_name(function, args)), task_value)

    def record(self, peak_mb: float) -> None:
        self.peak_mb = max(self.peak_mb, peak_mb)

    def ships(self, obj: object) -> bool:
        return type(obj).__module__.split(".")[0] == "pipeline"

    def take_peak_mb(self) -> float:
        peak, self.peak_mb = self.peak_mb, 0.0
        return peak

    def occupy(self) -> contextlib.AbstractContextManager:
        return self.share.holding()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def task_name(function: Callable[..., Any], args: tuple) -> str:
    """A task's name in the log: the function and the member it works on."""
    member = getattr(args[0], "name", None) if args else None
    return f"{function.__name__}({member})" if member else function.__name__


def watch(future: Any, name: str, runner: Any) -> Any:
    """Log a task when it ends, and record its peak memory with `runner`."""

    def ended(finished: Any) -> None:
        if finished.exception() is None:
            result = finished.result()
            runner.record(result.peak_mb)
            logger.info("%s: %.1f s in a worker, %.0f MB peak", name, result.seconds, result.peak_mb)

    future.add_done_callback(ended)
    return future


def task_value(result: TaskResult) -> Any:
    return result.value


@dataclass
class Mapped:
    """A worker's result, turned into the caller's (a `Fitted`, a task's value) when collected; a fit
    that binned its dataset counts in the cache's binning figures."""

    future: Any
    convert: Callable[[TaskResult], Any]
    cache: DatasetCache | None = None

    def result(self) -> Any:
        value = self.convert(self.future.result())
        if self.cache is not None and isinstance(value, Fitted) and value.bin_seconds > 0:
            self.cache.count(value.bin_seconds)
        return value


@contextlib.contextmanager
def local_runner(jobs: int, threads: int, spill_dir: Path | None) -> Iterator[Runner]:
    """The runner of `--jobs`: this process for 1, else `jobs` worker processes and a scratch
    directory (in `spill_dir` when given) for their shared matrices and binned datasets."""
    if jobs <= 1:
        yield InProcess(spill_dir)
        return
    scratch = Path(tempfile.mkdtemp(prefix="numerai-jobs-", dir=spill_dir))
    cores = threads or os.cpu_count() or 1
    runner = Processes(jobs, threads_per_job(threads, jobs), scratch, spill_dir, cores)
    logger.info(
        "--jobs %d: worker processes of %d threads each, a stage's last fits growing onto %d cores (scratch %s)",
        jobs,
        runner.threads,
        cores,
        scratch,
    )
    try:
        yield runner
    finally:
        runner.close()
        shutil.rmtree(scratch, ignore_errors=True)


# ---------------------------------------------------------------------------------------------------
# The build's members through the runner


def member_cv(member: Any, frame: EraFrame, folds: list, score_target: str, pipelines: list) -> tuple[Any, Any]:
    """A member's whole CV as one task; the member comes back with what its CV fixed."""
    return member, member.cross_validate(frame, folds, score_target, pipelines)


def member_fit(member: Any, splits: list[EraFrame], pipeline: FeaturePipeline, stage: str) -> tuple[Any, None]:
    """A member's fit as one task; the member comes back trained."""
    member.fit(splits, pipeline, stage)
    return member, None


def start_member(member: Any, task: Callable[[], Handle]) -> Callable[[], Any]:
    """Start one `task` returning (the member, a value); the returned function waits for it, takes
    the state of a member trained in a worker into the build's own object, and gives the value."""
    handle = task()

    def collect() -> Any:
        returned, value = handle.result()
        if returned is not member:
            vars(member).update(vars(returned))
        return value

    return collect


def member_fold(member: Any, frame: EraFrame, fold: tuple) -> tuple[Any, Any]:
    """One CV fold of a member that splits its CV into folds (`cv_fold`: the neural members), as a task."""
    return member, member.cv_fold(frame, fold)


def start_cv(member: Any, frame: EraFrame, folds: list, score_target: str, pipelines: list) -> Callable | None:
    """Start a member's CV on the current runner: its LightGBM fits (`cv_plan`), its folds as tasks
    (`cv_fold`, where they are independent), or the whole of it as one task; None for a kind no worker can import."""
    runner = current()
    if getattr(member, "cv_plan", None) is not None:
        return start_plan(member.cv_plan(frame, folds, score_target, pipelines), runner)
    if not runner.ships(member):
        return None
    if getattr(member, "independent_folds", False):
        started = [start_member(member, partial(runner.submit, member_fold, member, frame, fold)) for fold in folds]
        return lambda: member.cv_result(frame, score_target, [collect() for collect in started])
    return start_member(member, partial(runner.submit, member_cv, member, frame, folds, score_target, pipelines))


def start_cv_members(
    members: Sequence[Any], frame: EraFrame, folds: list, score_target: str, pipelines: list
) -> Callable[[], dict[str, Any]]:
    """Every member's CV started on the current runner; the returned function runs here the members a
    worker cannot import (while the others' fits run), then collects them in order. Members without
    LightGBM fits to split their CV into (the neural members: one task, or one per fold) start first:
    a chained one is the stage's longest task, and a runner's slots take tasks in the order given."""
    order = sorted(members, key=lambda member: getattr(member, "cv_plan", None) is not None)
    started = {member.name: start_cv(member, frame, folds, score_target, pipelines) for member in order}

    def collect() -> dict[str, Any]:
        local = {
            m.name: m.cross_validate(frame, folds, score_target, pipelines) for m in members if not started[m.name]
        }
        return {m.name: local[m.name] if m.name in local else started[m.name]() for m in members}

    return collect


def fit_members(members: Sequence[Any], splits: list[EraFrame], pipeline: FeaturePipeline, stage: str) -> None:
    """`Member.fit` of every member on the current runner, all started before any is collected."""
    launch_fits(members, splits, pipeline, stage)()


def start_fits(
    members: Sequence[Any], splits: list[EraFrame], pipeline: FeaturePipeline, stage: str
) -> Callable[[], None]:
    """`fit_members` started, the returned function waits for it; until then the members keep their
    state (a worker trains a copy). On a runner not `concurrent` (`--jobs 1`, which trains in place as
    it is submitted) nothing starts before the returned function is called."""
    if current().concurrent:
        return launch_fits(members, splits, pipeline, stage)
    return partial(fit_members, members, splits, pipeline, stage)


def launch_fits(
    members: Sequence[Any], splits: list[EraFrame], pipeline: FeaturePipeline, stage: str
) -> Callable[[], None]:
    """Every member's fit submitted to the current runner; the returned function fits here the members
    a worker cannot import, then collects the others."""
    runner = current()
    started = []
    for member in members:
        if getattr(member, "fit_plan", None) is not None:
            started.append(start_plan(member.fit_plan(splits, pipeline, stage), runner))
        elif runner.ships(member):
            started.append(start_member(member, partial(runner.submit, member_fit, member, splits, pipeline, stage)))
        else:
            started.append(None)

    def collect() -> None:
        for member, collected in zip(members, started, strict=True):
            if collected is None:
                member.fit(splits, pipeline, stage)
        for collected in started:
            if collected is not None:
                collected()

    return collect
