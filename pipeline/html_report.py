"""report.html: one self-contained page (figures embedded as base64) to read a build without a server.

Built from the report dict as read back from report.json; every section is skipped when its key
is absent, so a build that trained fewer things still gets a page.
"""

from __future__ import annotations

import base64
import html
import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pipeline.plots import ENSEMBLE, as_dict, as_list, report_models

# The three models of a refresh's comparison (`pipeline.refresh.compare`), as the report names them.
COMPARED = {"previous": "previous, unchanged", "refreshed": "refreshed", "full_retrain": "full retrain"}

SUMMARY_COLUMNS = (("mean", 4), ("std", 4), ("sharpe", 2), ("max_drawdown", 4), ("eras", 0))
SUMMARY_LABELS = {"mean": "mean", "std": "std", "sharpe": "Sharpe", "max_drawdown": "max DD", "eras": "eras"}
EXTRA_METRICS = (
    ("fnc", "FNC"),
    ("feature_exposure", "feature exposure"),
    ("bmc", "BMC"),
    ("benchmark_corr", "CORR with benchmark"),
)
VERIFICATION_FIELDS = (
    ("size_mb", "pickle size (MB)", 2),
    ("load_s", "load time (s)", 2),
    ("predict_s", "predict time (s)", 2),
    ("peak_rss_mb", "peak memory (MB)", 0),
)
PLOT_CAPTIONS = {
    "cumulative_corr": (
        "Cumulative CORR",
        "Running sum of per-era CORR. A steady slope is a reliable model; jumps are luck.",
    ),
    "per_era_corr": ("CORR per era", "Validation CORR of every era, green above zero and red below; dashed: the mean."),
    "rolling_corr": (
        "Rolling CORR",
        "Rolling mean of per-era CORR over CV then validation eras: regimes where the signal fades.",
    ),
    "worst_eras": ("Worst eras", "The validation eras with the lowest CORR for each model."),
    "calibration": (
        "Calibration",
        "Mean target per prediction quintile: a line rising from 1 to 5 ranks the whole range well.",
    ),
    "feature_exposure": (
        "Feature exposure",
        "Mean feature exposure per model, and feature-neutral CORR against plain CORR.",
    ),
    "feature_importance": ("Feature importance", "LightGBM gain of the top features."),
    "group_importance": (
        "Feature group importance",
        "Share of LightGBM gain per feature group, next to the drop in validation CORR when the group is permuted "
        "within eras: a group the model leans on that loses nothing when shuffled is fitting noise.",
    ),
    "temporal_stability": (
        "Temporal stability",
        "Per-feature correlation with the target on training eras; flagged features flip sign too often.",
    ),
}
SPLIT_NOTE = (
    "CV: out-of-fold predictions from forward-chained era folds (each fold trains only on earlier eras). "
    "Validation: held-out eras after the embargo; the models never saw them while training or choosing "
    "settings. The uploaded pickle may be refit on all labelled eras, so its live behaviour can differ "
    "slightly from these figures."
)
CSS = """
body {
  font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222; margin: 0; background: #f4f5f7;
}
main { max-width: 1280px; margin: 0 auto; padding: 24px 32px 48px; background: #fff; }
h1 { margin: 0 0 4px; font-size: 28px; }
h2 { margin: 36px 0 10px; padding-bottom: 4px; border-bottom: 2px solid #dde1e6; font-size: 21px; }
h3 { margin: 22px 0 6px; font-size: 16px; }
p.note { color: #555; font-size: 13px; max-width: 960px; }
table { border-collapse: collapse; margin: 8px 0 16px; font-size: 13px; }
th, td { padding: 4px 10px; border-bottom: 1px solid #e3e6ea; text-align: right; }
th { background: #f0f2f5; font-weight: 600; }
th:first-child, td:first-child { text-align: left; }
td.text, th.text { text-align: left; }
tr.ensemble td { font-weight: 700; background: #fbf8e8; }
td.neg { color: #b03a2e; }
.grid { display: flex; flex-wrap: wrap; gap: 8px 36px; align-items: flex-start; }
figure { margin: 12px 0 28px; }
figure img { max-width: 100%; border: 1px solid #e3e6ea; }
figcaption { color: #555; font-size: 13px; margin-top: 4px; }
ul.problems li { color: #b03a2e; }
.ok { color: #2f7d4f; font-weight: 600; }
nav { font-size: 13px; margin: 8px 0 0; }
nav a { margin-right: 14px; color: #2c5d8f; text-decoration: none; }
"""


