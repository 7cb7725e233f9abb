"""Offline evaluation of rankers on logged impressions, one ranked list per feed request.

Pure functions over numpy arrays: `groups` are the sizes of consecutive runs of rows that
belong to one request (as LightGBM's ranking objectives take them), `relevance` is the graded
outcome of each row, `scores` what a ranker gave it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from swipeloop.arrays import Floats, Ints


def ndcg_at_k(groups: Ints, relevance: Floats, scores: Floats, k: int = 10) -> float | None:
    """Mean NDCG@k over the requests that have at least one relevant row (None without
    any): the logged items of each request re-ranked by `scores`, gains 2^rel - 1, ties in
    logged order."""
    total, counted = 0.0, 0
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    for start, end in _runs(groups):
        rel = relevance[start:end]
        if not rel.any():
            continue
        order = np.argsort(-scores[start:end], kind="stable")[:k]
        ideal = np.sort(rel)[::-1][:k]
        dcg = float(((2.0 ** rel[order] - 1) * discounts[: len(order)]).sum())
        idcg = float(((2.0**ideal - 1) * discounts[: len(ideal)]).sum())
        total += dcg / idcg
        counted += 1
    return total / counted if counted else None


def auc(labels: npt.NDArray[np.integer], scores: Floats) -> float | None:
    """Area under the ROC curve (None with a single class); tied scores share their rank."""
    pos = int(labels.sum())
    neg = len(labels) - pos
    if pos == 0 or neg == 0:
        return None
    order = np.argsort(scores, kind="stable")
    ranks = np.empty(len(scores), dtype=np.float64)
    ranks[order] = np.arange(1, len(scores) + 1)
    # average ranks over ties
    _, inverse = np.unique(scores, return_inverse=True)
    mean_rank = np.bincount(inverse, weights=ranks) / np.bincount(inverse)
    ranks = mean_rank[inverse]
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def watch_at_k(groups: Ints, watch_s: Floats, scores: Floats, k: int = 10) -> float | None:
    """Mean over requests of the seconds watched of the k logged items ranked first by
    `scores` (expected watch time of the top k, on what was logged)."""
    runs = list(_runs(groups))
    if not runs:
        return None
    total = 0.0
    for start, end in runs:
        order = np.argsort(-scores[start:end], kind="stable")[:k]
        total += float(watch_s[start:end][order].sum())
    return total / len(runs)


def _runs(groups: Ints) -> list[tuple[int, int]]:
    ends = np.cumsum(groups)
    return list(zip((ends - groups).tolist(), ends.tolist(), strict=True))
