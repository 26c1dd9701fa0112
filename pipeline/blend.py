"""Blend weights and neutralization, both chosen on out-of-fold per-era scores: CORR, or with
`--objective` BMC or Numerai's payout mix (`pipeline.objective`: a `ScoredTarget` in place of the
target array).

The blend is a weighted average of per-era ranks, the same arithmetic the pickle runs
(`pipeline.runtime.ensemble_scores`), so the CV scores exactly what ships.

How the weights are found is itself chosen on the CV (`choose_blend`): greedy ensemble selection,
that shrunk toward the best single member or toward equal weights, the best member alone, or equal
weights, each after leaving out the members the CV puts below the reference (Numerai's example
model) by more than one standard error. Each rule is scored by the cross-fold CV (weights fitted on
the other folds); the best member alone stays unless a blend beats it there by more than one
standard error, so a blend that only fits noise never ships.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from pipeline.metrics import paired_difference, summarize
from pipeline.objective import Target, score_columns, score_series
from pipeline.runtime import blend_ranks, ensemble_scores, feature_projection, rank_within_groups

NEUTRALIZATION_GRID = (0.0, 0.25, 0.5, 0.75, 1.0)
# A proportion may cost at most this share of the best mean CORR for a better Sharpe.
MEAN_TOLERANCE = 0.02


def fit_weights(oof: np.ndarray, target: Target, eras: np.ndarray, steps: int = 10, patience: int = 3) -> np.ndarray:
    """Non-negative weights summing to 1 that maximize the mean per-era CORR of the rank blend:
    greedy ensemble selection with replacement (Caruana et al., 2004).

    Each of at most `steps` rounds picks once more the member whose extra pick raises the CORR most
    (the members' candidates scored in one numerai_corr call per era); weights are the picks' shares
    after the best round, and `patience` rounds without a better one end the search. That is at most
    `steps` x members candidates, where a grid on the simplex needs C(steps + members - 1, members - 1)
    (462 for 7 members at steps of 1/5). The rank average (equal weights) is kept unless a round beats
    it.
    """
    n = oof.shape[1]
    ranks = np.column_stack([rank_within_groups(column, eras) for column in np.asarray(oof, dtype=np.float64).T])
    best = np.full(n, 1.0 / n)
    if n == 1:
        return best
    counts, best_mean, stale = np.zeros(n), -np.inf, 0
    for step in range(steps):
        candidates = (counts + np.eye(n)) / (counts.sum() + 1)
        # The first round scores the rank average beside its candidates, in the same calls.
        scored = np.vstack([candidates, best]) if step == 0 else candidates
        means = score_columns(ranks @ scored.T, target, eras).mean().to_numpy()
        if step == 0:
            best_mean, means = means[-1], means[:-1]
        pick = int(np.argmax(means))
        counts[pick] += 1
        if means[pick] > best_mean:
            best, best_mean, stale = candidates[pick], means[pick], 0
        else:
            stale += 1
            if stale >= patience:
                break
    return best


# Blend rules, simplest last: a tie on the cross-fold CV goes to the later (simpler) one.
BLEND_RULES = (
    "greedy",
    "greedy, halfway to the best member",
    "greedy, halfway to equal weights",
    "best member",
    "equal",
)
BlendRule = str
BEST_MEMBER: BlendRule = "best member"


def eligible_members(per_era: pd.DataFrame, reference: int | None) -> np.ndarray:
    """Members (columns of `per_era`, eras x members) the CV does not put below the reference member by
    more than one standard error of the paired per-era difference (all when there is no reference)."""
    n = per_era.shape[1]
    keep = np.ones(n, dtype=bool)
    if reference is None:
        return keep
    for k in range(n):
        if k != reference:
            mean, se = paired_difference(per_era[k], per_era[reference])
            keep[k] = not mean < -se
    return keep


def blend_rules(oof: np.ndarray, target: Target, eras: np.ndarray, reference: int | None) -> dict[str, np.ndarray]:
    """The weights of every rule of `BLEND_RULES` fitted on these out-of-fold rows (one greedy fit serves
    the three greedy rules); members below the reference get none in any."""
    per_era = score_columns(oof, target, eras)
    chosen = np.flatnonzero(eligible_members(per_era, reference))
    best = np.eye(len(chosen))[int(np.argmax(per_era[chosen].mean().to_numpy()))]
    equal = np.full(len(chosen), 1.0 / len(chosen))
    greedy = fit_weights(oof[:, chosen], target, eras)
    shares = {
        "greedy": greedy,
        "greedy, halfway to the best member": 0.5 * greedy + 0.5 * best,
        "greedy, halfway to equal weights": 0.5 * greedy + 0.5 * equal,
        "best member": best,
        "equal": equal,
    }
    rules = {}
    for rule, share in shares.items():
        rules[rule] = np.zeros(oof.shape[1])
        rules[rule][chosen] = share
    return rules


def fit_blend(
    oof: np.ndarray, target: Target, eras: np.ndarray, rule: BlendRule = "greedy", reference: int | None = None
) -> np.ndarray:
    """Weights of `rule` fitted on these out-of-fold rows; members below the reference get none."""
    if rule not in BLEND_RULES:
        raise ValueError(f"unknown blend rule {rule!r}; expected one of {BLEND_RULES}")
    return blend_rules(oof, target, eras, reference)[rule]


def choose_blend(
    oof: np.ndarray, target: Target, eras: np.ndarray, fold_eras: Sequence[np.ndarray], reference: int | None
) -> tuple[BlendRule, pd.DataFrame, list[np.ndarray]]:
    """The blend rule with the best cross-fold CV mean CORR (ties to the simpler), unless it beats the best
    member alone by no more than one standard error of their paired per-era difference: then the best
    member (a blend must earn its weights beyond noise, as a feature pipeline must, `feature_choice`).
    Returns the rule, every rule's cross-fold figures (each fold scored with every rule's weights fitted
    on the other folds) with `vs_best_member` and its `se`, and the chosen rule's weights of each fold."""
    per_era, fold_rules = [], []
    for held_out in fold_eras:
        inside = np.isin(eras, held_out)
        if inside.all():
            rules = {rule: np.full(oof.shape[1], 1.0 / oof.shape[1]) for rule in BLEND_RULES}
        else:
            rules = blend_rules(oof[~inside], target[~inside], eras[~inside], reference)
        fold_rules.append(rules)
        blends = np.column_stack([blend_ranks(oof[inside], weights, eras[inside]) for weights in rules.values()])
        per_era.append(score_columns(blends, target[inside], eras[inside]))
    scores = pd.concat(per_era).sort_index().set_axis(list(BLEND_RULES), axis=1)
    table = pd.DataFrame({rule: summarize(scores[rule]) for rule in BLEND_RULES}).T.rename_axis("rule")
    versus = [paired_difference(scores[rule], scores[BEST_MEMBER]) for rule in BLEND_RULES]
    table["vs_best_member"], table["se"] = [mean for mean, _ in versus], [se for _, se in versus]
    means = table["mean"].to_numpy()
    chosen = BLEND_RULES[len(means) - 1 - int(np.argmax(means[::-1]))]
    # A CV of one fold fitted no rule (each is the rank average): nothing to prefer the best member on.
    fitted = len(fold_eras) > 1
    if fitted and not table.loc[chosen, "vs_best_member"] > table.loc[chosen, "se"]:
        chosen = BEST_MEMBER
    return chosen, table, [rules[chosen] for rules in fold_rules]