def _esc(value: Any) -> str:
    """Any value as escaped text."""
    return html.escape(str(value))


def _cell(value: Any, digits: int | None = 4) -> str:
    """One <td>: numbers rounded to `digits` (None: as is), negatives marked, missing values as a dash."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return '<td class="missing">–</td>'
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f'<td class="text">{_esc(_compact(value))}</td>'
    if isinstance(value, int) or digits is None:
        text = str(value)
    else:
        text = f"{value:,.{digits}f}"
    return f'<td class="neg">{text}</td>' if value < 0 else f"<td>{text}</td>"


def _compact(value: Any) -> str:
    """Nested values (lists, dicts) as short JSON, everything else as its string."""
    return json.dumps(value, default=str) if isinstance(value, (dict, list)) else str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], row_classes: Iterable[str] | None = None) -> str:
    """An HTML table from header texts and rows of ready <td> cells; headers of text columns align left."""
    first = rows[0] if rows else []
    aligns = ["text" if i < len(first) and 'class="text"' in first[i] else "" for i in range(len(headers))]
    head = "".join(
        f'<th class="{a}">{_esc(h)}</th>' if a else f"<th>{_esc(h)}</th>" for h, a in zip(headers, aligns, strict=False)
    )
    classes = list(row_classes) if row_classes is not None else None
    body = []
    for i, cells in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def _key_values(values: dict[str, Any], digits: int | None = None) -> str:
    """A two-column table of a flat (or nested, shown as JSON) dict."""
    rows = [[_cell(k), _cell(v, digits)] for k, v in values.items()]
    return _table(["key", "value"], rows)


def _section(anchor: str, title: str, body: str) -> str:
    """A titled section, or nothing when the body is empty."""
    return f'<section id="{anchor}"><h2>{_esc(title)}</h2>{body}</section>' if body else ""


def _row_class(name: str) -> str:
    """The ensemble's row is highlighted: it is the model that gets uploaded."""
    return "ensemble" if name == ENSEMBLE else ""


def _models_section(report: dict[str, Any]) -> str:
    """CV and validation summaries side by side, one row per model."""
    models = report_models(report)
    splits = [s for s in ("cv", "validation") if any(as_dict(f.get(s)) for f in models.values())]
    if not splits:
        return ""
    headers = ["model"] + [
        f"{s.upper() if s == 'cv' else s} {SUMMARY_LABELS[k]}" for s in splits for k, _ in SUMMARY_COLUMNS
    ]
    rows = [
        [_cell(name)] + [_cell(as_dict(figures.get(s)).get(k), d) for s in splits for k, d in SUMMARY_COLUMNS]
        for name, figures in models.items()
    ]
    note = f'<p class="note">Per-era numerai CORR. {_esc(SPLIT_NOTE)}</p>'
    return _table(headers, rows, [_row_class(n) for n in models]) + note


