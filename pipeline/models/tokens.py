"""TSMixer-Ext's tokens: which feature columns each token of the network reads.

Numerai gives a model only the current era's rows, so TSMixer's time axis becomes the axis of
feature-group tokens (see /work/shared/TSMIXER.md). Plain numpy: the token layout is chosen from
the fit eras before any network exists, and travels as lists of column indices into the export.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from pipeline.clustering import cluster_labels
from pipeline.data import FEATURE_GROUPS, EraFrame, release_pages

# Sets of features.json that are selections or releases, not groups.
NON_GROUP_SETS = frozenset({"small", "medium", "all", "sunshine", "rain", "midnight", "shadow"})
# Rows of the fit eras used to measure feature correlations for the token clusters (every k-th row).
CLUSTER_ROWS = 60_000


def token_groups(
    feature_names: Sequence[str], feature_sets: Mapping[str, Sequence[str]] | None = None, max_group_size: int = 32
) -> list[list[int]]:
    """Column indices of each token: named feature groups, large ones split into chunks.

    Each feature goes to the first group that lists it; features of no group are chunked together,
    so data without groups falls back to contiguous chunks of at most `max_group_size` features.
    """
    if max_group_size < 1:
        raise ValueError(f"max_group_size must be at least 1, got {max_group_size}")
    position = {name: i for i, name in enumerate(feature_names)}
    sets = dict(feature_sets or {})
    if any(name in sets for name in FEATURE_GROUPS):
        names = [name for name in FEATURE_GROUPS if name in sets]
    else:
        names = [name for name in sets if name not in NON_GROUP_SETS and not name.endswith("_features")]
    taken = np.zeros(len(feature_names), dtype=bool)
    groups: list[list[int]] = []
    for name in names:
        members = sorted({position[f] for f in sets[name] if f in position and not taken[position[f]]})
        if members:
            taken[members] = True
            groups.append(members)
    rest = np.flatnonzero(~taken).tolist()
    if rest:
        groups.append(rest)
    tokens: list[list[int]] = []
    for members in groups:
        n_chunks = math.ceil(len(members) / max_group_size)
        tokens.extend(chunk.tolist() for chunk in np.array_split(np.asarray(members), n_chunks))
    return tokens


def cluster_tokens(features: np.ndarray, groups: Sequence[Sequence[int]], token_size: int) -> list[list[int]]:
    """Tokens of correlated features: each group's columns clustered by average linkage on 1 - |corr|
    into ceil(size / token_size) clusters, clusters over 2 * token_size split into chunks.

    Numerai's features come in clusters of strongly correlated columns inside each group, in no
    particular column order; a token that lines up with a cluster can carry its mean (and nonlinear
    functions of it) in one channel. `features` are rows of the fit eras only.
    """
    if token_size < 1:
        raise ValueError(f"token_size must be at least 1, got {token_size}")
    tokens: list[list[int]] = []
    for members in map(np.asarray, groups):
        n_clusters = math.ceil(len(members) / token_size)
        if n_clusters > 1:
            labels = cluster_labels(features[:, members], n_clusters=n_clusters)
            clusters = [members[labels == label] for label in np.unique(labels)]
        else:
            clusters = [members]
        for cluster in clusters:
            n_chunks = math.ceil(len(cluster) / (2 * token_size))
            tokens.extend(chunk.tolist() for chunk in np.array_split(cluster, n_chunks))
    return tokens


def fit_tokens(
    frame: EraFrame,
    fit_eras: Sequence[str],
    feature_sets: Mapping[str, Sequence[str]] | None,
    token_size: int,
    clustered: bool,
) -> list[list[int]]:
    """The tokens of a network fitted on `fit_eras` of `frame`: with `clustered`, each named group's
    columns clustered on at most CLUSTER_ROWS rows of those eras only (`cluster_tokens`); otherwise
    contiguous chunks of at most `token_size` features of each group (`token_groups`)."""
    if not clustered:
        return token_groups(frame.feature_names, feature_sets, token_size)
    groups = token_groups(frame.feature_names, feature_sets, frame.features.shape[1])
    rows = frame.select_eras(fit_eras)
    rows = rows[:: math.ceil(len(rows) / CLUSTER_ROWS)]
    tokens = cluster_tokens(frame.features[rows], groups, token_size)
    release_pages(frame.features)
    return tokens
