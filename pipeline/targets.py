"""Which auxiliary targets a member learns: labels only, never inputs.

Numerai ships 20- and 60-day auxiliary targets beside the main one; a member may train on one of them
and is always scored and chosen on the main target.
"""

from __future__ import annotations

import numpy as np

from pipeline.cv import default_embargo
from pipeline.data import EraFrame
from pipeline.features import spread_rows
from pipeline.metrics import per_era_corr_columns
from pipeline.runtime import scaled_bins

# Choosing an auxiliary target: rows per ridge fit and per scoring window, and the ridge penalty
# (per row, on features scaled to -1..1).
AUX_CHOICE_ROWS = 200_000
AUX_CHOICE_RIDGE = 0.1


def aux_targets(frame: EraFrame, main: str, horizon: str = "_20") -> list[str]:
    """Auxiliary targets of a horizon, leaving out the main target and its copies (target_ender_20)."""
    return [
        c
        for c in frame.targets.columns
        if c != main and c.endswith(horizon) and not frame.targets[c].equals(frame.targets[main])
    ]


def best_aux_target(frame: EraFrame, main: str, horizon: str = "_20") -> str | None:
    """The auxiliary target of a horizon whose own model best predicts the main target on later eras.

    Chosen on signal: a ridge fit to each candidate on the oldest third of the training eras, scored
    by per-era CORR with the main target on the eras from an embargo after them up to the middle.
    (The most correlated candidate tends to be the one sharing the main target's noise.) Every CV
    fold trains on those eras, so the choice uses nothing a fold scores; with too few eras for both
    windows, the most correlated candidate is taken.
    """
    candidates = aux_targets(frame, main, horizon)
    if len(candidates) < 2:
        return candidates[0] if candidates else None
    eras = frame.era_order
    fit_eras = eras[: len(eras) // 3]
    score_eras = eras[len(fit_eras) + default_embargo(candidates) : len(eras) // 2]
    if len(fit_eras) < 2 or len(score_eras) < 2:
        return str(frame.targets[candidates].corrwith(frame.targets[main]).idxmax())
    fit_rows = spread_rows(frame.select_eras(fit_eras), AUX_CHOICE_ROWS)
    labels = np.nan_to_num(frame.targets[candidates].to_numpy(np.float32) - 0.5)
    gram = AUX_CHOICE_RIDGE * len(fit_rows) * np.eye(len(frame.feature_names))
    moments = np.zeros((len(frame.feature_names), len(candidates)))
    for chunk in np.array_split(fit_rows, max(1, len(fit_rows) // 20_000)):
        x = scaled_bins(frame.features[chunk])
        gram += x.T @ x
        moments += x.T @ labels[chunk]
    weights = np.linalg.solve(gram, moments).astype(np.float32)
    score_rows = spread_rows(frame.select_eras(score_eras), AUX_CHOICE_ROWS)
    predictions = scaled_bins(frame.features[score_rows]) @ weights
    scores = per_era_corr_columns(
        predictions, frame.targets[main].to_numpy()[score_rows], frame.eras[score_rows]
    ).mean()
    return candidates[int(np.argmax(scores.to_numpy()))]
