"""Pure feature functions: the one definition used by the flows, the trainer and the API.

Engagement is counted per event into `COUNTERS` (a vector per item, creator or user and
time bucket; `models.windows` sums the buckets of a window). Rates are derived from the
counters, Bayesian-smoothed toward a prior so that three plays and one like is not a
33 % like rate.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar, get_args

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from swipeloop.contracts import Engagement, EventKind, Item, ItemFeatures

Floats = npt.NDArray[np.float64]

COUNTERS: tuple[str, ...] = tuple(Engagement.__struct_fields__)
C = {name: i for i, name in enumerate(COUNTERS)}
PLAY_KINDS = frozenset({"watch", "skip"})  # a play ends with one of these, with its watch_ms
EARLY_SKIP_MS = 2000
EARLY_SKIP_FRACTION = 0.10
POSITIVE_KINDS = frozenset({"like", "share", "comment", "follow", "loop"})
NEGATIVE_KINDS = frozenset({"not_interested", "block"})
POSITIVE_WATCH_MS = 5000

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
    fraction = np.minimum(watch_ms / np.where(known, duration_ms, 1.0), 1.0)
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
    fraction = np.minimum(watch_ms / np.where(known, duration_ms, 15_000.0), 1.0)
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


SESSION_IDLE_S = 30 * 60  # a session with no event for this long is over


@dataclass
class Session:
    """A user's current session, as far as events tell: its span, its size, and how many
    plays in a row ended in an early skip (a user about to leave)."""

    session_id: str = ""
    started_s: float = 0.0
    last_s: float = 0.0
    events: int = 0
    plays: int = 0
    skip_streak: int = 0

    @property
    def length_s(self) -> float:
        """Seconds from the session's first event to its last."""
        return self.last_s - self.started_s


def advance_session(
    s: Session,
    session_id: str,
    ts_s: float,
    kind: str,
    watch_ms: int,
    duration_ms: int | None,
) -> Session:
    """Count one event into the user's session; a new session id (or a long pause) starts
    a new one. Events arriving out of order widen the span; the streak follows arrival."""
    if session_id != s.session_id or ts_s - s.last_s > SESSION_IDLE_S:
        s = Session(session_id=session_id, started_s=ts_s, last_s=ts_s)
    s.started_s = min(s.started_s, ts_s)
    s.last_s = max(s.last_s, ts_s)
    s.events += 1
    if kind in PLAY_KINDS:
        s.plays += 1
        s.skip_streak = s.skip_streak + 1 if watch_ms < early_skip_ms(duration_ms) else 0
    elif kind in POSITIVE_KINDS:
        s.skip_streak = 0
    return s


# Rates per play, smoothed toward a prior worth PRIOR_PLAYS plays.
PRIOR_PLAYS = 20.0
PRIORS = {
    "completion": 0.5,
    "early_skips": 0.3,
    "loops": 0.1,
    "likes": 0.05,
    "shares": 0.01,
    "comments": 0.01,
    "follows": 0.005,
    "not_interested": 0.01,
}


R = TypeVar("R", float, Floats)


def smoothed_rate(count: R, plays: R, prior: float, strength: float = PRIOR_PLAYS) -> R:
    """(count + prior·strength) / (plays + strength): the prior until plays outweigh it (of
    one count, or of arrays of them)."""
    return (count + prior * strength) / (plays + strength)


def rates(e: Engagement) -> dict[str, float]:
    """Smoothed per-play rates of a window's counters, and the mean watch time."""
    out = {
        f"{name}_rate": smoothed_rate(getattr(e, name), e.plays, prior)
        for name, prior in PRIORS.items()
    }
    out["watch_s_per_play"] = e.watch_ms / 1000.0 / e.plays if e.plays else 0.0
    return out


COUNTS_DTYPE = np.dtype("<f4")  # how `ItemFeatures.counts` is packed


def counts_of(f: ItemFeatures) -> npt.NDArray[np.float32]:
    """An item's live counters: a row per window, a column per `COUNTERS` entry."""
    return np.frombuffer(f.counts, COUNTS_DTYPE).reshape(len(f.window_s), len(COUNTERS))


def packed_counts(rows: Floats) -> bytes:
    """Counter rows as `ItemFeatures.counts`."""
    return np.ascontiguousarray(rows, COUNTS_DTYPE).tobytes()