def _extra_metrics_section(report: dict[str, Any]) -> str:
    """Validation means on auxiliary targets and of FNC, feature exposure, BMC: whatever was measured."""
    models = report_models(report)
    aux_names = list(dict.fromkeys(t for f in models.values() for t in as_dict(f.get("aux"))))
    columns = [(("aux", t), f"{t} CORR") for t in aux_names]
    columns += [((key,), label) for key, label in EXTRA_METRICS if any(as_dict(f.get(key)) for f in models.values())]
    if not columns:
        return ""

    def mean(figures: dict[str, Any], path: tuple[str, ...]) -> Any:
        for key in path:
            figures = as_dict(figures.get(key))
        return figures.get("mean")

    rows = [[_cell(name)] + [_cell(mean(f, path)) for path, _ in columns] for name, f in models.items()]
    note = (
        '<p class="note">Validation means over eras. FNC: CORR after neutralizing predictions to all features. '
        "BMC: CORR after neutralizing to the benchmark models.</p>"
    )
    return _table(["model"] + [label for _, label in columns], rows, [_row_class(n) for n in models]) + note


# What Numerai pays on, per model (report.json "numerai"): (split, score) columns.
PAID_COLUMNS = tuple((split, score) for split in ("cv", "validation") for score in ("corr", "bmc", "payout", "mmc"))
PAID_LABELS = {"corr": "CORR", "bmc": "BMC", "payout": "payout", "mmc": "MMC"}


def _paid_section(report: dict[str, Any]) -> str:
    """Mean CORR, BMC, MMC and the payout mix of every model on the CV and the validation eras."""
    models = report_models(report)
    paid = {name: as_dict(figures.get("numerai")) for name, figures in models.items()}
    columns = [c for c in PAID_COLUMNS if any(as_dict(as_dict(p.get(c[0])).get(c[1])) for p in paid.values())]
    if not columns:
        return ""
    headers = ["model"] + [f"{'CV' if split == 'cv' else split} {PAID_LABELS[score]}" for split, score in columns]
    rows = [
        [_cell(name)] + [_cell(as_dict(as_dict(p.get(split)).get(score)).get("mean")) for split, score in columns]
        for name, p in paid.items()
    ]
    first = next((as_dict(p.get("cv")) for p in paid.values() if p), {})
    note = (
        '<p class="note">Means over eras. BMC: contribution to the benchmark model\'s CORR '
        "(numerai_tools correlation_contribution), on the eras its predictions cover; MMC: the same against the "
        f"meta model, where meta_model.parquet covers rows; payout: {_esc(first.get('payout_mix'))}, BMC standing "
        f"in for MMC. The blend was chosen on {_esc(first.get('objective'))}. CV: each member's out-of-fold rows, "
        "the ensemble's cross-fold blend.</p>"
    )
    return _table(headers, rows, [_row_class(n) for n in paid]) + note


def _chosen_section(report: dict[str, Any]) -> str:
    """Settings picked by CV, per model."""
    rows = [
        [_cell(n), _cell(k), _cell(v, None)]
        for n, f in report_models(report).items()
        for k, v in as_dict(f.get("chosen")).items()
    ]
    return _table(["model", "setting", "value"], rows) if rows else ""


def _folds_section(report: dict[str, Any]) -> str:
    """The forward-chained CV folds: which eras each fold trained and scored on."""
    return _folds_table(as_list(report.get("folds")))


def _folds_table(folds: list[Any]) -> str:
    """One row per fold: the first, last and number of eras it trained and scored on."""
    folds = [f for f in folds if isinstance(f, dict)]
    if not folds:
        return ""
    keys = ("train_first", "train_last", "train_eras", "validation_first", "validation_last", "validation_eras")
    rows = [[_cell(i)] + [_cell(f.get(k), 0) for k in keys] for i, f in enumerate(folds, 1)]
    headers = ["fold", "train from", "train to", "train eras", "scored from", "scored to", "scored eras"]
    return _table(headers, rows)


def _image(path: Path) -> str:
    """An <img> with the PNG embedded as a data URI, so the page needs no other file."""
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img alt="{_esc(Path(path).stem)}" src="data:image/png;base64,{data}">'


