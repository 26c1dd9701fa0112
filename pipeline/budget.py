"""--time-budget HOURS: the largest settings of a build whose cost plan (`pipeline.plan`) fits."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator

from pipeline.build import set_up
from pipeline.config import BuildConfig
from pipeline.plan import PlanFor, calibrated, make_plan
from pipeline.plan_choices import Choices
from pipeline.presets import PRESETS
from pipeline.schedule import Plan

logger = logging.getLogger(__name__)

# Presets from the most to the least costly: --time-budget tries the cheaper ones last.
PRESET_ORDER = ("large", "standard", "demo", "example")
TREE_SCALES = (1.0, 0.5, 0.25)
ERA_STRIDES = (None, 2, 4)


def budget_candidates(config: BuildConfig) -> Iterator[tuple[BuildConfig, list[str]]]:
    """The build's settings from the largest down, each with the changes it makes: fewer trees at a
    larger learning rate first, then a longer era stride, then fewer CV folds, then a cheaper preset."""
    known = config.preset in PRESET_ORDER
    cheaper = [p for p in PRESET_ORDER[PRESET_ORDER.index(config.preset) + 1 :] if p in PRESETS] if known else []
    presets = [config.preset, *cheaper]
    for preset in presets:
        for folds in range(config.cv_folds, min(config.cv_folds, 2) - 1, -1):
            for stride in ERA_STRIDES if config.era_stride is None else (config.era_stride,):
                for scale in TREE_SCALES:
                    candidate = dataclasses.replace(
                        config, preset=preset, cv_folds=folds, era_stride=stride, tree_scale=config.tree_scale * scale
                    )
                    changes = [
                        f"{option} {new}"
                        for option, old, new in (
                            ("--preset", config.preset, preset),
                            ("--cv-folds", config.cv_folds, folds),
                            ("--era-stride", config.era_stride, stride),
                            ("--tree-scale", config.tree_scale, candidate.tree_scale),
                        )
                        if old != new
                    ]
                    yield candidate, changes


def fit_budget(config: BuildConfig, target: PlanFor | None = None) -> tuple[BuildConfig, list[str], Plan]:
    """--time-budget: the first of `budget_candidates` whose plan fits in `config.time_budget` hours
    (`target`: the size and machine planned for; None: the data's, this one), the changes it makes
    (logged) and its plan; an error naming the smallest plan when none fits."""
    target = target or PlanFor()
    budget = config.time_budget * 3600
    prep, calibration, size, cores = calibrated(config, target)
    asked = None
    for candidate, changes in budget_candidates(config):
        setup = (
            prep
            if not changes
            else set_up(
                candidate,
                prep.data_dir,
                prep.features,
                prep.train,
                prep.validation,
                prep.missing_feature_eras,
                prep.bins,
            )
        )
        # An earlier build's choices are of its preset's members; a cheaper preset is planned without them.
        choices = target.choices if candidate.preset == config.preset else Choices()
        plan = make_plan(setup, calibration.add(setup), size, cores, choices)
        asked = asked or plan
        if plan.total_seconds <= budget:
            logger.info(
                "--time-budget %.2f h: the build as asked plans %.2f h; %s (plan %.2f h)",
                config.time_budget,
                asked.total_seconds / 3600,
                "taking " + ", ".join(changes) if changes else "nothing changed",
                plan.total_seconds / 3600,
            )
            return candidate, changes, plan
    raise ValueError(
        f"--time-budget {config.time_budget:g} h: even the smallest settings tried ({', '.join(changes)}) plan "
        f"{plan.total_seconds / 3600:.2f} h on {cores} cores; give a larger budget, more cores (--jobs) or less data"
    )
