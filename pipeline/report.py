"""The build report: report.json, its plots and report.html, and the table printed after a build."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from pipeline.html_report import COMPARED, write_html
from pipeline.plots import write_plots

logger = logging.getLogger(__name__)


def _plain(value: Any) -> Any:
    """JSON-safe copy: numpy scalars to Python, NaN to null, series to {era: value}."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, pd.Series):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return None if not math.isfinite(value) else float(value)
    return value


def write_report(report_dir: str | Path, report: dict[str, Any]) -> Path:
    """Write report.json, then the plots and report.html from what the JSON holds.

    `report["models"]` maps each model's name to its figures. A plot that fails is logged, not
    raised: the verified pickle is already written and is worth more than a figure.
    """
    report_dir = Path(report_dir)
    report_dir.mkdir(parents=True, exist_ok=True)
    path = report_dir / "report.json"
    path.write_text(json.dumps(_plain(report), indent=2, allow_nan=False))
    stored = json.loads(path.read_text())
    try:
        plots = write_plots(stored, report_dir)
    except Exception:
        logger.exception("plotting the report failed; report.html is written without plots")
        plots = {}
    write_html(stored, report_dir, plots)
    return path


def figure_cells(figures: dict[str, Any]) -> str:
    """Per-era CORR summary figures (mean, std, Sharpe, max drawdown, eras) as aligned text cells."""
    return (
        f"{figures['mean']:>8.4f} {figures['std']:>7.4f} {figures['sharpe']:>7.2f} "
        f"{figures['max_drawdown']:>7.4f} {figures['eras']:>5d}"
    )


def summary_table(models: dict[str, dict[str, Any]]) -> str:
    """One line per model: out-of-fold CV and held-out validation per-era CORR figures."""
    header = (
        f"{'model':<24} {'CV mean':>8} {'CV Shrp':>8} | "
        f"{'val mean':>8} {'std':>7} {'Sharpe':>7} {'max DD':>7} {'eras':>5}"
    )
    lines = [
        "per-era numerai_corr: CV = out-of-fold forward-chained; val = held-out eras after the embargo",
        header,
        "-" * len(header),
    ]
    for name, figures in models.items():
        cv = figures.get("cv", {})
        val = figures["validation"]
        lines.append(
            f"{name:<24} {cv.get('mean', float('nan')):>8.4f} {cv.get('sharpe', float('nan')):>8.2f} | "
            f"{figure_cells(val)}"
        )
    paid = paid_table(models)
    return "\n".join(lines + (["", paid] if paid else []))


def paid_table(models: dict[str, dict[str, Any]]) -> str:
    """One line per model: mean CORR, BMC and payout mix on the CV and the validation eras (MMC too
    where the meta model covers rows); empty when no model has them."""
    scored = {name: figures["numerai"] for name, figures in models.items() if "numerai" in figures}
    if not scored:
        return ""
    scores = ["corr", "bmc", "payout"] + (["mmc"] if any("mmc" in p["validation"] for p in scored.values()) else [])

    def cells(figures: dict[str, Any]) -> str:
        return " ".join(f"{figures.get(score, {}).get('mean', float('nan')):>8.4f}" for score in scores)

    labels = " ".join(f"{score.upper() if score != 'payout' else 'payout':>8}" for score in scores)
    header = f"{'model':<24} {labels} | {labels}"
    first = next(iter(scored.values()))["cv"]
    return "\n".join(
        [
            f"what Numerai pays, mean per era: CV | validation; payout = {first['payout_mix']}; "
            f"the blend was chosen on {first['objective']}",
            header,
            "-" * len(header),
            *(f"{name:<24} {cells(p['cv'])} | {cells(p['validation'])}" for name, p in scored.items()),
        ]
    )


def search_table(search: dict[str, Any]) -> str:
    """The TSMixer-Ext search (`pipeline.build.tsmixer_search`): one line per trial, best first and marked."""
    first, last, count = search["eras"]
    names = list(search["space"])
    header = " ".join(f"{name:>11}" for name in ["trial", *names, "CV mean", "CV Shrp", "seconds"])
    lines = [
        f"{search['member']} search: {len(search['trials'])} of {search['trials_asked']} trials within "
        f"{search['budget_s']:.0f} s, "
        f"CV on training eras {first}..{last} ({count}); * = chosen",
        header,
        "-" * len(header),
    ]
    for row in search["trials"]:
        cells = [f"{row['trial']:>10}" + ("*" if row["best"] else " "), *(f"{row[n]!s:>11}" for n in names)]
        lines.append(
            " ".join(
                [*cells, f"{row['cv_corr_mean']:>11.4f}", f"{row['cv_sharpe']:>11.2f}", f"{row['seconds']:>11.1f}"]
            )
        )
    return "\n".join(lines)


def refresh_table(refresh: dict[str, Any], models: dict[str, dict[str, Any]]) -> str:
    """What a refresh did to each member, then the previous, refreshed and fully retrained models'
    per-era CORR on the held-out eras (or why that comparison was skipped)."""
    first, last, count = refresh["new_eras"]
    lines = [
        f"refresh of {refresh['init_model']} (trained through era {refresh['previous_trained_through']}) on {count} "
        f"new eras {first}..{last}"
    ]
    for name, step in refresh["members"].items():
        done = step.get("skipped") or step.get("done") or ", ".join(f"{k} {v}" for k, v in step.items() if k != "eras")
        lines.append(f"  {name:<22} {done}")
    comparison = refresh["comparison"]
    if "skipped" in comparison:
        return "\n".join(lines + [f"comparison skipped: {comparison['skipped']}"])
    test_first, test_last, n_test = comparison["test_eras"]
    header = f"{'model':<22} {'mean':>8} {'std':>7} {'Sharpe':>7} {'max DD':>7} {'eras':>5}"
    lines += [
        "",
        f"per-era numerai_corr on held-out eras {test_first}..{test_last} ({n_test}); embargo {comparison['embargo']} "
        "eras; "
        f"refreshed and retrained through {comparison['trained_through']}, previous through "
        f"{comparison['previous_trained_through']}",
        header,
        "-" * len(header),
    ]
    for key, label in COMPARED.items():
        lines.append(f"{label:<22} {figure_cells(models[key]['validation'])}")
    lines.append(
        "members (mean CORR): "
        + "; ".join(
            f"{name} " + " / ".join(f"{figures[key]['mean']:.4f}" for key in COMPARED)
            for name, figures in comparison["members"].items()
        )
        + " (previous / refreshed / full retrain)"
    )
    return "\n".join(lines)


def add_timings(report_json: Path, timings: dict[str, Any]) -> None:
    """The stages' timings into the staged report.json (the report's own stage included)."""
    report = json.loads(report_json.read_text())
    report_json.write_text(json.dumps(report | {"timings": timings}, indent=2))