def _plots_section(plots: dict[str, Path]) -> str:
    """Every written figure, known ones first in reading order, each with a caption."""
    ordered = [n for n in PLOT_CAPTIONS if n in plots] + [n for n in plots if n not in PLOT_CAPTIONS]
    figures = []
    for name in ordered:
        title, caption = PLOT_CAPTIONS.get(name, (name.replace("_", " ").capitalize(), ""))
        figures.append(
            f'<figure id="plot-{_esc(name)}"><h3>{_esc(title)}</h3>{_image(plots[name])}'
            f"<figcaption>{_esc(caption)}</figcaption></figure>"
        )
    return "".join(figures)


def _worst_eras_section(report: dict[str, Any]) -> str:
    """The worst validation eras of each model, side by side."""
    tables = []
    for name, rows in as_dict(report.get("worst_eras")).items():
        rows = [r for r in as_list(rows) if isinstance(r, dict)]
        if rows:
            body = _table(["era", "CORR"], [[_cell(r.get("era")), _cell(r.get("corr"))] for r in rows])
            tables.append(f"<div><h3>{_esc(name)}</h3>{body}</div>")
    return f'<div class="grid">{"".join(tables)}</div>' if tables else ""


def _importance_section(report: dict[str, Any]) -> str:
    """Top features by gain, and gain share next to permutation drop for each feature group."""
    importance = as_dict(report.get("importance"))
    parts = []
    gain = as_dict(importance.get("gain"))
    if gain:
        parts.append(
            f"<div><h3>Top features by "
            f"gain</h3>{_table(['feature', 'gain'], [[_cell(k), _cell(v, 1)] for k, v in gain.items()])}</div>"
        )
    share = as_dict(importance.get("gain_by_group"))
    drop = as_dict(importance.get("permutation_by_group"))
    if share or drop:
        groups = sorted(dict.fromkeys([*share, *drop]), key=lambda g: -(share.get(g) or 0.0))
        rows = [[_cell(g), _cell(share.get(g), 3), _cell(drop.get(g), 4)] for g in groups]
        note = (
            '<p class="note">Permutation drop: fall in validation CORR mean when the group is shuffled within eras; '
            "near zero or negative means the group adds nothing out of sample.</p>"
        )
        parts.append(
            f"<div><h3>Feature groups</h3>{_table(['group', 'gain share', 'permutation drop'], rows)}{note}</div>"
        )
    return f'<div class="grid">{"".join(parts)}</div>' if parts else ""


def _temporal_section(report: dict[str, Any]) -> str:
    """Features flagged as unstable across training eras, and the CV effect of dropping them."""
    temporal = as_dict(report.get("temporal"))
    parts = []
    flagged = {str(f) for f in as_list(temporal.get("flagged"))}
    rows = [
        r
        for r in as_list(temporal.get("features"))
        if isinstance(r, dict) and (r.get("flagged") or r.get("feature") in flagged)
    ]
    keys = (("mean", 4), ("std", 4), ("sharpe", 2), ("sign_flips", 2))
    if rows:
        table = _table(
            ["feature", "mean", "std", "Sharpe", "sign-flip rate"],
            [[_cell(r.get("feature"))] + [_cell(r.get(k), d) for k, d in keys] for r in rows],
        )
        parts.append(f"<div><h3>Flagged features ({len(rows)})</h3>{table}</div>")
    elif flagged:
        parts.append(f"<div><h3>Flagged features ({len(flagged)})</h3><p>{_esc(', '.join(sorted(flagged)))}</p></div>")
    table = _ablation_table(
        as_dict(temporal.get("ablation")), {"with": "all features", "without_flagged": "flagged features dropped"}
    )
    if table:
        parts.append(f"<div><h3>Ablation</h3>{table}</div>")
    return f'<div class="grid">{"".join(parts)}</div>' if parts else ""


