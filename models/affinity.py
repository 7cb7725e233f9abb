"""A user's affinity for tags and creators, fading as it ages: "what this person likes now".

Every swipe adds its `models.features.affinity_weight` (a play its watched fraction, an early
skip -0.5, a like 1, a follow 2, "not interested" -2, a block -3, ...) to the user's score for
the video's creator and each of its tags; a score halves every `HALF_LIFE_S` of event time.
The features flow keeps the same weights over fixed windows (`user_affinity` in ClickHouse);
each API replica keeps this decayed form per user in memory, from the event topics it follows,
and reads it for every candidate of a feed: two ranker features and a pre-rank term
(`prior`). Five finished videos of a topic in a session make its score about 5; a few early
skips of another push that one below 0.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

HALF_LIFE_S = 1800.0  # a score halves in half an hour of event time
MAX_KEYS = 256  # per user and kind: past twice this, the weakest half is dropped
SCALE = 4.0  # `prior`: a summed score of 4 is tanh(1) = 0.76

Codes = npt.NDArray[np.int64]
Floats = npt.NDArray[np.float64]


class Affinity:
    """One user's decayed scores by key (tag or creator codes). One thread adds, any reads:
    a read works on a copy of the dict (atomic in CPython)."""

    __slots__ = ("_scores",)

    def __init__(self) -> None:
        self._scores: dict[int, tuple[float, float]] = {}  # key -> (score, as of event time)

    def __len__(self) -> int:
        return len(self._scores)

    def add(self, key: int, weight: float, at_s: float) -> None:
        """A swipe of `weight` at event time `at_s` on something of `key`."""
        score, since = self._scores.get(key, (0.0, at_s))
        if at_s >= since:
            self._scores[key] = (score * _fade(at_s - since) + weight, at_s)
        else:  # an event older than the score (out of order): faded to the score's time
            self._scores[key] = (score + weight * _fade(since - at_s), since)
        if len(self._scores) > 2 * MAX_KEYS:
            self._prune(at_s)

    def lookup(self, keys: Codes, now_s: float) -> Floats:
        """The score of each key at `now_s` (0 for keys never seen; negative keys: none)."""
        scores = self._scores.copy()
        if not scores:
            return np.zeros(len(keys), dtype=np.float64)
        known = np.fromiter(scores, np.int64, len(scores))
        values = np.array(list(scores.values()), dtype=np.float64).reshape(-1, 2)
        faded = values[:, 0] * 0.5 ** (np.maximum(now_s - values[:, 1], 0.0) / HALF_LIFE_S)
        order = np.argsort(known)
        known, faded = known[order], faded[order]
        at = np.minimum(np.searchsorted(known, keys), len(known) - 1)
        return np.where(known[at] == keys, faded[at], 0.0)

    def _prune(self, now_s: float) -> None:
        keys = np.fromiter(self._scores, np.int64, len(self._scores))
        strength = np.abs(self.lookup(keys, now_s))
        keep = keys[np.argsort(-strength, kind="stable")[:MAX_KEYS]]
        self._scores = {int(k): self._scores[int(k)] for k in keep}


def prior(tag: Floats, creator: Floats) -> Floats:
    """The pre-rank term of a candidate's tag and creator affinity, in (-1, 1)."""
    result: Floats = np.tanh((tag + creator) / SCALE)
    return result


def _fade(seconds: float) -> float:
    return float(0.5 ** (seconds / HALF_LIFE_S))
