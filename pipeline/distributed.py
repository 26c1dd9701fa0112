"""Training on a cluster: LightGBM members on Dask (`lightgbm.dask`), neural members data-parallel
over CPU processes (`torch.distributed`, gloo).

Both give back what the single-machine path gives (a `lgb.Booster`; a trained network and its
`TrainResult`, as `pipeline.models.training.train` does), so export, the pickle and prediction never
depend on where a model was trained. Dask is an optional extra (`pip install .[dask]`), imported
only when a cluster is asked for; the pickle never needs it.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import pickle
import socket
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lightgbm as lgb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from pipeline.data import DATA_TYPE_COL, ERA_COL, DataError, EraFrame, parquet_columns
from pipeline.models.lgbm import BIN_SAMPLE_ROWS, LGBMModel
from pipeline.models.training import EraBatches, GlooReplicas, TrainResult, TrainSettings, torch_settings, train

if TYPE_CHECKING:
    import dask.dataframe as dd
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


@contextlib.contextmanager
def dask_trainer(
    scheduler: str | None = None, local_workers: int | None = None, timeout: float = CONNECT_TIMEOUT
) -> Iterator[DaskLGBMTrainer | None]:
    """The build's LightGBM trainer on the cluster the options name, or None (train in this
    process, dask never imported) when they name none."""
    if scheduler is None and local_workers is None:
        yield None
        return
    with dask_client(scheduler, local_workers, timeout) as client:
        yield DaskLGBMTrainer(client)


@dataclass(frozen=True)
class ParquetPart:
    """Rows of one parquet split to train on: those of `eras` (and of `data_type`, when the file
    has that column) where every `labelled` column is known."""

    path: Path
    eras: tuple[str, ...]
    data_type: str | None = None
    labelled: tuple[str, ...] = ()

    @classmethod
    def of(cls, frame: EraFrame, era_stride: int) -> "ParquetPart":
        """The rows a member trains on in `frame` (every `era_stride`-th era), read from its file.
        `load_split` puts the target it required first, so that one must be known here too."""
        if era_stride < 1:
            raise ValueError(f"era stride must be at least 1, got {era_stride}")
        return cls(frame.path, tuple(frame.era_order[::era_stride]), frame.data_type, (str(frame.targets.columns[0]),))


class DaskLGBMTrainer:
    """LightGBM members trained by `lightgbm.dask` on a Dask cluster.

    The workers read the parquet files themselves (a share of the partitions each), so the data
    directory must be at the same path on every worker. Features stay int8 until each worker
    builds its LightGBM Dataset from its own rows.
    """

    def __init__(self, client: Client):
        self.client = client

    def workers(self) -> list[str]:
        return sorted(self.client.scheduler_info(n_workers=-1)["workers"])

    def fit_member(
        self, member: LGBMModel, splits: Sequence[EraFrame], era_stride: int, feature_names: list[str], target: str
    ) -> lgb.Booster:
        """Train `member`'s parameters and tree count on the same rows `LightGBMMember.fit` would use."""
        parts = [ParquetPart.of(split, era_stride) for split in splits]
        return self.train(parts, feature_names, target, member.lgb_params(), member.num_boost_round)

    def train(
        self,
        parts: Sequence[ParquetPart],
        feature_names: list[str],
        target: str,
        params: dict[str, Any],
        num_boost_round: int,
    ) -> lgb.Booster:
        """A plain Booster trained on the cluster with native LightGBM `params` (seed, deterministic, ...).

        `num_threads` is left to lightgbm.dask, which gives each worker its own thread count.
        """
        from lightgbm.dask import DaskLGBMRegressor

        data = self.load(parts, feature_names, target)
        params = {"bin_construct_sample_cnt": BIN_SAMPLE_ROWS} | {k: v for k, v in params.items() if k != "num_threads"}
        model = DaskLGBMRegressor(client=self.client, n_estimators=num_boost_round, **params)
        with warnings.catch_warnings():
            # lightgbm.dask warns about the n_jobs=None its own estimator passes along.
            warnings.filterwarnings("ignore", message="Parameter n_jobs will be ignored")
            model.fit(data[feature_names], data[target])
        return model.booster_

    def load(self, parts: Sequence[ParquetPart], feature_names: list[str], target: str) -> dd.DataFrame:
        """The rows of `parts` (features int8, target float32), held by the workers round-robin."""
        import dask.dataframe as dd

        frames = [self._read(part, feature_names, target) for part in parts]
        data = frames[0] if len(frames) == 1 else dd.concat(frames)
        return self._spread(data)

    def _read(self, part: ParquetPart, feature_names: list[str], target: str) -> dd.DataFrame:
        import dask.dataframe as dd

        available = parquet_columns(part.path)
        labelled = list(dict.fromkeys([*part.labelled, target]))
        missing = [c for c in [ERA_COL, *labelled, *feature_names] if c not in available]
        if missing:
            raise DataError(f"{part.path}: missing column(s) {', '.join(missing[:10])}")
        by_type = part.data_type is not None and DATA_TYPE_COL in available
        eras = list(part.eras)
        if pa.types.is_integer(pq.read_schema(part.path).field(ERA_COL).type):
            eras = [int(e) for e in eras]
        frame = dd.read_parquet(
            part.path, columns=[ERA_COL, *([DATA_TYPE_COL] if by_type else []), *labelled, *feature_names]
        )
        in_scope = frame[ERA_COL].isin(eras)
        if by_type:
            in_scope &= frame[DATA_TYPE_COL] == part.data_type
        known = frame[labelled].notnull().all(axis=1)
        kept, unlabelled = self.client.gather(
            self.client.compute([(in_scope & known).sum(), (in_scope & ~known).sum()])
        )
        if kept == 0:
            raise DataError(f"{part.path}: no rows with {labelled} known in the {len(eras)} eras to train on")
        logger.info(
            "%s: %d rows of %d eras to train on with Dask (%d rows without %s left out)",
            part.path.name,
            kept,
            len(eras),
            unlabelled,
            " or ".join(map(repr, labelled)),
        )
        selected = frame[in_scope & known]
        return selected[feature_names].astype(np.int8).assign(**{target: selected[target].astype(np.float32)})

    def _spread(self, data: dd.DataFrame) -> dd.DataFrame:
        """Compute the partitions on the workers in turn (at least one partition each), so that
        every worker trains on a share of the rows and the same data always lands the same way."""
        import dask.dataframe as dd
        from distributed import wait

        workers = self.workers()
        if data.npartitions < len(workers):
            data = data.repartition(npartitions=len(workers))
        futures = [
            self.client.compute(piece, workers=[workers[i % len(workers)]], allow_other_workers=False)
            for i, piece in enumerate(data.to_delayed())
        ]
        wait(futures)
        return dd.from_delayed(futures, meta=data._meta, verify_meta=False)


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
