"""What one event counts for: the engagement counters it adds to and how much it says
"more of this" or "less"; the one definition the flows, the trainer and the API share.

Engagement is counted per event into `COUNTERS` (a vector per item, creator or user and
time bucket; `models.windows` sums the buckets of a window).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import get_args

import numpy as np
import numpy.typing as npt

from swipeloop.arrays import Floats
from swipeloop.contracts import Engagement, EventKind

COUNTERS: tuple[str, ...] = tuple(Engagement.__struct_fields__)
C = {name: i for i, name in enumerate(COUNTERS)}
PLAY_KINDS = frozenset({"watch", "skip"})  # a play ends with one of these, with its watch_ms
EARLY_SKIP_MS = 2000
EARLY_SKIP_FRACTION = 0.10
POSITIVE_KINDS = frozenset({"like", "share", "comment", "follow", "loop"})
NEGATIVE_KINDS = frozenset({"not_interested", "block"})
POSITIVE_WATCH_MS = 5000
FRACTION_STEP = 2.0**-20  # the grid a watched fraction is kept on (`on_grid`)


# the counter each action kind increments (plays and impressions are handled apart)
_ACTION_COUNTER = {
    "loop": C["loops"],
    "like": C["likes"],
    "share": C["shares"],
    "comment": C["comments"],
    "follow": C["follows"],
    "not_interested": C["not_interested"],
    "block": C["blocks"],
}


def early_skip_ms(duration_ms: int | None) -> float:
    """A play shorter than this is an early skip: 2 s, or 10 % of a video shorter than 20 s.

    Length-corrected: a 6 s clip skipped after 1 s was watched for a sixth of its length
    and is not an early skip; a 10-minute video is not held to 10 % (60 s), only to 2 s.
    """
    if not duration_ms:
        return EARLY_SKIP_MS
    return min(EARLY_SKIP_MS, EARLY_SKIP_FRACTION * duration_ms)


_KIND_CODE = {kind: i for i, kind in enumerate(get_args(EventKind))}
_ACTION_COLUMN = np.full(len(_KIND_CODE), -1, dtype=np.int64)  # by kind code
for _kind, _column in _ACTION_COUNTER.items():
    _ACTION_COLUMN[_KIND_CODE[_kind]] = _column
_AFFINITY = {
    "loop": 0.5,
    "like": 1.0,
    "comment": 1.0,
    "share": 1.5,
    "follow": 2.0,
    "not_interested": -2.0,
    "block": -3.0,
    "unfollow": -2.0,  # takes back what the follow gave
    "unblock": 3.0,
}
_AFFINITY_BY_CODE = np.zeros(len(_KIND_CODE))
for _kind, _weight in _AFFINITY.items():
    _AFFINITY_BY_CODE[_KIND_CODE[_kind]] = _weight


def kind_codes(kinds: Sequence[str]) -> npt.NDArray[np.int64]:
    """Event kinds as small ints, for the vectorized functions below."""
    return np.fromiter(map(_KIND_CODE.__getitem__, kinds), dtype=np.int64, count=len(kinds))


def _early(watch_ms: Floats, duration_ms: Floats) -> npt.NDArray[np.bool_]:
    """`early_skip_ms`, vectorized (duration 0: unknown)."""
    limit = np.minimum(EARLY_SKIP_MS, EARLY_SKIP_FRACTION * duration_ms)
    return watch_ms < np.where(duration_ms > 0, limit, EARLY_SKIP_MS)


def on_grid(fractions: Floats) -> Floats:
    """Fractions rounded to a multiple of `FRACTION_STEP` (about 1e-6).

    Counters on this grid add and subtract exactly in float64 (up to 2**33), so a window's
    total does not depend on the order its events came and went in: a flow recovered from a
    snapshot, or a cluster that counted in other batches, writes the same bits as a run that
    was never interrupted.
    """
    return np.round(fractions / FRACTION_STEP) * FRACTION_STEP


def engagement_matrix(
    codes: npt.NDArray[np.int64], watch_ms: Floats, duration_ms: Floats
) -> Floats:
    """What each event adds to the counters of its item, creator and user: a row per event,
    a column per `COUNTERS` entry (`duration_ms` 0: unknown)."""
    out = np.zeros((len(codes), len(COUNTERS)))
    out[:, C["events"]] = 1.0
    out[:, C["impressions"]] = codes == _KIND_CODE["impression"]
    skip = codes == _KIND_CODE["skip"]
    play = (codes == _KIND_CODE["watch"]) | skip
    known = duration_ms > 0
    out[:, C["plays"]] = play
    out[:, C["watch_ms"]] = np.where(play, watch_ms, 0.0)
    fraction = on_grid(np.minimum(watch_ms / np.where(known, duration_ms, 1.0), 1.0))
    loop = codes == _KIND_CODE["loop"]  # a loop is one more full play of the video
    out[:, C["completion"]] = np.where(play & known, fraction, 0.0) + loop
    out[:, C["skips"]] = skip
    out[:, C["early_skips"]] = play & _early(watch_ms, duration_ms)
    column = _ACTION_COLUMN[codes]
    acted = np.nonzero(column >= 0)[0]
    out[acted, column[acted]] = 1.0
    return out


def engagement_delta(kind: str, watch_ms: int, duration_ms: int | None) -> list[float]:
    """What one event adds to the engagement counters of its item, creator and user."""
    row = engagement_matrix(
        kind_codes([kind]), np.array([float(watch_ms)]), np.array([float(duration_ms or 0)])
    )
    return [float(x) for x in row[0]]


def affinity_weights(codes: npt.NDArray[np.int64], watch_ms: Floats, duration_ms: Floats) -> Floats:
    """How much each event says "more of this creator / tag" (> 0) or "less" (< 0): a play by
    its watched fraction (an early skip: -0.5), an action by its kind."""
    play = (codes == _KIND_CODE["watch"]) | (codes == _KIND_CODE["skip"])
    known = duration_ms > 0
    fraction = on_grid(np.minimum(watch_ms / np.where(known, duration_ms, 15_000.0), 1.0))
    played = np.where(_early(watch_ms, duration_ms), -0.5, fraction)
    return np.where(play, played, _AFFINITY_BY_CODE[codes])


def affinity_weight(kind: str, watch_ms: int, duration_ms: int | None) -> float:
    """`affinity_weights` of one event."""
    weights = affinity_weights(
        kind_codes([kind]), np.array([float(watch_ms)]), np.array([float(duration_ms or 0)])
    )
    return float(weights[0])


def engagement_weight(kind: str, watch_ms: int) -> float:
    """How strongly an event says "more like this" (> 0) or "less like this" (< 0); 0: neutral."""
    if kind in POSITIVE_KINDS:
        return 1.0
    if kind in NEGATIVE_KINDS:
        return -1.0
    if kind == "skip" and watch_ms < EARLY_SKIP_MS:
        return -0.5
    if kind == "watch" and watch_ms >= POSITIVE_WATCH_MS:
        return min(watch_ms / 15_000, 1.0)
    return 0.0
