"""Shared fixtures: small worlds written by the package's own generator, and a foreign layout."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from requests.adapters import HTTPAdapter

from pipeline.synthetic import WorldSpec, write_world
from tests.fake_numerai import FakeNumerai

TINY_WORLD = WorldSpec(
    n_eras=48, n_validation_eras=16, rows_per_era=250, live_rows=300, n_features=40, n_target_names=3, seed=7
)


@pytest.fixture(scope="session")
def tiny_world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic Numerai world (read-only: copy it before changing files)."""
    return write_world(tmp_path_factory.mktemp("tiny_world"), TINY_WORLD, progress=False)


def write_foreign_layout(
    directory: Path, n_features: int = 60, n_eras: int = 30, rows: int = 120, seed: int = 3
) -> Path:
    """A Numerai-layout directory this project's generator did not write: other feature names,
    binary 0/1 targets, integer (not zero-padded-string) eras, int64 features, no live file,
    no small/medium sets and a features.json without 'targets'."""
    rng = np.random.default_rng(seed)
    names = [
        f"feature_{word}_{i}"
        for i, word in zip(range(n_features), rng.choice(["sun", "moon", "rain"], n_features), strict=False)
    ]
    frames = []
    for era in range(1, n_eras + 1):
        x = rng.integers(0, 5, size=(rows, n_features))
        signal = (x[:, 0] - 2) + 0.5 * (x[:, 1] - 2) * (x[:, 2] - 2) + rng.normal(0, 4, rows)
        frame = pd.DataFrame(x, columns=names)
        frame.insert(0, "era", era)
        frame["target"] = (signal > np.median(signal)).astype(np.float64)
        frame.index = pd.Index([f"row{era:03d}x{i:04d}" for i in range(rows)], name="id")
        frames.append(frame)
    data = pd.concat(frames)
    cut = int(n_eras * 0.7)
    directory.mkdir(parents=True, exist_ok=True)
    data[data["era"] <= cut].assign(data_type="train").to_parquet(directory / "train.parquet")
    data[data["era"] > cut].assign(data_type="validation").to_parquet(directory / "validation.parquet")
    (directory / "features.json").write_text(json.dumps({"feature_sets": {"everything": names}}))
    return directory


@pytest.fixture
def fake_numerai(monkeypatch: pytest.MonkeyPatch) -> FakeNumerai:
    """Numerai's servers faked at the HTTP transport; numerapi and requests run for real."""
    server = FakeNumerai()
    monkeypatch.setattr(HTTPAdapter, "send", lambda adapter, request, **kw: server.send(adapter, request, **kw))
    return server