# The windows a ranker row and the trending score read, in this order (`window_counts`).
RANK_WINDOWS: tuple[int, ...] = (3600, 300, 86400)
HOUR, RECENT, DAY = range(len(RANK_WINDOWS))


def window_counts(f: ItemFeatures | None) -> npt.NDArray[np.float32]:
    """An item's counters in the `RANK_WINDOWS` (a row each; zeros where it has none)."""
    out = np.zeros((len(RANK_WINDOWS), len(COUNTERS)), dtype=np.float32)
    if f is not None:
        counts = counts_of(f)
        for row, length in enumerate(RANK_WINDOWS):
            if length in f.window_s:
                out[row] = counts[f.window_s.index(length)]
    return out


def _rate(counts: npt.NDArray[np.float32], name: str) -> Floats:
    """A smoothed per-play rate over rows of counters."""
    count = counts[..., C[name]].astype(np.float64)
    return smoothed_rate(count, counts[..., C["plays"]].astype(np.float64), PRIORS[name])


def trending_scores(
    counts: npt.NDArray[np.float32], as_of_s: Floats, now_s: float | Floats
) -> Floats:
    """Plays, likes and completion of the last hour, weighted toward the last 5 minutes and
    decayed by how old the newest counted event is (hours); 0 for an item without live
    features (`as_of_s` NaN). `counts` is (items, RANK_WINDOWS, COUNTERS)."""
    hour, recent = counts[:, HOUR], counts[:, RECENT]
    live = ~np.isnan(as_of_s)
    age_h = np.maximum(now_s - np.where(live, as_of_s, now_s), 0.0) / 3600.0
    raw = (
        np.log1p(hour[:, C["plays"]])
        + 2.0 * np.log1p(recent[:, C["plays"]])
        + 2.0 * np.log1p(hour[:, C["likes"]] + hour[:, C["shares"]])
        + _rate(hour, "completion")
        - _rate(hour, "early_skips")
    )
    return np.where(live, raw / (1.0 + age_h), 0.0)


def trending_score(f: ItemFeatures | None, now: datetime) -> float:
    """One item's `trending_scores`."""
    as_of = np.array([f.as_of.timestamp() if f is not None else np.nan])
    return float(trending_scores(window_counts(f)[None], as_of, now.timestamp())[0])


FEATURE_NAMES: tuple[str, ...] = (
    "ann_score",
    "trending",
    "plays_1h",
    "plays_5m",
    "impressions_1h",
    "completion_rate_1h",
    "early_skip_rate_1h",
    "like_rate_1h",
    "share_rate_1h",
    "loop_rate_1h",
    "plays_24h",
    "like_rate_24h",
    "age_hours",
    "duration_s",
    "from_ann",
    "from_trending",
    "from_fresh",
    "covisit",  # co-visited with the user's last watched videos (models.covisit), 0-1
    "tag_affinity",  # the user's decayed affinity for the video's tag (models.affinity)
    "creator_affinity",  # ... and for its creator
    "tag_momentum",  # how everyone takes the video's tag now against usually (a burst)
)


def ranking_matrix(
    counts: npt.NDArray[np.float32],
    as_of_s: Floats,
    created_s: Floats,
    duration_ms: Floats,
    ann_score: Floats,
    source: npt.NDArray[np.str_],
    now_s: float | Floats,
    covisit: Floats | None = None,
    tag_affinity: Floats | None = None,
    creator_affinity: Floats | None = None,
    tag_momentum: Floats | None = None,
) -> Floats:
    """The ranker's input rows, one per candidate (columns: `FEATURE_NAMES`); logged with each
    impression exactly as served. Arrays are per candidate; `counts` as in `trending_scores`;
    `now_s` the request's time (or each row's, recomputing rows of many requests); the
    request-time signals of the user (co-visitation, affinities) are 0 when not given."""
    none = np.zeros(len(counts))
    hour, recent, day = counts[:, HOUR], counts[:, RECENT], counts[:, DAY]
    return np.column_stack(
        [
            ann_score,
            trending_scores(counts, as_of_s, now_s),
            hour[:, C["plays"]],
            recent[:, C["plays"]],
            hour[:, C["impressions"]],
            _rate(hour, "completion"),
            _rate(hour, "early_skips"),
            _rate(hour, "likes"),
            _rate(hour, "shares"),
            _rate(hour, "loops"),
            day[:, C["plays"]],
            _rate(day, "likes"),
            np.maximum(now_s - created_s, 0.0) / 3600.0,
            duration_ms / 1000.0,
            source == "ann",
            source == "trending",
            source == "fresh",
            none if covisit is None else covisit,
            none if tag_affinity is None else tag_affinity,
            none if creator_affinity is None else creator_affinity,
            none if tag_momentum is None else tag_momentum,
        ]
    )


