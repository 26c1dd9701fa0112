"""Training on a cluster: the CV on a local Dask cluster of 2 workers, the neural members over 2
torch.distributed processes, and a whole build through --dask-local, each against one machine."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pipeline import data as nd
from pipeline.build import BuildConfig, FeatureChoice, Prepared, build, cross_validate, prepare
from pipeline.cli import main
from pipeline.distributed import ClusterError, DaskRunner, ParquetFrame, dask_client, free_port
from pipeline.feature_choice import fold_pipelines
from pipeline.metrics import paired_difference, per_era_corr
from pipeline.models.tsmixer import TSMixerExt
from pipeline.parallel import active
from pipeline.weighting import EraWeighting

TSMIXER_SMALL = {
    "d": 8,
    "ff": 16,
    "context_dim": 4,
    "token_size": 6,
    "max_epochs": 4,
    "patience": 2,
    "eras_per_batch": 2,
    "progress": False,
}


@pytest.fixture(scope="module")
def splits(tiny_world: Path) -> dict:
    features = nd.resolve_features(tiny_world, "all")
    targets = nd.target_names(tiny_world)
    return {
        "features": features,
        "aux": [t for t in targets if t != nd.MAIN_TARGET and t.endswith("_20")],
        "sets": nd.read_features_json(tiny_world)["feature_sets"],
        "train": nd.load_split(tiny_world / "train.parquet", features, targets, data_type="train"),
        "validation": nd.load_split(tiny_world / "validation.parquet", features, targets, data_type="validation"),
    }


@pytest.fixture(scope="module")
def cluster():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=":0") as local:
        yield local


def within_noise(a: np.ndarray, b: np.ndarray, validation: nd.EraFrame) -> tuple[float, float]:
    """(mean difference, standard error) of the per-era validation CORR of two predictions."""
    y = validation.targets[nd.MAIN_TARGET].to_numpy()
    return paired_difference(per_era_corr(a, y, validation.eras), per_era_corr(b, y, validation.eras))


def cheap_choice(train: nd.EraFrame, folds: list, groups: dict[str, str]) -> FeatureChoice:
    """Fold pipelines with cluster means only: the members' CV without the probes' ablation."""
    settings = {"missing": "nan", "clusters": True, "group_stats": True, "mixing": False}
    return FeatureChoice(fold_pipelines(train, folds, groups, settings), settings, {})


def boost_aux(prep: Prepared) -> None:
    """Era boosting on the auxiliary member: its objective needs each row's era, in a worker too."""
    next(member for member in prep.members if member.name == "lgbm_aux20").weighting = EraWeighting(boost=2.0)


def test_cv_on_a_two_worker_dask_cluster_gives_the_same_per_era_corr(tiny_world: Path, cluster) -> None:
    config = BuildConfig(data_dir=tiny_world, num_boost_round=30, threads=1, cv_folds=2)
    here = prepare(config)
    boost_aux(here)
    choice = cheap_choice(here.train, here.folds, here.groups)
    on_one_machine = cross_validate(here, choice, {}, [])
    with dask_client(scheduler=cluster.scheduler_address) as client, active(DaskRunner(client)) as runner:
        there = prepare(config, runner)
        boost_aux(there)
        on_the_cluster = cross_validate(there, cheap_choice(there.train, there.folds, there.groups), {}, [])
        assert runner.take_peak_mb() > 0, "the fits ran on the workers"
    assert {"lgbm_example", "lgbm_gbdt", "lgbm_aux20", "mlp", "tsmixer_ext"} <= set(on_one_machine.results)
    for name, result in on_one_machine.results.items():
        remote = on_the_cluster.results[name]
        pd.testing.assert_series_equal(remote.per_era, result.per_era, check_exact=True, obj=name)
        assert np.array_equal(remote.oof, result.oof, equal_nan=True), name
        assert remote.chosen == result.chosen, name
    assert np.array_equal(on_the_cluster.weights, on_one_machine.weights)


def test_a_worker_reading_other_rows_is_an_error_naming_the_file(splits: dict, tmp_path: Path) -> None:
    train = splits["train"]
    ref = ParquetFrame.of(train)
    assert ref.open().ids.tolist() == train.ids.tolist()
    other = tmp_path / "train.parquet"
    pd.read_parquet(train.path).iloc[:-10].to_parquet(other)
    with pytest.raises(nd.DataError, match="same data directory at the same path on every worker"):
        replace(ref, path=str(other)).open()


