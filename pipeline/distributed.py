"""Training on a cluster: the build's fits as tasks on a Dask cluster (`DaskRunner`), neural members
data-parallel over CPU processes (`torch.distributed`, gloo).

Both give back what the single-machine path gives (a `lgb.Booster` trained by the same function on
the same bins; a trained network and its `TrainResult`, as `pipeline.models.training.train` does),
so export, the pickle and prediction never depend on where a model was trained. Dask is an optional
extra (`pip install .[dask]`), imported only when a cluster is asked for; the pickle never needs it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import logging
import pickle
import socket
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pipeline.binning import DatasetCache, Rows
from pipeline.data import DataError, EraFrame, load_split
from pipeline.models.training import EraBatches, GlooReplicas, TrainResult, TrainSettings, torch_settings, train
from pipeline.parallel import (
    Fit,
    Mapped,
    fitted_from,
    remote_fit,
    run_task,
    task_name,
    task_payload,
    task_value,
    watch,
)

if TYPE_CHECKING:
    from distributed import Client

logger = logging.getLogger(__name__)

INSTALL_HINT = "pip install .[dask]"
# Seconds to wait for a scheduler to answer, and for it to have at least one worker.
CONNECT_TIMEOUT = 30.0


class ClusterError(ValueError):
    """A cluster option that cannot be used; the message names the option."""


def _import_distributed() -> Any:
    """The `distributed` package, or an error saying how to install the `dask` extra."""
    try:
        import dask.dataframe  # noqa: F401  (lightgbm.dask needs dask's dataframe support)
        import distributed
    except ImportError as err:
        raise ClusterError(
            f"--dask-scheduler and --dask-local need dask[dataframe] and distributed, which are not installed "
            f"({err}); install them with: {INSTALL_HINT}"
        ) from err
    return distributed


@contextlib.contextmanager
def dask_client(
    scheduler: str | None = None, local_workers: int | None = None, timeout: float = CONNECT_TIMEOUT
) -> Iterator[Client]:
    """A Dask client: connected to the scheduler at `scheduler` (--dask-scheduler), or to a local
    cluster of `local_workers` one-thread worker processes (--dask-local) that is closed afterwards."""
    if scheduler is not None and local_workers is not None:
        raise ClusterError(
            "--dask-scheduler and --dask-local exclude each other: give a scheduler address or a local worker count"
        )
    if scheduler is None and local_workers is None:
        raise ClusterError("a Dask cluster needs --dask-scheduler ADDRESS or --dask-local N")
    distributed = _import_distributed()
    if local_workers is not None:
        if local_workers < 1:
            raise ClusterError(f"--dask-local must be at least 1 worker, got {local_workers}")
        with (
            distributed.LocalCluster(
                n_workers=local_workers, threads_per_worker=1, processes=True, dashboard_address=":0"
            ) as cluster,
            distributed.Client(cluster) as client,
        ):
            logger.info(
                "local Dask cluster: %d worker processes, 1 thread each (%s)", local_workers, cluster.scheduler_address
            )
            yield client
        return
    try:
        client = distributed.Client(scheduler, timeout=timeout)
    except (OSError, TimeoutError, ValueError) as err:
        raise ClusterError(f"--dask-scheduler {scheduler}: cannot reach a Dask scheduler there ({err})") from err
    with client:
        try:
            client.wait_for_workers(1, timeout=timeout)
        except TimeoutError as err:
            raise ClusterError(
                f"--dask-scheduler {scheduler}: the scheduler has no worker after {timeout:.0f} s"
            ) from err
        logger.info("Dask scheduler %s: %d workers", scheduler, len(client.scheduler_info()["workers"]))
        yield client


@dataclass(frozen=True)
class ParquetFrame:
    """A frame that a Dask worker reads from its parquet split itself (the data directory at the same
    path on every worker), checked to be the rows this machine loaded."""

    key: str
    path: str
    feature_names: tuple[str, ...]
    targets: tuple[str, ...]
    data_type: str | None
    rows: int
    fingerprint: str

    @classmethod
    def of(cls, frame: EraFrame) -> ParquetFrame:
        return cls(
            f"{frame.path}-{uuid.uuid4().hex}",
            str(frame.path),
            tuple(frame.feature_names),
            tuple(frame.targets.columns),
            frame.data_type,
            len(frame),
            ids_fingerprint(frame.ids),
        )

    def open(self) -> EraFrame:
        frame = load_split(self.path, list(self.feature_names), list(self.targets), data_type=self.data_type)
        if len(frame) != self.rows or ids_fingerprint(frame.ids) != self.fingerprint:
            raise DataError(
                f"{self.path}: a Dask worker read {len(frame)} rows, not the {self.rows} rows (or not the ids) this "
                "machine loaded; expected the same data directory at the same path on every worker"
            )
        return frame


def ids_fingerprint(ids: np.ndarray) -> str:
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()


class DaskRunner:
    """The build's fits and tasks on a Dask cluster (`pipeline.parallel.Runner`): each task reads its
    frames from the parquet files on its worker (once per worker) and bins its own rows (no file is
    shared between machines), then trains exactly as on one machine. Neural members run as one task
    each too, so the workers need the same environment as this machine (torch included)."""

    matrix_dir = None
    concurrent = True

    def __init__(self, client: Client):
        self.client = client
        workers = client.scheduler_info(n_workers=-1)["workers"].values()
        self.jobs = len(workers)
        self.threads = min(int(worker["nthreads"]) for worker in workers)
        self.refs: dict[int, tuple[EraFrame, ParquetFrame]] = {}
        self.peak_mb = 0.0

    def share(self, frame: EraFrame) -> ParquetFrame:
        known = self.refs.get(id(frame))
        if known is None:
            known = self.refs[id(frame)] = (frame, ParquetFrame.of(frame))
        return known[1]

    def cache(self, seed: int) -> DatasetCache:
        return DatasetCache(seed=seed)

    def _submit(self, function: Callable[..., Any], args: tuple, name: str) -> Any:
        payload = task_payload(self.share, function, args)
        return watch(self.client.submit(run_task, payload, self.threads, pure=False), name, self)

    def submit_fit(self, fit: Fit, cache: DatasetCache) -> Mapped:
        rows = Rows.of(fit.pipeline, fit.parts, fit.era_stride, fit.feature_names, cache.seed)
        args = (fit, rows, rows.labels(fit.target), rows.weights(fit.era_weights()), None, self.threads)
        future = self._submit(remote_fit, args, fit.name)
        return Mapped(future, fitted_from, cache)

    def submit(self, function: Callable[..., Any], *args: Any) -> Mapped:
        return Mapped(self._submit(function, args, task_name(function, args)), task_value)

    def ships(self, obj: object) -> bool:
        """Members of this package, but not one that reads the benchmark models (the workers read
        the data's parquet files only)."""
        return type(obj).__module__.split(".")[0] == "pipeline" and not getattr(obj, "reads_benchmark", False)

    def record(self, peak_mb: float) -> None:
        self.peak_mb = max(self.peak_mb, peak_mb)

    def take_peak_mb(self) -> float:
        peak, self.peak_mb = self.peak_mb, 0.0
        return peak

    def occupy(self) -> contextlib.AbstractContextManager:
        """Nothing to hold: a Dask worker's threads are its own."""
        return contextlib.nullcontext()


@contextlib.contextmanager
def dask_runner(
    scheduler: str | None = None, local_workers: int | None = None, timeout: float = CONNECT_TIMEOUT
) -> Iterator[DaskRunner]:
    """The build's runner on the cluster the options name (--dask-scheduler, --dask-local)."""
    with dask_client(scheduler, local_workers, timeout) as client:
        runner = DaskRunner(client)
        logger.info("fits run on %d Dask workers of %d threads each", runner.jobs, runner.threads)
        yield runner


def free_port() -> int:
    """A TCP port on localhost that nothing listens on now, for the process group's rendezvous."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _train_rank(
    rank: int,
    world: int,
    port: int,
    network: nn.Module,
    settings: TrainSettings,
    threads: int,
    train_data: EraBatches,
    valid_data: EraBatches,
    result: Path,
) -> None:
    """One process of data-parallel training; rank 0 writes the fitted weights and the run's
    `TrainResult` to `result`."""
    # torch.multiprocessing hands the parent's tensors over in shared memory: each rank trains its own
    # copy (the same starting weights everywhere), or the ranks would step on each other's weights.
    network = copy.deepcopy(network)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        with torch_settings(threads, True, "cpu"):
            torch.manual_seed(settings.seed + rank)  # dropout draws differ by rank
            fitted = train(network, settings, train_data, valid_data, torch.device("cpu"), GlooReplicas(rank, world))
        if rank == 0:
            result.write_bytes(pickle.dumps({"state": network.state_dict(), "result": fitted}))
    finally:
        dist.destroy_process_group()


def train_data_parallel(
    network: nn.Module,
    settings: TrainSettings,
    threads: int,
    train_data: EraBatches,
    valid_data: EraBatches,
    processes: int,
) -> TrainResult:
    """Train `network` over `processes` CPU processes (torch.distributed, gloo, `threads` threads
    each) and load the fitted weights back into it; called by `EraNetEstimator.fit(processes=N)`.

    Each step's eras are the ones a single process would take; each rank computes the gradient of
    its share and the ranks average them, so the N processes walk the same schedule as one process,
    with a deterministic result for a seed and N. The history's train loss is rank 0's share.
    """
    with tempfile.TemporaryDirectory() as scratch:
        result = Path(scratch) / "rank0.pkl"
        mp.spawn(
            _train_rank,
            args=(processes, free_port(), network, settings, threads, train_data, valid_data, result),
            nprocs=processes,
            join=True,
        )
        fitted = pickle.loads(result.read_bytes())
    network.load_state_dict(fitted["state"])
    network.eval()
    return fitted["result"]