def logged_rows(column: pa.ChunkedArray) -> npt.NDArray[np.float32]:
    """A column of logged feature rows (ClickHouse `Array(Float32)`, as Arrow) as a matrix
    with a row each."""
    if not len(column):
        return np.zeros((0, len(FEATURE_NAMES)), np.float32)
    rows = column.combine_chunks()
    assert isinstance(rows, pa.ListArray)
    flat = rows.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    matrix: npt.NDArray[np.float32] = flat.reshape(len(rows), len(FEATURE_NAMES))
    return matrix


def ranking_features(
    item: Item,
    features: ItemFeatures | None,
    ann_score: float,
    source: str,
    now: datetime,
    covisit: float = 0.0,
) -> list[float]:
    """One candidate's `ranking_matrix` row."""
    row = ranking_matrix(
        window_counts(features)[None],
        np.array([features.as_of.timestamp() if features is not None else np.nan]),
        np.array([item.created_at.timestamp()]),
        np.array([float(item.duration_ms)]),
        np.array([ann_score]),
        np.array([source]),
        now.timestamp(),
        np.array([covisit]),
    )
    out: list[float] = row[0].tolist()
    return out


# Staged exposure of new videos: each stage's audience decides whether the video is shown to
# the next, ten times larger one. A stage's reaction is good when its plays are finished and
# liked above the catalogue's prior (smoothed, so a handful of plays decides nothing).
EXPOSURE_STAGES: tuple[int, ...] = (200, 2_000, 20_000)  # impressions allowed per stage
PROMOTE_REACTION = 0.6  # completion rate + 5 x like rate at which a stage's audience promotes
FRESH_HOURS = 48.0  # how long an upload counts as new


def exposure_stages(day: npt.NDArray[np.float32]) -> npt.NDArray[np.int64]:
    """How far each new video has been promoted, from its last day's counters (rows of
    `COUNTERS`; 0: its first audience has not seen it yet)."""
    impressions = day[:, C["impressions"]]
    reaction = _rate(day, "completion") + 5.0 * _rate(day, "likes")
    stage = np.zeros(len(day), dtype=np.int64)
    promoted = np.ones(len(day), dtype=np.bool_)
    for cap in EXPOSURE_STAGES[:-1]:
        # a stage promotes once its audience has watched, and liked it enough
        promoted &= (impressions >= cap) & (reaction >= PROMOTE_REACTION)
        stage += promoted
    return stage


def exposure_rooms(day: npt.NDArray[np.float32]) -> Floats:
    """Impressions each new video may still get at its stage (<= 0: it waits, or is done)."""
    caps = np.asarray(EXPOSURE_STAGES, dtype=np.float64)
    return caps[exposure_stages(day)] - day[:, C["impressions"]]


def exposure_stage(features: ItemFeatures | None) -> int:
    """One video's `exposure_stages`."""
    return int(exposure_stages(window_counts(features)[None, DAY])[0])


def reaction_draws(day: npt.NDArray[np.float32], rng: np.random.Generator) -> Floats:
    """One Thompson draw per new video of how well its audience takes to it: from
    Beta(1 + completed, 1 + plays - completed), its plays' completion (loops included,
    capped at one per play) out of its plays, from its last day's counters (rows of
    `COUNTERS`). An untested video is drawn anywhere in [0, 1], one its first viewers
    finished mostly high, one they skipped mostly low: the fresh pool's order, so that
    exploration spends its slots where a new video is proving itself."""
    plays = day[:, C["plays"]].astype(np.float64)
    completed = np.clip(day[:, C["completion"]].astype(np.float64), 0.0, plays)
    draws: Floats = rng.beta(1.0 + completed, 1.0 + plays - completed)
    return draws


def exposure_room(features: ItemFeatures | None) -> float:
    """One video's `exposure_rooms`."""
    return float(exposure_rooms(window_counts(features)[None, DAY])[0])