def test_torch_distributed_two_processes_score_like_one(splits: dict) -> None:
    train, validation = splits["train"], splits["validation"]

    def fitted(processes: int) -> TSMixerExt:
        model = TSMixerExt(**TSMIXER_SMALL, feature_sets=splits["sets"], seed=5)
        return model.fit(train, aux_targets=splits["aux"], processes=processes)

    one, two, again = fitted(1), fitted(2), fitted(2)
    predictions = {
        name: m.predict(validation.features, validation.eras)
        for name, m in (("one", one), ("two", two), ("again", again))
    }
    assert np.array_equal(predictions["two"], predictions["again"]), "deterministic for a seed and a process count"
    assert len(two.history_) >= 1 and 1 <= two.best_epoch_ <= TSMIXER_SMALL["max_epochs"]
    assert two.export("tsmixer_ext")["arrays"], "the same estimator, exported as usual"
    mean_diff, stderr = within_noise(predictions["two"], predictions["one"], validation)
    assert abs(mean_diff) <= max(2 * stderr, 1e-3), (mean_diff, stderr)


BLOCKED_RUN = r"""
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pipeline", "torch", "dask", "distributed"):
            raise ModuleNotFoundError(name)
sys.meta_path.insert(0, Block())
import pandas as pd
out = pd.read_pickle(sys.argv[1])(pd.read_parquet(sys.argv[2]))
print(len(out), sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed")))
"""


def test_build_on_a_local_dask_cluster_writes_a_verified_pickle(tiny_world: Path, tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    out = tmp_path / "model.pkl"
    result = build(
        BuildConfig(
            data_dir=tiny_world, out=out, preset="example", num_boost_round=40, threads=1, cv_folds=2, dask_local=2
        )
    )
    assert result.verification.ok and out.is_file()
    report = json.loads(result.report_path.read_text())
    assert report["settings"]["dask_local"] == 2
    assert report["models"]["lgbm_example"]["validation"]["eras"] > 0
    live = tiny_world / "live.parquet"
    proc = subprocess.run(
        [sys.executable, "-I", "-c", BLOCKED_RUN, str(out), str(live)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert proc.stdout.split() == [str(len(pd.read_parquet(live))), "[]"], "the pickle needs no dask"


def test_cluster_options_that_cannot_work_are_named(
    tiny_world: Path, monkeypatch: pytest.MonkeyPatch, caplog, capsys
) -> None:
    with pytest.raises(ClusterError, match="--dask-scheduler and --dask-local exclude each other"):
        with dask_client("tcp://127.0.0.1:8786", 2):
            pass
    with pytest.raises(SystemExit):
        main(["--dask-scheduler", "tcp://127.0.0.1:8786", "--dask-local", "2"])
    assert "not allowed with argument" in capsys.readouterr().err
    assert main(["--data-dir", str(tiny_world), "--torch-processes", "0"]) == 1
    assert "--torch-processes must be at least 1" in caplog.text

    with monkeypatch.context() as patched:
        patched.setitem(sys.modules, "distributed", None)
        with pytest.raises(ClusterError, match=r"pip install \.\[dask\]"):
            with dask_client(local_workers=2):
                pass

    pytest.importorskip("distributed")
    with pytest.raises(ClusterError, match="--dask-local must be at least 1"):
        with dask_client(local_workers=0):
            pass
    address = f"tcp://127.0.0.1:{free_port()}"
    with pytest.raises(ClusterError, match=f"--dask-scheduler {address}: cannot reach"):
        with dask_client(address, timeout=2):
            pass


def test_help_explains_the_cluster_options() -> None:
    repo = Path(__file__).resolve().parents[1]
    proc = subprocess.run(
        [sys.executable, "build_model.py", "--help"], cwd=repo, capture_output=True, text=True, check=True
    )
    for option in ("--dask-scheduler", "--dask-local", "--torch-processes", "pip install .[dask]"):
        assert option in " ".join(proc.stdout.split())
