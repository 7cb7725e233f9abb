"""One contract per message: what phones send, what flows publish, what the API serves."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal, get_args

import msgspec

EventKind = Literal[
    "impression",
    "watch",
    "loop",
    "skip",
    "like",
    "share",
    "comment",
    "follow",
    "not_interested",
    "block",
    "unfollow",  # undoes a follow of the item's creator
    "unblock",  # undoes a block of the item's creator
]
ACTION_KINDS: frozenset[str] = frozenset(
    {"like", "share", "comment", "follow", "not_interested", "block", "unfollow", "unblock"}
)
CONTEXT_KINDS: frozenset[str] = frozenset({"impression", "watch", "loop", "skip"})

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
Millis = Annotated[int, msgspec.Meta(ge=0, le=86_400_000)]
AwareTime = Annotated[datetime, msgspec.Meta(tz=True)]


Network = Literal["wifi", "cellular", "ethernet", "offline", "unknown"]
NETWORKS: tuple[str, ...] = get_args(Network)
DeviceClass = Literal["phone", "tablet", "tv", "desktop", "other"]


class Context(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """What the phone knew about where it was when an event happened (every field optional)."""

    network: Network | None = None
    bandwidth_kbps: Annotated[int, msgspec.Meta(ge=0, le=10_000_000)] = 0  # 0: not measured
    country: Annotated[str, msgspec.Meta(pattern="^([A-Z]{2})?$")] = ""  # ISO 3166-1 alpha-2
    device_class: DeviceClass | None = None
    app_version: Annotated[str, msgspec.Meta(max_length=32)] = ""


class Event(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True, gc=False):
    """One swipe-level signal from a phone.

    Scalars (and a context of scalars) only, so it can be in no reference cycle: `gc=False`
    keeps the hundreds of events of a batch out of the cyclic collector's sight (fewer,
    shorter collections on ingest).
    """

    event_id: uuid.UUID
    user_id: Id
    item_id: Id
    kind: EventKind
    client_ts: AwareTime
    session_id: Id
    seq: Annotated[int, msgspec.Meta(ge=0)]
    watch_ms: Millis = 0
    request_id: str | None = None
    context: Context | None = None  # stored in events.context; feeds ranker features


class EventBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of POST /v1/events."""

    events: list[Event]


class ReceivedEvent(Event, frozen=True, kw_only=True, gc=False):
    """An event as stored on the broker: stamped by the server that accepted it.

    `ts_clamped` says the phone's clock was wrong (more than `MAX_CLOCK_AHEAD` ahead of the
    server, or before `EARLIEST`), so `client_ts` was set to `received_at`.
    """

    received_at: datetime
    ts_clamped: bool = False


MAX_CLOCK_AHEAD = timedelta(minutes=5)
# A phone whose clock was reset reports 1970: a client time before this is as wrong as one
# in the future (and outside what every time column of ClickHouse holds).
EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)


def clock_wrong(client_ts: datetime, received_at: datetime) -> bool:
    """The phone's clock cannot be trusted: ahead of the server, or before `EARLIEST`."""
    return client_ts - received_at > MAX_CLOCK_AHEAD or client_ts < EARLIEST


def stamp(ev: Event, received_at: datetime) -> ReceivedEvent:
    """The server's copy of an event: receive time, and a wrong client time clamped."""
    fields = msgspec.structs.asdict(ev)
    if clock_wrong(ev.client_ts, received_at):
        fields["client_ts"] = received_at
        return ReceivedEvent(**fields, received_at=received_at, ts_clamped=True)
    return ReceivedEvent(**fields, received_at=received_at)


_json = msgspec.json.Encoder()


class Stamper:
    """`stamp(ev, received_at)` as JSON for one request's events, fast.

    An event whose clock is fine becomes its own JSON plus the stamp fields, spliced on,
    which is what encoding `stamp(...)` gives, at a fraction of the cost (the hot path of
    ingest). A clamped event takes the full path.
    """

    def __init__(self, received_at: datetime) -> None:
        self._at = received_at
        self._latest_ok = received_at + MAX_CLOCK_AHEAD
        stamp_fields = _json.encode({"received_at": received_at, "ts_clamped": False})
        self._suffix = b"," + stamp_fields[1:]

    def json(self, ev: Event) -> bytes:
        """The stored event's JSON."""
        if not EARLIEST <= ev.client_ts <= self._latest_ok:
            return _json.encode(stamp(ev, self._at))
        return _json.encode(ev)[:-1] + self._suffix


# What an upload's time may be (within every time column of ClickHouse, DateTime's included).
UPLOADS_FROM = datetime(1970, 1, 2, tzinfo=UTC)
UPLOADS_UNTIL = datetime(2100, 1, 1, tzinfo=UTC)


