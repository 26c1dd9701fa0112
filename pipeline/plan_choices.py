"""What a build chose as it went, read from an earlier build's report, for `plan --choices REPORT`.

Before training, the plan cannot know what the CV will choose, so it assumes the most costly
choices (every transform of the feature pipeline kept, every member refitted, half of each cap on
trees): an upper bound, which a small world whose choices keep no transform and ship a few members
halves. The next build on the same data (a weekly rebuild, or the same options after a first run)
mostly makes the same choices; `Choices` carries them into the plan in place of those assumptions.
"""

from __future__ import annotations

import copy
import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipeline.feature_choice import ALL_TRANSFORMS, PIPELINE_CONFIGS
from pipeline.schedule import Task

REPORT = "report.json"
# Share of its cap on trees a LightGBM member's CV is planned to choose (the demo build on the default
# world chose 0.25 to 0.6 of it: README, "What a build costs").
CHOSEN_SHARE = 0.5
# What the plan assumes of the CV's choices unless `plan --choices` gives an earlier build's.
CHOICES = [
    f"the holdout and refit train {CHOSEN_SHARE:.0%} of each LightGBM member's cap on trees (the CV's choice, at "
    "most the cap: then they cost up to twice as much)",
    "every member is refitted (the blend leaves out those it gives no weight)",
    "the feature pipeline keeps every transform its ablation tries",
]


@dataclass(frozen=True)
class Kept:
    """A search's kept trial: its number among the trials and the name its member takes."""

    trial: int
    name: str


@dataclass(frozen=True)
class Choices:
    """The choices a plan costs; the defaults are its assumptions before any build (`source` None).

    `trees`: each (not searched) member's trees in the holdout and refit; `shipped`: the members the
    blend weights (None: every member); `searches`: per searched member, how many folds each trial
    fitted (its successive halving) and the trials kept as members, best first."""

    source: str | None = None
    pipeline: str = ALL_TRANSFORMS
    trees: dict[str, int] = field(default_factory=dict)
    shipped: frozenset[str] | None = None
    searches: dict[str, tuple[tuple[int, ...], tuple[Kept, ...]]] = field(default_factory=dict)

    @property
    def stability_pipeline(self) -> str:
        """The stability check's probes: the chosen configuration without its group mixers."""
        chosen = PIPELINE_CONFIGS[self.pipeline]
        return next(
            label
            for label, settings in PIPELINE_CONFIGS.items()
            if not settings["mixing"]
            and (settings["clusters"], settings["group_stats"]) == (chosen["clusters"], chosen["group_stats"])
        )

    def ships(self, name: str) -> bool:
        return self.shipped is None or name in self.shipped

    def describe(self) -> str:
        """The assumption the plan lists in place of its own."""
        shipped = "every member"
        if self.shipped is not None:
            shipped = f"{len(self.shipped)} members ({', '.join(sorted(self.shipped))})"
        return (
            f"the choices of the build reported in {self.source}: feature pipeline {self.pipeline!r}, each member's "
            f"trees as its CV chose them (at most this build's cap), each search's survivors and kept trials, "
            f"{shipped} refitted"
        )


def report_path(path: Path) -> Path:
    """`path` itself, or the report.json in it (a build's `<out>_report` directory)."""
    path = Path(path)
    return path / REPORT if path.is_dir() else path


