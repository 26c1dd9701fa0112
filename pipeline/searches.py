"""The build's searches of members' settings, stages between choosing the feature pipeline and the CV:
TSMixer-Ext's hyperparameters (`--tsmixer-search`) and the LightGBM members' settings (preset entries
with `search`). Every trial is scored on training eras only, never on validation eras.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from pipeline.analysis import fold_table
from pipeline.cv import walk_forward_folds
from pipeline.evaluate import CVResult
from pipeline.members import TSMixerMember, lgbm_search
from pipeline.models.tsmixer import DEFAULT_SPACE
from pipeline.parallel import current, start_cv_members
from pipeline.presets import SEARCH_TRIALS
from pipeline.tuning import best_settings

if TYPE_CHECKING:
    from pipeline.build import FeatureChoice, Prepared
    from pipeline.config import BuildConfig

logger = logging.getLogger(__name__)

# Forward-chained folds of the TSMixer-Ext search: each trial trains one network per fold.
SEARCH_FOLDS = 2


def search_tsmixer(prep: Prepared) -> dict[str, Any] | None:
    """--tsmixer-search: a bounded random search over TSMixer-Ext's `DEFAULT_SPACE`, each trial scored
    by the member's own CV on SEARCH_FOLDS forward-chained, embargoed folds over the training eras of
    the build's first CV fold. The build's CV then scores the chosen member only on later eras, so its
    figures (which set the blend weights) are not flattered by the choice. Sets the member to the best
    trial and returns the report's entry: the eras and folds searched and one row per trial."""
    config = prep.config
    if not config.tsmixer_search:
        return None
    member = next(m for m in prep.members if m.kind == TSMixerMember.kind)
    eras = prep.folds[0][0]
    try:
        search_folds = walk_forward_folds(eras, SEARCH_FOLDS, prep.embargo)
    except ValueError as err:
        raise ValueError(
            f"--tsmixer-search searches the {len(eras)} training eras before the first CV fold's scored eras: {err}"
        ) from err
    logger.info(
        "%s: searching up to %d trials within %.0f s on eras %s..%s (%d folds, embargo %d)",
        member.name,
        config.tsmixer_search,
        config.tsmixer_search_budget,
        eras[0],
        eras[-1],
        len(search_folds),
        prep.embargo,
    )
    budget = config.tsmixer_search_budget
    table = member.tune(
        prep.train, search_folds, config.target, DEFAULT_SPACE, config.tsmixer_search, budget, config.seed
    )
    chosen = best_settings(table, DEFAULT_SPACE)
    logger.info(
        "%s: search ran %d trials in %.0f s; chosen %s", member.name, len(table), table["seconds"].sum(), chosen
    )
    return {
        "member": member.name,
        "eras": [str(eras[0]), str(eras[-1]), len(eras)],
        "folds": fold_table(search_folds),
        "space": DEFAULT_SPACE,
        "trials_asked": config.tsmixer_search,
        "budget_s": config.tsmixer_search_budget,
        "trials": table.to_dict(orient="records"),
        "chosen": chosen,
    }


def searched_members(prep: Prepared) -> list[Any]:
    """The LightGBM members whose entries ask for a search of their settings."""
    return [member for member in prep.members if getattr(member, "search", 0)]


def gbdt_trial_count(config: BuildConfig) -> int:
    return config.gbdt_search_trials or SEARCH_TRIALS[config.preset]


def gbdt_trials(prep: Prepared, rows: int) -> dict[str, list[Any]]:
    """Each searched member's trials as members (`lgbm_search.trial_member`; `rows`: what their leaf
    shares are shares of), as `search_gbdt` runs them without a time budget: what `pipeline.plan` costs."""
    count = gbdt_trial_count(prep.config)
    return {
        member.name: [
            lgbm_search.trial_member(member, trial, number, rows)
            for number, trial in enumerate(
                lgbm_search.candidates(member, rows, prep.config.seed, max(count, member.search))
            )
        ]
        for member in searched_members(prep)
    }


def search_gbdt(
    prep: Prepared, choice: FeatureChoice
) -> tuple[Prepared, dict[str, CVResult], dict[str, Any], Callable[[], dict[str, CVResult]] | None]:
    """Each LightGBM member whose entry asks for a search (`MemberEntry.search`) is replaced by the best
    trials of a bounded search of its settings on the build's CV folds (`pipeline.members.lgbm_search`),
    the preset's number of trials each (--gbdt-search-trials), within --gbdt-search-budget seconds
    shared by all of them when given (a time budget makes the choice depend on the machine's speed).

    On a runner whose fits run elsewhere (--jobs, Dask) and without a budget, the CV of the members no
    search touches is started once the first search's first round is queued: its fits take up the
    slots that the rounds' last fits leave idle, and the neural members' long CVs run beside the search
    instead of after it (each fit is the one the CV would make after the search). Returns the data
    with the searched members, their CV results (the search's: no second CV), the report's tables and
    the function that collects the other members' CV (None: not started)."""
    config = prep.config
    searched = searched_members(prep)
    if not searched:
        return prep, {}, {}, None
    trials = gbdt_trial_count(config)
    budget = float("inf") if config.gbdt_search_budget is None else config.gbdt_search_budget
    others = [member for member in prep.members if member not in searched]
    collect: Callable[[], dict[str, CVResult]] | None = None

    def start_others() -> None:
        nonlocal collect
        collect = start_cv_members(others, prep.train, prep.folds, config.target, choice.fold_pipelines)

    behind = start_others if others and current().concurrent and budget == float("inf") else None
    members, results, report = [], {}, {}
    for member in prep.members:
        if member not in searched:
            members.append(member)
            continue
        kept, table = lgbm_search.search(
            member,
            prep.train,
            prep.folds,
            config.target,
            choice.fold_pipelines,
            member.search,
            trials,
            budget / len(searched),
            config.seed,
            behind,
        )
        behind = None
        for found, result in kept:
            found.search = 0
            members.append(found)
            results[found.name] = result
        report[member.name] = {"budget_s": budget / len(searched), "trials": table.to_dict(orient="records")}
        logger.info(
            "%s: search ran %d trials in %.0f s; kept %s",
            member.name,
            len(table),
            table["seconds"].sum(),
            [found.name for found, _ in kept],
        )
    return replace(prep, members=members), results, report, collect
