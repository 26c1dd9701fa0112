"""The report's figures and page: every plot is a real PNG, the page embeds them and shows the numbers,
and a sparse report (fewer things trained) still renders."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from pipeline.html_report import write_html
from pipeline.plots import PLOTTERS, write_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
MODELS = ("lgbm_target", "lgbm_agnes", "ensemble")


def _summary(values: np.ndarray) -> dict[str, float | int]:
    """The summary report.py stores for a per-era CORR series."""
    cumulative = np.cumsum(values)
    return {
        "mean": float(values.mean()),
        "std": float(values.std(ddof=1)),
        "sharpe": float(values.mean() / values.std(ddof=1)),
        "max_drawdown": float((np.maximum.accumulate(cumulative) - cumulative).max()),
        "eras": int(values.size),
    }


def fake_report(n_eras: int = 40, seed: int = 0) -> dict[str, Any]:
    """A full report as report.json would hold it: 3 models, `n_eras` eras split into CV, a 4-era embargo
    and validation."""
    rng = np.random.default_rng(seed)
    eras = [f"{e:04d}" for e in range(1, n_eras + 1)]
    n_cv = n_eras * 3 // 5
    cv_eras, val_eras = eras[:n_cv], eras[n_cv + 4 :]  # 4-era embargo
    models: dict[str, Any] = {}
    per_era: dict[str, np.ndarray] = {}
    for i, name in enumerate(MODELS):
        corr = rng.normal(0.012 + 0.004 * i, 0.025, n_eras)
        per_era[name] = corr
        cv, val = corr[:n_cv], corr[n_cv + 4 :]
        models[name] = {
            "cv": _summary(cv),
            "validation": _summary(val),
            "cv_per_era": dict(zip(cv_eras, cv.tolist(), strict=False)),
            "validation_per_era": dict(zip(val_eras, val.tolist(), strict=False)),
            "aux": {t: _summary(val + rng.normal(0, 0.01, val.size)) for t in ("target_agnes_20", "target_cyrus_20")},
            "fnc": _summary(val * 0.6),
            "feature_exposure": {
                "mean": 0.08 + 0.02 * i,
                "std": 0.02,
                "sharpe": None,
                "max_drawdown": None,
                "eras": val.size,
            },
            "bmc": _summary(val * 0.3),
            "benchmark_corr": _summary(np.abs(val) * 10),
            "calibration": {str(q): 0.5 + 0.01 * (q - 3) * (1 + i / 2) for q in range(1, 6)},
            "chosen": {"num_boost_round": 800 + 200 * i, "learning_rate": 0.01}
            if name != "ensemble"
            else {"weights": [0.4, 0.6], "neutralization": 0.5},
        }
    models["lgbm_agnes"]["validation"]["sharpe"] = None  # a NaN that went through JSON
    features = [f"feature_{g}_{k}" for g in ("constitution", "charisma", "wisdom") for k in range(15)]
    temporal = [
        {
            "feature": f,
            "mean": float(m),
            "std": 0.02,
            "sharpe": float(m / 0.02),
            "sign_flips": float(s),
            "flagged": bool(s > 0.45),
        }
        for f, m, s in zip(
            features, rng.normal(0, 0.004, len(features)), rng.uniform(0.2, 0.55, len(features)), strict=False
        )
    ]
    window = 8
    rolling: dict[str, Any] = {"window": window}
    for name, corr in per_era.items():
        kept = np.concatenate([corr[:n_cv], corr[n_cv + 4 :]])
        smooth = np.convolve(kept, np.ones(window) / window, mode="valid")
        rolling[name] = dict(zip((cv_eras + val_eras)[window - 1 :], smooth.tolist(), strict=False))
    report = {
        "models": models,
        "folds": [
            {
                "train_first": "0001",
                "train_last": f"{last:04d}",
                "train_eras": last,
                "validation_first": f"{last + 5:04d}",
                "validation_last": f"{last + 10:04d}",
                "validation_eras": 6,
            }
            for last in (10, 16, 22)
        ],
        "worst_eras": {
            name: [
                {"era": e, "corr": float(c)}
                for e, c in sorted(models[name]["validation_per_era"].items(), key=lambda kv: kv[1])[:5]
            ]
            for name in MODELS
        },
        "rolling": rolling,
        "importance": {
            "gain": {
                f: float(g)
                for f, g in sorted(
                    zip(features, rng.gamma(2, 100, len(features)), strict=False), key=lambda kv: -kv[1]
                )[:30]
            },
            "gain_by_group": {"constitution": 0.45, "charisma": 0.35, "wisdom": 0.2},
            "permutation_by_group": {"constitution": 0.004, "charisma": 0.0015, "wisdom": -0.0003},
        },
        "temporal": {
            "features": temporal,
            "flagged": [r["feature"] for r in temporal if r["flagged"]],
            "ablation": {
                "with": _summary(per_era["lgbm_target"][:n_cv]),
                "without_flagged": _summary(per_era["lgbm_target"][:n_cv] + 0.001),
            },
        },
        "data": {
            "train_eras": n_cv,
            "validation_eras": len(val_eras),
            "features": len(features),
            "rows": 123456,
            "feature_set": "medium <small>",
        },
        "settings": {"seed": seed, "embargo_eras": 4, "targets": ["target", "target_agnes_20"]},
        "verification": {"size_mb": 12.3, "load_s": 0.41, "predict_s": 1.7, "peak_rss_mb": 812.0, "problems": []},
    }
    return json.loads(json.dumps(report))


def sparse_report() -> dict[str, Any]:
    """Only what a minimal build writes: models with validation figures, nothing else."""
    full = fake_report(seed=1)
    return {
        "models": {
            name: {"validation": figs["validation"]} for name, figs in full["models"].items() if name != "ensemble"
        }
    }


def _decoded_images(page: str) -> list[bytes]:
    """The bytes of every data-URI <img> in the page."""
    return [
        base64.b64decode(data) for data in re.findall(r'<img [^>]*src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    ]


@pytest.fixture(scope="module")
def full(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Path], str]:
    """The fake full report with its plots and page written once for the module's tests."""
    out = tmp_path_factory.mktemp("report")
    report = fake_report()
    plots = write_plots(report, out)
    page = write_html(report, out, plots).read_text(encoding="utf-8")
    return report, plots, page


