"""The build report's figures: PNGs drawn from the report dict (as read back from report.json).

Every key of the report may be missing (a build that trained fewer things), so each figure is
drawn only from what is there, and a figure with nothing to show is not written. Figures are
built on `matplotlib.figure.Figure` directly: no pyplot state, no backend switch at import.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

DPI = 110
ENSEMBLE = "ensemble"
PANEL_WIDTH = 6.4
PANEL_HEIGHT = 4.2
MAX_PER_ERA_PANELS = 4
MAX_WORST_ERA_PANELS = 4
TOP_GAIN_FEATURES = 20
MAX_FLAGGED_LABELS = 6
POSITIVE, NEGATIVE = "#2f7d4f", "#c0392b"


def _number(value: Any) -> float:
    """A float for plotting: None, NaN and anything non-numeric become NaN."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return math.nan
    return float(value)


def as_dict(value: Any) -> dict[str, Any]:
    """`value` when it is a dict, else an empty one: absent or malformed keys show nothing."""
    return value if isinstance(value, dict) else {}


def as_list(value: Any) -> list[Any]:
    """`value` when it is a list, else an empty one: absent or malformed keys show nothing."""
    return value if isinstance(value, list) else []


def _series(per_era: Any) -> tuple[list[str], np.ndarray]:
    """Eras (sorted) and their values from an {era: value} dict; NaN where a value is missing."""
    per_era = as_dict(per_era)
    eras = sorted(per_era, key=_era_key)
    return eras, np.array([_number(per_era[e]) for e in eras], dtype=float)


def _era_key(era: str) -> tuple[int, float, str]:
    """Sort numeric eras ("0012", "120") numerically, anything else after them by name."""
    try:
        return (0, float(era), "")
    except ValueError:
        return (1, 0.0, era)


def _era_positions(eras: list[str]) -> np.ndarray:
    """x positions for eras: their numbers when all are numeric (gaps stay visible), else 0..n-1."""
    try:
        return np.array([float(e) for e in eras])
    except ValueError:
        return np.arange(len(eras), dtype=float)