def cross_fold_predictions(
    oof: np.ndarray,
    target: Target,
    eras: np.ndarray,
    fold_eras: Sequence[np.ndarray],
    features: np.ndarray | None = None,
    proportion: float = 0.0,
    rule: BlendRule = "greedy",
    reference: int | None = None,
    columns: np.ndarray | None = None,
    fitted: Sequence[np.ndarray] | None = None,
) -> tuple[np.ndarray, list[np.ndarray]]:
    """The blend's honest out-of-fold predictions: each fold's rows blended with weights fitted by `rule`
    on the other folds only (members left out there too; `fitted`: those weights, one per fold, already
    fitted), then neutralized by `proportion` against the `columns` of `features` (rows aligned with
    `oof`) as the pickle is; NaN on rows of no fold. A CV of one fold has no other fold to fit on: it is
    blended with equal weights (the rank average), a choice that looked at nothing. Returns the
    predictions and each fold's weights."""
    blended, fold_weights = np.full(len(oof), np.nan), []
    for k, held_out in enumerate(fold_eras):
        inside = np.isin(eras, held_out)
        if fitted is not None:
            weights = fitted[k]
        elif inside.all():
            weights = np.full(oof.shape[1], 1.0 / oof.shape[1])
        else:
            weights = fit_blend(oof[~inside], target[~inside], eras[~inside], rule, reference)
        fold_weights.append(weights)
        features_inside = None if features is None else features[inside]
        blended[inside] = ensemble_scores(oof[inside], weights, features_inside, eras[inside], proportion, columns)
    return blended, fold_weights


def cross_fold_blend(
    oof: np.ndarray, target: Target, eras: np.ndarray, fold_eras: Sequence[np.ndarray], *args: Any, **kwargs: Any
) -> tuple[pd.Series, list[np.ndarray]]:
    """Honest CV of the blend: `cross_fold_predictions` (the same further arguments) scored per era on
    the objective of `target`."""
    blended, fold_weights = cross_fold_predictions(oof, target, eras, fold_eras, *args, **kwargs)
    scored = ~np.isnan(blended)
    return score_series(blended[scored], target[scored], eras[scored]), fold_weights