def _ablation_table(ablation: dict[str, Any], labels: dict[str, str] | None = None) -> str:
    """CV CORR summaries of probe variants, one row each."""
    labels = labels or {}
    rows = [
        [_cell(labels.get(n, n))] + [_cell(as_dict(s).get(k), d) for k, d in SUMMARY_COLUMNS]
        for n, s in ablation.items()
        if as_dict(s)
    ]
    return _table(["CV CORR"] + [SUMMARY_LABELS[k] for k, _ in SUMMARY_COLUMNS], rows) if rows else ""


def _feature_pipeline_section(report: dict[str, Any]) -> str:
    """The feature transforms' ablation on the CV and the settings it chose."""
    pipeline = as_dict(report.get("feature_pipeline"))
    table = _ablation_table(as_dict(pipeline.get("ablation")))
    if not table:
        return ""
    chosen = _key_values(as_dict(pipeline.get("chosen")))
    note = (
        f'<p class="note">{_esc(pipeline.get("ablation_model", ""))}. '
        "Each transform is kept only if the CV CORR is higher with it.</p>"
    )
    return f'<div class="grid"><div><h3>Ablation</h3>{table}{note}</div><div><h3>Chosen</h3>{chosen}</div></div>'


def _seconds(value: Any) -> Any:
    """Whole seconds of a number, anything else as it is."""
    return f"{value:,.0f}" if isinstance(value, (int, float)) else value


def _search_section(report: dict[str, Any]) -> str:
    """The TSMixer-Ext hyperparameter search: one row per trial (its settings, CV CORR, seconds), the
    chosen one highlighted, and the training eras and folds it was scored on."""
    search = as_dict(report.get("tsmixer_search"))
    trials = [t for t in as_list(search.get("trials")) if isinstance(t, dict)]
    if not trials:
        return ""
    names = list(as_dict(search.get("space")))
    keys = [("cv_corr_mean", 4), ("cv_sharpe", 2), ("cv_eras", 0), ("best_epochs", None), ("seconds", 1)]
    rows = [
        [_cell(t.get("trial")), _cell("chosen" if t.get("best") else "")]
        + [_cell(t.get(n), None) for n in names]
        + [_cell(t.get(k), d) for k, d in keys]
        for t in trials
    ]
    headers = ["trial", "", *names, "CV mean", "CV Sharpe", "CV eras", "best epochs", "seconds"]
    table = _table(headers, rows, ["ensemble" if t.get("best") else "" for t in trials])
    note = (
        f'<p class="note">Random search for {_esc(search.get("member"))}: {len(trials)} of '
        f"{_esc(search.get('trials_asked'))} trials "
        f"within {_esc(_seconds(search.get('budget_s')))} s, trial 0 being the preset's settings. Each trial is "
        "scored by per-era CORR of the "
        f"member's own CV on forward-chained, embargoed folds over the training eras "
        f"{_esc(_era_span(search.get('eras')))} "
        "(those of the build's first CV fold, so the CV figures above score the chosen settings on later eras); "
        "validation eras are never used. The member then trains with the chosen settings.</p>"
    )
    return table + note + _folds_table(as_list(search.get("folds")))


def _gbdt_search_section(report: dict[str, Any]) -> str:
    """The LightGBM settings searches: one table per searched entry, a row per trial, the kept ones
    highlighted."""
    parts = []
    for name, search in as_dict(report.get("gbdt_search")).items():
        trials = [t for t in as_list(as_dict(search).get("trials")) if isinstance(t, dict)]
        if not trials:
            continue
        settings = [k for k in trials[0] if k not in ("trial", "cv_corr_mean", "cv_sharpe", "seconds", "kept")]
        rows = [
            [_cell(t.get("trial")), _cell("kept" if t.get("kept") else "")]
            + [_cell(t.get(k), None) for k in settings]
            + [_cell(t.get("cv_corr_mean"), 4), _cell(t.get("cv_sharpe"), 2), _cell(t.get("seconds"), 1)]
            for t in trials
        ]
        headers = ["trial", "", *settings, "CV mean", "CV Sharpe", "seconds"]
        parts.append(
            f"<h3>{_esc(name)}</h3>" + _table(headers, rows, ["ensemble" if t.get("kept") else "" for t in trials])
        )
    if not parts:
        return ""
    note = (
        '<p class="note">Each trial is scored by its own out-of-fold CV on the build\'s folds (trees chosen at '
        "checkpoints), fold by fold in rounds of successive halving: every trial fits the oldest fold, the "
        'better half the next ("folds": how many it fitted; its CV is of those). Trials 0-4 are the entry\'s '
        "settings, Numerai's example and deep recipes, and the entry's own with era boosting and at a quarter "
        "of its learning rate. Validation eras are never used. The kept trials are members of the blend with "
        "the search's CV figures.</p>"
    )
    return "".join(parts) + note