def _with_gaps(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Insert a NaN where consecutive eras are further apart than usual (the embargo between CV and
    validation), so lines break there instead of drawing a straight bridge over eras with no data."""
    if x.size < 3:
        return x, y
    steps = np.diff(x)
    breaks = np.flatnonzero(steps > 1.5 * np.median(steps)) + 1
    return np.insert(x, breaks, np.nan), np.insert(y, breaks, np.nan)


def _model_colors(names: Iterable[str]) -> dict[str, str]:
    """One color per model, the same in every figure; the ensemble is black."""
    palette = [f"C{i}" for i in range(10)]
    members = [n for n in dict.fromkeys(names) if n != ENSEMBLE]
    colors = {name: palette[i % len(palette)] for i, name in enumerate(members)}
    colors[ENSEMBLE] = "black"
    return colors


def _line_style(name: str) -> dict[str, Any]:
    """The ensemble drawn thicker so the final blend stands out from its members."""
    return {"linewidth": 2.4, "zorder": 3} if name == ENSEMBLE else {"linewidth": 1.3, "alpha": 0.85}


def _panels(
    n: int, title: str, ncols: int = 1, height: float = PANEL_HEIGHT, width: float = PANEL_WIDTH
) -> tuple[Figure, list[Axes]]:
    """A titled figure with `n` panels of `width` x `height` inches laid out in rows of `ncols`."""
    ncols = max(1, min(ncols, n))
    nrows = math.ceil(n / ncols)
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel().tolist()
    for extra in axes[n:]:
        extra.set_visible(False)
    fig.suptitle(title, fontsize=14, fontweight="bold")
    return fig, axes[:n]


def _style(ax: Axes, title: str, xlabel: str, ylabel: str, zero_line: str | None = "y") -> None:
    """Panel title, axis labels, light grid, a zero reference line and a legend when anything is labelled."""
    ax.set_title(title, fontsize=11)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if zero_line == "y":
        ax.axhline(0.0, color="grey", linewidth=0.8)
    elif zero_line == "x":
        ax.axvline(0.0, color="grey", linewidth=0.8)
    handles, _ = ax.get_legend_handles_labels()
    if handles:
        ax.legend(fontsize=8, loc="best")


def _save(fig: Figure, out_dir: Path, name: str) -> Path:
    """Write the figure as `<name>.png` and release its memory (it is not registered with pyplot)."""
    path = out_dir / f"{name}.png"
    fig.savefig(path, dpi=DPI)
    fig.clear()
    return path


def _corr_bars(ax: Axes, x: Any, values: np.ndarray, mean: float, color: str, mean_label: str) -> None:
    """CORR bars, green above zero and red below, with a dashed line at `mean` for scale."""
    ax.bar(x, np.nan_to_num(values), color=[NEGATIVE if v < 0 else POSITIVE for v in values], width=0.8)
    if math.isfinite(mean):
        ax.axhline(mean, color=color, linestyle="--", linewidth=1.4, label=f"{mean_label} {mean:+.4f}")


def report_models(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The report's models, skipping any entry that is not a dict of figures."""
    return {name: figs for name, figs in as_dict(report.get("models")).items() if isinstance(figs, dict)}


def _validation_mean(figures: dict[str, Any]) -> float:
    """A model's validation CORR mean, -inf when absent (so it never ranks as best)."""
    mean = _number(as_dict(figures.get("validation")).get("mean"))
    return -math.inf if math.isnan(mean) else mean


def plot_cumulative_corr(report: dict[str, Any], colors: dict[str, str]) -> Figure | None:
    """Cumulative per-era CORR per model: validation, then CV. Steady slopes beat lucky jumps."""
    models = report_models(report)
    splits = [
        (key, label)
        for key, label in (("validation_per_era", "validation (held-out eras)"), ("cv_per_era", "CV (out-of-fold)"))
        if any(as_dict(f.get(key)) for f in models.values())
    ]
    if not splits:
        return None
    fig, axes = _panels(len(splits), "Cumulative per-era CORR", ncols=2)
    for ax, (key, label) in zip(axes, splits, strict=False):
        for name, figures in models.items():
            eras, values = _series(figures.get(key))
            if eras:
                x, y = _with_gaps(_era_positions(eras), np.cumsum(np.nan_to_num(values)))
                ax.plot(x, y, label=name, color=colors[name], **_line_style(name))
        _style(ax, label, "era", "cumulative CORR")
    return fig


def plot_per_era_corr(report: dict[str, Any], colors: dict[str, str]) -> Figure | None:
    """Validation CORR of each era as bars: how often and how badly a model loses."""
    models = {n: f for n, f in report_models(report).items() if as_dict(f.get("validation_per_era"))}
    if not models:
        return None
    if ENSEMBLE in models and len(models) > 2:
        best = max((n for n in models if n != ENSEMBLE), key=lambda n: _validation_mean(models[n]))
        shown = [ENSEMBLE, best]
    else:
        shown = sorted(models, key=lambda n: _validation_mean(models[n]), reverse=True)[:MAX_PER_ERA_PANELS]
    fig, axes = _panels(len(shown), "Validation CORR per era", height=3.2, width=PANEL_WIDTH * 1.8)
    for ax, name in zip(axes, shown, strict=False):
        eras, values = _series(models[name]["validation_per_era"])
        finite = values[np.isfinite(values)]
        mean = float(finite.mean()) if finite.size else math.nan
        _corr_bars(ax, _era_positions(eras), values, mean, colors[name], "mean")
        positive = f"{np.mean(finite > 0):.0%} of eras positive" if finite.size else "no finite eras"
        _style(ax, f"{name}: {positive}", "era", "CORR")
    return fig


def _ranked_barh(ax: Axes, values: dict[str, Any], title: str, xlabel: str, color: str) -> None:
    """Horizontal bars, largest on top, for a {name: value} dict."""
    ranked = sorted(values.items(), key=lambda kv: np.nan_to_num(_number(kv[1]), nan=-math.inf))
    ax.barh([str(k) for k, _ in ranked], [np.nan_to_num(_number(v)) for _, v in ranked], color=color, label=xlabel)
    ax.tick_params(axis="y", labelsize=8)
    _style(ax, title, xlabel, "", zero_line="x")


def plot_feature_importance(report: dict[str, Any], colors: dict[str, str]) -> Figure | None:
    """The features the LightGBM members split on most (by gain)."""
    gain = as_dict(as_dict(report.get("importance")).get("gain"))
    if not gain:
        return None
    top = dict(sorted(gain.items(), key=lambda kv: -np.nan_to_num(_number(kv[1]), nan=-math.inf))[:TOP_GAIN_FEATURES])
    fig, axes = _panels(1, "Feature importance", height=0.24 * len(top) + 1.6, width=PANEL_WIDTH * 1.2)
    _ranked_barh(axes[0], top, f"Top {len(top)} features by LightGBM gain", "gain", "C0")
    return fig


def plot_group_importance(report: dict[str, Any], colors: dict[str, str]) -> Figure | None:
    """Feature groups: the share of gain the model gives them vs the CORR lost when they are permuted."""
    importance = as_dict(report.get("importance"))
    panels = [
        (values, title, xlabel, color)
        for values, title, xlabel, color in (
            (as_dict(importance.get("gain_by_group")), "Share of gain", "share of total gain", "C1"),
            (
                as_dict(importance.get("permutation_by_group")),
                "Permutation within eras",
                "drop in validation CORR mean",
                "C2",
            ),
        )
        if values
    ]
    if not panels:
        return None
    groups = max(len(p[0]) for p in panels)
    fig, axes = _panels(len(panels), "Feature group importance", ncols=2, height=0.35 * groups + 1.8)
    for ax, (values, title, xlabel, color) in zip(axes, panels, strict=False):
        _ranked_barh(ax, values, title, xlabel, color)
    return fig


def plot_feature_exposure(report: dict[str, Any], colors: dict[str, str]) -> Figure | None:
    """Mean feature exposure per model, and FNC vs CORR: high exposure with low FNC is fragile signal."""
    models = report_models(report)
    exposure = {n: as_dict(f.get("feature_exposure")) for n, f in models.items() if as_dict(f.get("feature_exposure"))}
    fnc = {n: f for n, f in models.items() if as_dict(f.get("fnc"))}
    panels = int(bool(exposure)) + int(bool(fnc))
    if not panels:
        return None
    fig, axes = _panels(panels, "Feature exposure and feature-neutral CORR", ncols=2)
    axes_iter = iter(axes)
    if exposure:
        ax = next(axes_iter)
        names = list(exposure)
        means = [_number(exposure[n].get("mean")) for n in names]
        stds = [np.nan_to_num(_number(exposure[n].get("std"))) for n in names]
        ax.bar(
            names,
            np.nan_to_num(means),
            yerr=stds,
            capsize=4,
            color=[colors[n] for n in names],
            label="mean ± std over eras",
        )
        ax.tick_params(axis="x", rotation=20)
        _style(ax, "Feature exposure (validation)", "model", "mean feature exposure", zero_line=None)
    if fnc:
        ax = next(axes_iter)
        for name, figures in fnc.items():
            x = _number(as_dict(figures.get("validation")).get("mean"))
            y = _number(figures["fnc"].get("mean"))
            ax.scatter([x], [y], s=70, color=colors[name], label=name, zorder=3)
        corr_means = [_number(as_dict(f.get("validation")).get("mean")) for f in fnc.values()]
        finite = [v for v in corr_means if math.isfinite(v)]
        if finite:
            lo, hi = min(finite + [0.0]), max(finite + [0.0])
            ax.plot([lo, hi], [lo, hi], color="grey", linestyle=":", linewidth=1, label="FNC = CORR")
        _style(ax, "FNC vs CORR (validation means)", "CORR mean", "FNC mean")
    return fig


def plot_calibration(report: dict[str, Any], colors: dict[str, str]) -> Figure | None:
    """Mean target per prediction quintile: a rising line means the ranking is right end to end."""
    models = {
        n: as_dict(f.get("calibration")) for n, f in report_models(report).items() if as_dict(f.get("calibration"))
    }
    if not models:
        return None
    fig, axes = _panels(1, "Prediction calibration (validation)")
    ax = axes[0]
    for name, quintiles in models.items():
        keys, values = _series(quintiles)
        ax.plot(keys, values, marker="o", label=name, color=colors[name], **_line_style(name))
    _style(ax, "Mean target per prediction quintile", "prediction quintile (1 = lowest)", "mean target", zero_line=None)
    return fig


def plot_worst_eras(report: dict[str, Any], colors: dict[str, str]) -> Figure | None:
    """Each model's worst validation eras: the drawdowns a stake would have felt."""
    worst = {
        name: [r for r in as_list(rows) if isinstance(r, dict)]
        for name, rows in as_dict(report.get("worst_eras")).items()
    }
    worst = {n: rows for n, rows in worst.items() if rows}
    if not worst:
        return None
    shown = ([ENSEMBLE] if ENSEMBLE in worst else []) + [n for n in worst if n != ENSEMBLE]
    shown = shown[:MAX_WORST_ERA_PANELS]
    fig, axes = _panels(len(shown), "Worst validation eras", ncols=2, height=3.4)
    for ax, name in zip(axes, shown, strict=False):
        rows = sorted(worst[name], key=lambda r: np.nan_to_num(_number(r.get("corr"))))
        values = np.array([_number(r.get("corr")) for r in rows])
        mean = _number(as_dict(report_models(report).get(name, {}).get("validation")).get("mean"))
        _corr_bars(ax, [str(r.get("era", "?")) for r in rows], values, mean, colors.get(name, "C0"), "validation mean")
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        _style(ax, name, "era", "CORR")
    return fig


def plot_rolling(report: dict[str, Any], colors: dict[str, str]) -> Figure | None:
    """Rolling mean of per-era CORR over CV then validation eras: regimes where the signal fades."""
    rolling = as_dict(report.get("rolling"))
    lines = {n: v for n, v in rolling.items() if n != "window" and as_dict(v)}
    if not lines:
        return None
    window = rolling.get("window")
    fig, axes = _panels(1, "Rolling CORR", height=4.6, width=PANEL_WIDTH * 1.8)
    ax = axes[0]
    for name, per_era in lines.items():
        eras, values = _series(per_era)
        x, y = _with_gaps(_era_positions(eras), values)
        ax.plot(x, y, label=name, color=colors.get(name, "C0"), **_line_style(name))
    first_validation = _first_validation_era(report)
    if first_validation is not None:
        ax.axvline(first_validation, color="grey", linestyle="--", linewidth=1.2, label="validation starts")
    label = f"{window}-era rolling mean" if window else "rolling mean"
    _style(ax, f"{label} of per-era CORR (CV then validation)", "era", "rolling CORR")
    return fig


def _first_validation_era(report: dict[str, Any]) -> float | None:
    """Where validation begins on a numeric era axis, if any model has validation per-era figures."""
    starts: list[float] = []
    for figures in report_models(report).values():
        eras, _ = _series(figures.get("validation_per_era"))
        if eras:
            try:
                starts.append(float(eras[0]))
            except ValueError:
                return None
    return min(starts) if starts else None


def plot_temporal(report: dict[str, Any], colors: dict[str, str]) -> Figure | None:
    """Per-feature era stability on training eras: features whose correlation flips sign often are suspects."""
    temporal = as_dict(report.get("temporal"))
    rows = [r for r in as_list(temporal.get("features")) if isinstance(r, dict)]
    if not rows:
        return None
    flagged_names = {str(f) for f in as_list(temporal.get("flagged"))}
    is_flagged = np.array([bool(r.get("flagged")) or r.get("feature") in flagged_names for r in rows])
    means = np.array([_number(r.get("mean")) for r in rows])
    flips = np.array([_number(r.get("sign_flips")) for r in rows])
    fig, axes = _panels(1, "Temporal feature stability (training eras)", height=4.8, width=PANEL_WIDTH * 1.4)
    ax = axes[0]
    ax.scatter(means[~is_flagged], flips[~is_flagged], s=16, color="C0", alpha=0.6, label="stable")
    ax.scatter(means[is_flagged], flips[is_flagged], s=32, color=NEGATIVE, label=f"flagged ({int(is_flagged.sum())})")
    labelled = sorted(np.flatnonzero(is_flagged), key=lambda i: -np.nan_to_num(flips[i]))[:MAX_FLAGGED_LABELS]
    for rank, i in enumerate(labelled):
        offset = (4, 4) if rank % 2 == 0 else (4, -10)
        ax.annotate(
            str(rows[i].get("feature")), (means[i], flips[i]), fontsize=7, xytext=offset, textcoords="offset points"
        )
    ax.margins(x=0.08, y=0.1)
    _style(
        ax,
        "Mean per-era correlation with the target vs sign-flip rate",
        "mean per-era correlation",
        "share of eras where the sign flips",
        zero_line="x",
    )
    return fig


PLOTTERS: dict[str, Callable[[dict[str, Any], dict[str, str]], Figure | None]] = {
    "cumulative_corr": plot_cumulative_corr,
    "per_era_corr": plot_per_era_corr,
    "rolling_corr": plot_rolling,
    "worst_eras": plot_worst_eras,
    "calibration": plot_calibration,
    "feature_exposure": plot_feature_exposure,
    "feature_importance": plot_feature_importance,
    "group_importance": plot_group_importance,
    "temporal_stability": plot_temporal,
}


def write_plots(report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    """Write every figure the report has data for as `<name>.png` in `out_dir`; returns name -> path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rolling = [n for n in as_dict(report.get("rolling")) if n != "window"]
    colors = _model_colors([*report_models(report), *rolling, *as_dict(report.get("worst_eras"))])
    written: dict[str, Path] = {}
    for name, plotter in PLOTTERS.items():
        fig = plotter(report, colors)
        if fig is not None:
            written[name] = _save(fig, out_dir, name)
    return written