def test_full_report_writes_every_plot_as_a_real_png(full: tuple[dict[str, Any], dict[str, Path], str]) -> None:
    _, plots, _ = full
    assert set(plots) == set(PLOTTERS)
    for name, path in plots.items():
        data = path.read_bytes()
        assert path.name == f"{name}.png"
        assert data[:8] == PNG_MAGIC, name
        assert len(data) > 10_000, (name, len(data))


def test_page_embeds_one_png_per_plot_and_links_no_files(full: tuple[dict[str, Any], dict[str, Path], str]) -> None:
    _, plots, page = full
    images = _decoded_images(page)
    assert len(images) == len(plots) == page.count("<img ")
    assert all(img[:8] == PNG_MAGIC for img in images)
    assert sorted(images) == sorted(p.read_bytes() for p in plots.values())
    assert not re.search(r'src="(?!data:)', page)


def test_page_shows_models_and_their_figures(full: tuple[dict[str, Any], dict[str, Path], str]) -> None:
    report, _, page = full
    for name, figs in report["models"].items():
        assert name in page
        for split in ("cv", "validation"):
            assert f"{figs[split]['mean']:.4f}" in page
            assert f"{figs[split]['max_drawdown']:.4f}" in page
        assert f"{figs['fnc']['mean']:.4f}" in page
        assert str(figs["chosen"].get("num_boost_round", "neutralization")) in page
    assert f"{report['models']['lgbm_target']['cv']['sharpe']:.2f}" in page
    assert "out-of-fold" in page and "held-out" in page
    assert "target_agnes_20" in page and "BMC" in page


def test_page_shows_folds_worst_eras_importance_temporal_and_verification(
    full: tuple[dict[str, Any], dict[str, Path], str],
) -> None:
    report, _, page = full
    for fold in report["folds"]:
        assert f"<td>{fold['train_eras']}</td>" in page
    worst = report["worst_eras"]["ensemble"][0]
    assert worst["era"] in page and f"{worst['corr']:.4f}" in page
    assert next(iter(report["importance"]["gain"])) in page
    assert "permutation drop" in page
    for feature in report["temporal"]["flagged"]:
        assert feature in page
    assert "flagged features dropped" in page
    assert "812" in page and "No problems found" in page


def test_page_escapes_text(full: tuple[dict[str, Any], dict[str, Path], str]) -> None:
    _, _, page = full
    assert "medium &lt;small&gt;" in page
    assert "<small>" not in page


def test_missing_values_render_as_a_dash(full: tuple[dict[str, Any], dict[str, Path], str]) -> None:
    _, _, page = full
    text = re.sub(r"base64,[A-Za-z0-9+/=]+", "", page)
    assert 'class="missing">–</td>' in text
    assert "None" not in text and not re.search(r"\bnan\b", text, re.IGNORECASE)


def test_sparse_report_renders_what_it_has(tmp_path: Path) -> None:
    report = sparse_report()
    plots = write_plots(report, tmp_path)
    assert plots == {}
    page = write_html(report, tmp_path, plots).read_text(encoding="utf-8")
    for name, figs in report["models"].items():
        assert name in page
        assert f"{figs['validation']['mean']:.4f}" in page
    assert "<img" not in page and "CV folds" not in page


def test_problems_and_partial_keys_do_not_break_the_page(tmp_path: Path) -> None:
    report = fake_report(n_eras=24, seed=2)
    del report["models"]["ensemble"]
    report["models"]["lgbm_target"].pop("calibration")
    report["models"]["lgbm_agnes"]["validation_per_era"] = {"0020": None, "0021": 0.01}
    report["importance"] = {"permutation_by_group": {"wisdom": 0.001}}
    report["temporal"] = {"flagged": ["feature_x"]}
    report["verification"] = {"problems": ["predictions are constant <bad>"]}
    plots = write_plots(report, tmp_path)
    assert {"calibration", "group_importance", "per_era_corr"} <= set(plots)
    assert "feature_importance" not in plots
    assert "temporal_stability" not in plots
    page = write_html(report, tmp_path, plots).read_text(encoding="utf-8")
    assert "predictions are constant &lt;bad&gt;" in page
    assert "feature_x" in page
    assert len(_decoded_images(page)) == len(plots)


def test_empty_report_gives_a_titled_page(tmp_path: Path) -> None:
    assert write_plots({}, tmp_path) == {}
    page = write_html({}, tmp_path, {}).read_text(encoding="utf-8")
    assert "<h1>Build report</h1>" in page and "<table>" not in page