def _verification_section(report: dict[str, Any]) -> str:
    """The pickle's size, load and predict times, peak memory, and any problems found."""
    verification = as_dict(report.get("verification"))
    if not verification:
        return ""
    rows = [
        [_cell(label), _cell(verification.get(key), d)] for key, label, d in VERIFICATION_FIELDS if key in verification
    ]
    problems = verification.get("problems")
    if problems is not None and not isinstance(problems, list):
        problems = [problems]
    if problems:
        listing = f'<ul class="problems">{"".join(f"<li>{_esc(p)}</li>" for p in problems)}</ul>'
    elif problems is not None:
        listing = '<p class="ok">No problems found.</p>'
    else:
        listing = ""
    return (_table(["check", "value"], rows) if rows else "") + listing


def _era_span(span: Any) -> str | None:
    """[first, last, count] as "first..last (count)"."""
    values = as_list(span)
    return f"{values[0]}..{values[1]} ({values[2]})" if len(values) == 3 else None


def _refresh_section(report: dict[str, Any]) -> str:
    """A refresh: what each member got, and the previous, refreshed and fully retrained models scored
    on the same held-out eras (or why they were not)."""
    refresh = as_dict(report.get("refresh"))
    if not refresh:
        return ""

    steps = [
        [_cell(name), _cell(_era_span(as_dict(step).get("eras"))), _cell(as_dict(step).get("done"), None)]
        + [_cell(as_dict(step).get("skipped"), None)]
        for name, step in as_dict(refresh.get("members")).items()
    ]
    parts = [
        f'<p class="note">The model of {_esc(refresh.get("init_model"))}, trained through era '
        f"{_esc(refresh.get('previous_trained_through'))}, "
        f"continued on its new eras {_esc(_era_span(refresh.get('new_eras')))}. Kept: "
        f"{_esc(refresh.get('kept', ''))}.</p>",
        _table(["member", "eras", "what was done", "skipped"], steps) if steps else "",
    ]
    comparison = as_dict(refresh.get("comparison"))
    if comparison.get("skipped"):
        return "".join(parts) + f'<p class="note">Comparison skipped: {_esc(comparison["skipped"])}.</p>'
    models = report_models(report)
    rows = [
        [_cell(label)] + [_cell(as_dict(models.get(key, {}).get("validation")).get(k), d) for k, d in SUMMARY_COLUMNS]
        for key, label in COMPARED.items()
    ]
    member_rows = [
        [_cell(name)] + [_cell(as_dict(as_dict(figures).get(key)).get("mean")) for key in COMPARED]
        for name, figures in as_dict(comparison.get("members")).items()
    ]
    parts += [
        f"<h3>Held-out eras {_esc(_era_span(comparison.get('test_eras')))}</h3>",
        _table(["model"] + [SUMMARY_LABELS[k] for k, _ in SUMMARY_COLUMNS], rows, ["", "ensemble", ""]),
        _table(["member, mean CORR"] + list(COMPARED.values()), member_rows) if member_rows else "",
        f'<p class="note">Per-era numerai CORR of the blend (the previous weights and neutralization) on the newest '
        "labelled eras. "
        f"None of the three trained on them: the refreshed model and the full retrain stop at era "
        f"{_esc(comparison.get('trained_through'))}, "
        f"{_esc(comparison.get('embargo'))} eras of embargo before them; the previous model at "
        f"{_esc(comparison.get('previous_trained_through'))}. "
        "The full retrain keeps the previous build's settings (trees chosen by its CV, feature pipeline settings, "
        "blend weights). "
        "The uploaded pickle is then refreshed on every new era, these included.</p>",
    ]
    return "".join(parts)