class NeutralizationChoice(NamedTuple):
    """What `choose_neutralization` chose, every candidate's CV (`table`) and the honest check of the
    choice (`cross_fold`: the candidate picked on the other folds, scored on each fold; None with one fold)."""

    proportion: float
    neutralizer: str
    table: pd.DataFrame
    cross_fold: dict[str, Any] | None


def candidate_table(scores: Mapping[tuple[str, float], pd.Series]) -> pd.DataFrame:
    """Each candidate's summary with `vs_none` and `se`, its paired per-era difference from the first
    candidate (no neutralization)."""
    none = next(iter(scores))
    rows = {}
    for key, series in scores.items():
        rows[key] = summarize(series)
        rows[key]["vs_none"], rows[key]["se"] = paired_difference(series, scores[none])
    return pd.DataFrame(rows).T.rename_axis(["neutralizers", "proportion"])


def pick_neutralization(table: pd.DataFrame) -> tuple[str, float]:
    """Among no neutralization (the first row) and the candidates beating it by more than one standard
    error, the best Sharpe of those within `MEAN_TOLERANCE` of the best mean (the best mean where no
    Sharpe exists)."""
    beyond_noise = table[(table["vs_none"] > table["se"]) | (table.index == table.index[0])]
    good = beyond_noise[
        beyond_noise["mean"] >= beyond_noise["mean"].max() - MEAN_TOLERANCE * abs(beyond_noise["mean"].max())
    ]
    return good["mean"].idxmax() if good["sharpe"].isna().all() else good["sharpe"].idxmax()


def cross_fold_neutralization(
    scores: Mapping[tuple[str, float], pd.Series], fold_eras: Sequence[np.ndarray]
) -> dict[str, Any]:
    """The choice's honest CV: each fold's eras scored with the candidate `pick_neutralization` takes on
    the other folds' eras, as the blend rule is checked (`choose_blend`). The best of many candidates
    on the same eras beats none by chance alone; picked elsewhere, it has to beat none where it was not
    picked."""
    none = next(iter(scores))
    honest, picks = [], []
    for held_out in fold_eras:
        inside = scores[none].index.isin(held_out)
        if not inside.any():
            continue
        pick = pick_neutralization(candidate_table({key: s[~inside] for key, s in scores.items()}))
        honest.append(scores[pick][inside])
        picks.append(f"{pick[0]}: {pick[1]:g}")
    series = pd.concat(honest).sort_index()
    vs_none, se = paired_difference(series, scores[none])
    return summarize(series) | {"vs_none": vs_none, "se": se, "fold_picks": picks}


def choose_neutralization(
    blended: np.ndarray,
    features: np.ndarray,
    target: Target,
    eras: np.ndarray,
    neutralizers: Mapping[str, np.ndarray | None] | None = None,
    grid: Sequence[float] = NEUTRALIZATION_GRID,
    fold_eras: Sequence[np.ndarray] | None = None,
) -> NeutralizationChoice:
    """Neutralization of the blend: a proportion of the grid against one set of feature columns of
    `neutralizers` (name -> columns, None: all features; by default all features only).

    A candidate competes only if it beats no neutralization by more than one standard error of their
    paired per-era difference (`vs_none`, `se` in the table): with several sets and proportions the best
    of them beats none by chance alone, as a blend beats its best member (`choose_blend`). Among those and
    none, the best Sharpe of the candidates whose mean CORR is within `MEAN_TOLERANCE` of the best mean
    (Numerai pays on CORR, so Sharpe only breaks near-ties; a CV of one era has no Sharpe, and the best
    mean decides). With two folds or more (`fold_eras`) the choice must also pass its cross-fold check
    (`cross_fold_neutralization`) by more than one standard error, or none stays."""
    neutralizers = {"all features": None} if neutralizers is None else neutralizers
    scores: dict[tuple[str, float], pd.Series] = {}
    for name, columns in neutralizers.items():
        x = features if columns is None else features[:, np.asarray(columns)]
        ranks, projection = feature_projection(blended, x, eras)
        per_era = score_columns(np.column_stack([ranks - p * projection for p in grid]), target, eras)
        scores |= {(name, p): per_era[k] for k, p in enumerate(grid) if p > 0 or not scores}
    table = candidate_table(scores)
    chosen = pick_neutralization(table)
    cross_fold = None
    if fold_eras is not None and len(fold_eras) > 1:
        cross_fold = cross_fold_neutralization(scores, fold_eras)
        if not cross_fold["vs_none"] > cross_fold["se"]:
            chosen = table.index[0]
    return NeutralizationChoice(float(chosen[1]), str(chosen[0]), table, cross_fold)
