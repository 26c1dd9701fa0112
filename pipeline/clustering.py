"""Clusters of correlated feature columns, shared by the feature pipeline and TSMixer-Ext's tokens.

A module of its own so that neither side imports the other: the feature pipeline trains torch
group mixers (`pipeline.models.networks`), and the networks' tokens need these clusters.
"""

from __future__ import annotations

import numpy as np
from sklearn.cluster import AgglomerativeClustering


def cluster_labels(x: np.ndarray, n_clusters: int | None = None, distance: float | None = None) -> np.ndarray:
    """Cluster label of each column of `x`: average linkage on 1 - |correlation|, cut at
    `n_clusters` clusters or at `distance`. Correlations in float32, never a float64 copy of `x`."""
    z = x.astype(np.float32)
    z -= z.mean(axis=0)
    z /= np.maximum(z.std(axis=0), 1e-6)
    dist = 1.0 - np.abs(z.T @ z / len(z))
    np.fill_diagonal(dist, 0.0)
    return AgglomerativeClustering(
        n_clusters=n_clusters, metric="precomputed", linkage="average", distance_threshold=distance
    ).fit_predict(np.clip(dist, 0.0, 1.0))
