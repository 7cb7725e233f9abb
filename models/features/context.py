"""Completion by network type and video length: how much of a video of this length people
watch on this kind of network (a long video on a slow cellular link is abandoned; on wifi it
is not). Counted from every play that carries its phone's context, by each feed replica as the
swipes arrive (and from ClickHouse at its start); a feature of the ranker for the user's
current network (`ranking_matrix`'s `context_completion`)."""

from __future__ import annotations

import numpy as np

from swipeloop.arrays import Floats, Ints
from swipeloop.contracts import NETWORKS

LENGTH_EDGES_S = (15.0, 30.0, 60.0, 180.0)  # 5 length classes: < 15 s, ..., >= 180 s
PRIOR_PLAYS = 20.0  # a class with few plays leans on the mean completion of all


def length_class(duration_ms: Floats) -> Ints:
    """Each video's length class (0-4)."""
    return np.searchsorted(np.array(LENGTH_EDGES_S) * 1000.0, duration_ms, side="right")


class ContextCompletion:
    """Summed completion and plays per (network, length class)."""

    def __init__(self) -> None:
        shape = (len(NETWORKS), len(LENGTH_EDGES_S) + 1)
        self.completion = np.zeros(shape)
        self.plays = np.zeros(shape)

    def add(self, network: str, duration_ms: float, completion: float, plays: float = 1) -> None:
        """`plays` plays of a video this long on `network`, `completion` their summed watched
        share (each at most 1)."""
        row = NETWORKS.index(network)
        column = int(length_class(np.array([duration_ms]))[0])
        self.completion[row, column] += completion
        self.plays[row, column] += plays

    def rates(self, network: str, duration_ms: Floats) -> Floats:
        """The completion rate on `network` of each video length given (0 for an unknown
        network: the user's phone never said)."""
        if network not in NETWORKS:
            return np.zeros(len(duration_ms))
        total = self.plays.sum()
        mean = self.completion.sum() / total if total else 0.0
        row = NETWORKS.index(network)
        rate = (self.completion[row] + PRIOR_PLAYS * mean) / (self.plays[row] + PRIOR_PLAYS)
        return np.asarray(rate[length_class(duration_ms)], dtype=np.float64)