class Item(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One uploaded video."""

    item_id: Id
    creator_id: Id
    duration_ms: Annotated[int, msgspec.Meta(gt=0, le=86_400_000)]
    tags: Annotated[
        list[Annotated[str, msgspec.Meta(max_length=64)]], msgspec.Meta(max_length=32)
    ] = []
    sound_id: str | None = None
    created_at: AwareTime
    deleted: bool = False  # taken down: kept on the compacted topic so every cache drops it

    def __post_init__(self) -> None:
        if not UPLOADS_FROM <= self.created_at < UPLOADS_UNTIL:
            raise ValueError(
                f"created_at {self.created_at.isoformat()} is outside "
                f"{UPLOADS_FROM.date()}..{UPLOADS_UNTIL.date()}"
            )


class ItemBatch(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The body of POST /v1/items."""

    items: list[Item]


class Engagement(msgspec.Struct, frozen=True):
    """Engagement counters of one entity in one window (`models.features.weights` says what
    counts).

    Positional order is `models.features.weights.COUNTERS`: `Engagement(*row)` builds one from
    a counter row."""

    impressions: float = 0.0
    plays: float = 0.0  # watch or skip events: a play ended, with its watch_ms
    watch_ms: float = 0.0
    completion: float = 0.0  # sum over plays of min(watch_ms / duration, 1), + 1 per loop
    early_skips: float = 0.0
    skips: float = 0.0
    loops: float = 0.0
    likes: float = 0.0
    shares: float = 0.0
    comments: float = 0.0
    follows: float = 0.0
    not_interested: float = 0.0
    blocks: float = 0.0
    events: float = 0.0  # every event counted, whatever its kind


class ItemFeatures(msgspec.Struct, frozen=True, kw_only=True):
    """Live windowed engagement of one item, on `item-features` (compacted, key item_id).

    Window i is [window_end[i] - window_s[i], window_end[i]), the one ending at the next hop
    boundary after the newest event, counted so far. `counts` holds the windows' counters
    as little-endian float32, window after window, each in `Engagement` field order
    (base64 in JSON; `models.features.counts.counts_of` reads them). Binary because the flow
    publishes every changed item twice a second: this is built and encoded without a Python
    float per counter. It is refreshed every
    `feature_emit_s` while it changes; `as_of` is the event time counted up to.
    """

    item_id: str
    as_of: datetime
    window_s: list[int]
    window_end: list[datetime]
    counts: bytes


class ItemVector(msgspec.Struct, frozen=True, kw_only=True):
    """An item's online embedding, published on `item-vectors` (compacted, key item_id; an
    expired item's key gets a tombstone). `cold`: its creator's and tags' mean, until the
    item has a vector of its own."""

    item_id: str
    version: int
    updated_at: datetime
    vector: list[float]
    cold: bool = False


class UserVector(msgspec.Struct, frozen=True, kw_only=True):
    """A user's online embedding, published on `user-vectors` (compacted, key user_id; an
    expired user's key gets a tombstone). `cold`: the mean of their first session's items,
    until the user has a vector of their own."""

    user_id: str
    version: int
    updated_at: datetime
    vector: list[float]
    cold: bool = False


class Impression(msgspec.Struct, frozen=True, kw_only=True):
    """One item served in one feed response, with the exact features the ranker saw."""

    request_id: str
    user_id: str
    item_id: str
    position: int
    source: str
    model_version: str
    score: float  # the rank score (the pre-rank score where no model ranked it)
    features: list[float]
    served_at: datetime
    prerank: float = 0.0
    propensity: float = 1.0  # chance of this item in this slot (exploration slots: < 1)
    experiment: str = ""  # the online experiment it was served under, and its arm
    arm: str = ""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    """A message a flow could not accept, with why and where it came from."""

    reason: str
    topic: str
    partition: int
    offset: int
    payload: bytes
    failed_at: datetime


class FeedItem(msgspec.Struct, frozen=True, kw_only=True):
    """One entry of a feed response."""

    item_id: str
    creator_id: str
    position: int
    source: str
    score: float
    propensity: float = 1.0


class ItemExplain(msgspec.Struct, frozen=True, kw_only=True):
    """Why one item is on the page: its scores and the features that moved its rank score
    most (LightGBM's per-feature contributions; empty without a model)."""

    item_id: str
    source: str
    prerank: float
    score: float
    propensity: float
    contributions: dict[str, float]


class Explain(msgspec.Struct, frozen=True, kw_only=True):
    """`?explain=true`: what each stage of the cascade did for this request."""

    candidates_per_source: dict[str, int]
    dropped: dict[str, int]
    stage_ms: dict[str, float]
    shortlist: int
    items: list[ItemExplain]


class Feed(msgspec.Struct, frozen=True, kw_only=True):
    """The body of GET /v1/feed."""

    request_id: str
    user_id: str
    model_version: str
    candidates: int
    items: list[FeedItem]
    explain: Explain | None = None


def topic_for(kind: str) -> str:
    """Explicit actions and passive context travel on their own topics."""
    return "events.actions" if kind in ACTION_KINDS else "events.context"


class Erasure(msgspec.Struct, frozen=True, kw_only=True):
    """The answer to DELETE /v1/users/{user_id}: what ClickHouse held of the user is gone
    (`rows_deleted`); flows and feed replicas forget them within seconds."""

    user_id: str
    erased_at: datetime
    rows_deleted: int
