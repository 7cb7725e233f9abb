"""A user's affinity for tags and creators, fading as it ages: "what this person likes now".

Every swipe adds its `models.features.weights.affinity_weight` (a play its watched fraction, an
early skip -0.5, a like 1, a follow 2, "not interested" -2, a block -3, ...) to the user's score for
the video's creator and each of its tags; a score halves every `HALF_LIFE_S` of event time.
The features flow keeps the same weights over fixed windows (`user_affinity` in ClickHouse);
each API replica keeps this decayed form per user in memory, from the event topics it follows,
and reads it for every candidate of a feed: two ranker features and a pre-rank term
(`prior`). Five finished videos of a topic in a session make its score about 5; a few early
skips of another push that one below 0.

`Momentum` is the same weights over everyone: how each tag is taken now against how it
usually is, so that a topic everyone suddenly wants (a meme, a news story) rises in every
feed within a minute, before any one person's affinity or any item's counts show it.
"""

from __future__ import annotations

import numpy as np

from swipeloop.arrays import Codes, Floats

HALF_LIFE_S = 1800.0  # a score halves in half an hour of event time
MAX_KEYS = 256  # per user and kind: past twice this, the weakest half is dropped
SCALE = 4.0  # `prior`: a summed score of 4 is tanh(1) = 0.76
NOW_S, USUAL_S = 60.0, 3600.0  # `Momentum`: the half-lives of "now" and of "usually"
MIN_SWIPES = 5.0  # `Momentum`: fewer recent swipes on a tag than this say nothing


class Affinity:
    """One user's decayed scores by key (tag or creator codes). One thread adds, any reads:
    a read works on a copy of the dict (atomic in CPython)."""

    __slots__ = ("_half_life_s", "_max_keys", "_scores")

    def __init__(self, half_life_s: float = HALF_LIFE_S, max_keys: int = MAX_KEYS) -> None:
        self._half_life_s, self._max_keys = half_life_s, max_keys
        self._scores: dict[int, tuple[float, float]] = {}  # key -> (score, as of event time)

    def __len__(self) -> int:
        return len(self._scores)

    def keys(self) -> Codes:
        """The keys with a score (a copy)."""
        return np.fromiter(self._scores.copy(), np.int64)

    def add(self, key: int, weight: float, at_s: float) -> None:
        """A swipe of `weight` at event time `at_s` on something of `key`."""
        score, since = self._scores.get(key, (0.0, at_s))
        if at_s >= since:
            self._scores[key] = (score * self._fade(at_s - since) + weight, at_s)
        else:  # an event older than the score (out of order): faded to the score's time
            self._scores[key] = (score + weight * self._fade(since - at_s), since)
        if len(self._scores) > 2 * self._max_keys:
            self._prune(at_s)

    def lookup(self, keys: Codes, now_s: float) -> Floats:
        """The score of each key at `now_s` (0 for keys never seen; negative keys: none)."""
        scores = self._scores.copy()
        if not scores:
            return np.zeros(len(keys), dtype=np.float64)
        known = np.fromiter(scores, np.int64, len(scores))
        values = np.array(list(scores.values()), dtype=np.float64).reshape(-1, 2)
        faded = values[:, 0] * 0.5 ** (np.maximum(now_s - values[:, 1], 0.0) / self._half_life_s)
        order = np.argsort(known)
        known, faded = known[order], faded[order]
        at = np.minimum(np.searchsorted(known, keys), len(known) - 1)
        return np.where(known[at] == keys, faded[at], 0.0)

    def _prune(self, now_s: float) -> None:
        keys = np.fromiter(self._scores, np.int64, len(self._scores))
        strength = np.abs(self.lookup(keys, now_s))
        keep = keys[np.argsort(-strength, kind="stable")[: self._max_keys]]
        self._scores = {int(k): self._scores[int(k)] for k in keep}

    def _fade(self, seconds: float) -> float:
        return float(0.5 ** (seconds / self._half_life_s))


class Momentum:
    """Everyone's swipes per tag: the mean affinity weight of a tag's swipes in the last
    minute or so (half-life `NOW_S`) less its mean over the last hours (`USUAL_S`); 0 for a
    tag with fewer than `MIN_SWIPES` recent swipes. One thread adds, any reads."""

    def __init__(self, max_keys: int = 4096) -> None:
        self._now = (Affinity(NOW_S, max_keys), Affinity(NOW_S, max_keys))  # (weights, swipes)
        self._usual = (Affinity(USUAL_S, max_keys), Affinity(USUAL_S, max_keys))

    def add(self, key: int, weight: float, at_s: float) -> None:
        """Someone swiped something of `key` (a tag) with this weight at event time `at_s`."""
        for weights, swipes in (self._now, self._usual):
            weights.add(key, weight, at_s)
            swipes.add(key, 1.0, at_s)

    def lookup(self, keys: Codes, now_s: float) -> Floats:
        """Each key's mean weight now less its usual mean (0: too few recent swipes)."""
        (now_w, now_n), (usual_w, usual_n) = self._now, self._usual
        tags = now_n.keys()  # the tags swiped lately (few), computed once, then gathered
        if not len(tags) or not len(keys):
            return np.zeros(len(keys), dtype=np.float64)
        recent = now_n.lookup(tags, now_s)
        usual = usual_n.lookup(tags, now_s)
        enough = recent >= MIN_SWIPES
        mean_now = now_w.lookup(tags, now_s) / np.where(enough, recent, 1.0)
        mean_usual = usual_w.lookup(tags, now_s) / np.maximum(usual, 1.0)
        by_tag = np.zeros(max(int(tags.max()), int(keys.max())) + 1, dtype=np.float64)
        by_tag[tags] = np.where(enough, mean_now - mean_usual, 0.0)
        result: Floats = np.where(keys >= 0, by_tag[np.maximum(keys, 0)], 0.0)
        return result


def prior(tag: Floats, creator: Floats) -> Floats:
    """The pre-rank term of a candidate's tag and creator affinity, in (-1, 1)."""
    result: Floats = np.tanh((tag + creator) / SCALE)
    return result