def _summary_section(report: dict[str, Any]) -> str:
    """The free-form data summary and the build's settings, as key/value tables."""
    parts = [
        f"<div><h3>{title}</h3>{_key_values(as_dict(report.get(key)))}</div>"
        for key, title in (("data", "Data"), ("settings", "Settings"))
        if as_dict(report.get(key))
    ]
    return f'<div class="grid">{"".join(parts)}</div>' if parts else ""


def _headline(report: dict[str, Any]) -> str:
    """One line under the title: the ensemble's (or the refreshed model's, or the best model's) validation
    CORR; a refresh's "validation" is its held-out eras."""
    models = {
        n: f
        for n, f in report_models(report).items()
        if isinstance(as_dict(f.get("validation")).get("mean"), (int, float))
    }
    if not models:
        return ""
    name = next((n for n in (ENSEMBLE, "refreshed") if n in models), None) or max(
        models, key=lambda n: models[n]["validation"]["mean"]
    )
    v = models[name]["validation"]
    sharpe = v.get("sharpe")
    sharpe_text = f", Sharpe {sharpe:.2f}" if isinstance(sharpe, (int, float)) else ""
    split = "held-out" if report.get("refresh") else "validation"
    eras = _esc(v.get("eras", "?"))
    return f'<p class="note">{_esc(name)}: {split} CORR {v["mean"]:.4f}{_esc(sharpe_text)} over {eras} eras.</p>'


def render_html(report: dict[str, Any], plots: dict[str, Path]) -> str:
    """The whole page as a string (kept separate from writing so it can be checked without files)."""
    sections = [
        ("refresh", "Refresh: previous vs refreshed vs full retrain", _refresh_section(report)),
        ("summary", "Data and settings", _summary_section(report)),
        ("models", "Models: CORR per era", _models_section(report)),
        ("paid", "What Numerai pays: CORR, BMC and the payout mix", _paid_section(report)),
        ("extra", "Auxiliary targets, FNC, exposure, BMC", _extra_metrics_section(report)),
        ("chosen", "Settings chosen by CV", _chosen_section(report)),
        ("search", "TSMixer-Ext hyperparameter search", _search_section(report)),
        ("gbdt-search", "LightGBM settings search", _gbdt_search_section(report)),
        ("folds", "CV folds", _folds_section(report)),
        ("plots", "Figures", _plots_section(plots)),
        ("worst", "Worst validation eras", _worst_eras_section(report)),
        ("importance", "Feature importance", _importance_section(report)),
        ("features", "Feature pipeline", _feature_pipeline_section(report)),
        ("temporal", "Temporal feature stability", _temporal_section(report)),
        ("verification", "Pickle verification", _verification_section(report)),
    ]
    present = [(a, t, b) for a, t, b in sections if b]
    title = "Refresh report" if report.get("refresh") else "Build report"
    nav = "".join(f'<a href="#{a}">{_esc(t)}</a>' for a, t, _ in present)
    body = "".join(_section(a, t, b) for a, t, b in present)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{title}</title><style>{CSS}</style></head>"
        f"<body><main><h1>{title}</h1>{_headline(report)}<nav>{nav}</nav>{body}</main></body></html>\n"
    )


def write_html(report: dict[str, Any], out_dir: Path, plots: dict[str, Path]) -> Path:
    """Write `report.html` in `out_dir`: one file with every figure embedded, readable offline."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "report.html"
    path.write_text(render_html(report, plots), encoding="utf-8")
    return path
