"""bench.quality --family on two shrunk worlds: the build, the independent scores and the verdicts."""

from __future__ import annotations

import json
from pathlib import Path

import cloudpickle
import numpy as np
import pandas as pd
import pytest

from bench import quality
from pipeline import data as nd

MODELS = ["published example", "ensemble", "learnable ceiling", "oracle", "build example", "best member"]


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, Path]:
    """The family bench on the shrunk default and regimes worlds, example preset (one member)."""
    root = tmp_path_factory.mktemp("quality")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NUMERAI_PIPELINE_CACHE", str(root / "cache"))
        argv = ["--family", "--tiny", "--worlds", "default", "regimes", "--preset", "example", "--trees", "40"]
        result = quality.run_family(quality.parse_args([*argv, "--threads", "1", "--json", str(root / "family.json")]))
    return result, root


def test_every_world_is_scored_on_the_same_eras(report: tuple[dict, Path]) -> None:
    result, root = report
    assert json.loads((root / "family.json").read_text())["summary"] == json.loads(json.dumps(result["summary"]))
    assert set(result["worlds"]) == {"default", "regimes"}
    for name, world in result["worlds"].items():
        assert list(world["models"]) == MODELS, name
        eras = world["eras"][2]
        assert all(m["eras"] == eras for m in world["models"].values()) and eras == 24 - 2 - 8
        assert world["spec"]["n_features"] == 48 and world["build_s"] > 0
        assert world["models"]["oracle"]["mean"] > world["models"]["published example"]["mean"]


def test_the_pickle_scores_what_the_build_scored(report: tuple[dict, Path]) -> None:
    for world in report[0]["worlds"].values():
        # refit=False: the pickle is the build's holdout ensemble, scored on the same eras.
        assert world["models"]["ensemble"]["mean"] == pytest.approx(world["build_ensemble_validation"]["mean"])
        # preset example: the ensemble is its one member (neutralized as the CV chose), the best member that member.
        assert (
            world["best_member"] == "lgbm_example"
            and world["paired"]["best member"] == world["paired"]["build example"]
        )
        models = world["models"]
        difference = models["ensemble"]["mean"] - models["build example"]["mean"]
        assert world["paired"]["build example"]["mean"] == pytest.approx(difference)


def test_ratios_and_verdicts(report: tuple[dict, Path]) -> None:
    result = report[0]
    for world in result["worlds"].values():
        models = world["models"]
        ensemble, published = models["ensemble"]["mean"], models["published example"]["mean"]
        if published > 0:
            assert world["ratio_to_published"] == pytest.approx(ensemble / published)
        assert world["share_of_ceiling"] == pytest.approx(ensemble / models["learnable ceiling"]["mean"])
        assert world["meets_every"] == (ensemble >= world["bar_every"])
        best = world["paired"]["best member"]
        assert world["within_se_of_best"] == (best["mean"] >= -best["se"])
    verdicts = result["summary"]["verdicts"]
    assert len(verdicts) == 4 and all(isinstance(v, bool) for v in verdicts.values())
    ahead = [w["paired"]["build example"]["mean"] > 0 for w in result["worlds"].values()]
    assert verdicts["ahead of the build's own example member on every world"] == all(ahead)
    ratios = [w["ratio_to_published"] for w in result["worlds"].values()]
    assert result["summary"]["average_ratio_to_published"] == pytest.approx(sum(ratios) / 2, nan_ok=True)


def test_unknown_world_is_refused() -> None:
    with pytest.raises(SystemExit, match="--worlds"):
        quality.run_family(quality.parse_args(["--family", "--worlds", "nope"]))


def predict_the_benchmark(live_features: pd.DataFrame, live_benchmark_models: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({"prediction": live_benchmark_models["v53_lgbm_ender20"]}, index=live_features.index)


def test_a_pickle_that_takes_the_benchmarks_is_given_them(tiny_world: Path, tmp_path: Path) -> None:
    validation = nd.load_split(tiny_world / "validation.parquet", nd.resolve_features(tiny_world, "all"))
    rows = validation.select_eras(validation.era_order[-3:])[::2]
    model = tmp_path / "model.pkl"
    model.write_bytes(cloudpickle.dumps(predict_the_benchmark))
    scores = quality.pickle_scores(model, validation, rows, tiny_world)
    benchmarks = pd.read_parquet(tiny_world / "validation_benchmark_models.parquet")
    np.testing.assert_array_equal(scores, benchmarks.loc[validation.ids[rows], "v53_lgbm_ender20"].to_numpy())