def read_choices(path: Path, preset: str) -> Choices:
    """The choices of the build whose report.json is at `path` (or in that directory); an error naming
    the file when it is not a build's report of the same preset (its members are the preset's)."""
    path = report_path(path)
    if not path.is_file():
        raise ValueError(f"--choices {path}: no such file (give an earlier build's report.json or report directory)")
    try:
        report = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--choices {path}: not a JSON report ({err})") from err
    missing = [key for key in ("settings", "models", "feature_pipeline") if key not in report]
    if missing:
        raise ValueError(f"--choices {path}: a build's report.json has {missing}; this one has {sorted(report)[:8]}")
    if report["settings"].get("preset") != preset:
        raise ValueError(
            f"--choices {path}: its build ran --preset {report['settings'].get('preset')!r}; this plan is of "
            f"--preset {preset!r} (the choices are per member of a preset)"
        )
    pipeline = report["feature_pipeline"].get("configuration", ALL_TRANSFORMS)
    if pipeline not in PIPELINE_CONFIGS:
        raise ValueError(
            f"--choices {path}: feature_pipeline.configuration {pipeline!r} is not one of {list(PIPELINE_CONFIGS)}"
        )
    models = {name: entry for name, entry in report["models"].items() if name != "ensemble"}
    weights = report["models"].get("ensemble", {}).get("chosen", {}).get("weights")
    return Choices(
        source=str(path),
        pipeline=pipeline,
        trees={name: int(entry["chosen"]["num_boost_round"]) for name, entry in models.items() if trees_of(entry)},
        shipped=None if weights is None else frozenset(name for name, weight in weights.items() if weight > 0),
        searches={name: search_choices(name, table) for name, table in report.get("gbdt_search", {}).items()},
    )


def trees_of(entry: dict[str, Any]) -> bool:
    return "num_boost_round" in entry.get("chosen", {})


def search_choices(name: str, table: dict[str, Any]) -> tuple[tuple[int, ...], tuple[Kept, ...]]:
    """A search's folds per trial (by trial number) and its kept trials, best first (the report's table
    lists the kept trials first, in the order of their members' names)."""
    trials = sorted(table["trials"], key=lambda row: row["trial"])
    kept = [row for row in table["trials"] if row.get("kept")]
    names = [f"{name}_{rank}" for rank in range(1, len(kept) + 1)] if len(kept) > 1 else [name]
    return (
        tuple(int(row["folds"]) for row in trials),
        tuple(Kept(int(row["trial"]), n) for row, n in zip(kept, names, strict=True)),
    )


# The plan's own assumptions, before any build.
NO_CHOICES = Choices()


# Fits the CV chooses among trials (a search's survivors and kept members)


def chosen_trees(member: Any) -> int:
    """The trees a LightGBM member's holdout and refit are planned with: `CHOSEN_SHARE` of its cap
    (they train the CV's choice, unknown before the CV)."""
    return max(1, round(CHOSEN_SHARE * member.estimator.num_boost_round))


def chosen_among(tasks: list[Task], views: list[tuple], count: int) -> Task:
    """One of `count` fits chosen among `tasks` (a search's survivors, its kept trials: which, the CV
    decides): their mean trees and setup, and a `count`-th of the binning that `count` fits drawn
    from them are expected to need, each view once for all that share it (`views[i]`: task i's)."""
    shares = Counter(views)
    fresh = {view: max(t.binning for t, v in zip(tasks, views, strict=True) if v == view) for view in shares}
    binning = sum((1 - (1 - n / len(views)) ** count) * fresh[view] for view, n in shares.items()) / count
    mean = {name: float(np.mean([getattr(task, name) for task in tasks])) for name in ("cpu", "serial", "binning")}
    memory = max(task.memory_mb for task in tasks)
    return Task(mean["cpu"], mean["serial"] - mean["binning"] + binning, memory, binning)


def first_binning(tasks: list[Task], views: list[tuple], every: list[Task], every_views: list[tuple]) -> list[Task]:
    """`tasks` (some of `every`) with the first of each view binning it, as much as any of `every` on
    that view bins, and the others reading its bins."""
    fresh = {view: max(t.binning for t, v in zip(every, every_views, strict=True) if v == view) for view in views}
    binned, out = set(), []
    for task, view in zip(tasks, views, strict=True):
        binning = 0.0 if view in binned else fresh[view]
        binned.add(view)
        out.append(Task(task.cpu, task.serial - task.binning + binning, task.memory_mb, binning))
    return out


def replace_name(member: Any, name: str) -> Any:
    """A copy of `member` named `name` (a search's kept trial, as the build renames it)."""
    named = copy.copy(member)
    named.name = name
    return named


def kept_names(trials: list[Any], kept: int) -> list[str]:
    """The names a search gives the `kept` trials it keeps (`lgbm_search.search`)."""
    base = trials[0].name.rsplit("_", 1)[0]
    return [base] if kept == 1 else [f"{base}_{rank}" for rank in range(1, kept + 1)]
