"""`swipeloop replay RATINGS.csv`: a ratings file through the real system, then next-item
evaluation of its feeds against popularity and item-kNN on the same split.

stack      the caller's fresh embedded stack (`cli.stack.fresh_stack`: broker, ClickHouse,
           flows, API), so a replay never mixes with other data
catalog    one 60 s video per rated item, each its own creator, uploaded 30 days ago
replay     every rating but each user's last, in time order, as the swipes a phone would send
           (`sim.movielens.SWIPES`, after an `impression` event: the phone showed it), POSTed to
           /v1/events; the timeline is compressed into the last `span_s` seconds, order kept
score      once the flows have caught up (every event in ClickHouse and learned, the user
           vectors settled), one GET /v1/feed?n=10 per scored user (what they
           rated is filtered out as seen): HR@10 and NDCG@10 of the held-out item
baselines  popularity, item-kNN and recency-weighted item-kNN (each user's last 20 items)
           from the same replayed ratings (`sim.movielens`)
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import msgspec
import numpy as np
from clickhouse_connect.driver.client import Client
from prometheus_client import REGISTRY

from api.feed import build_feed
from api.state import ServingState
from models.covisit import CoVisitConfig
from sim.figures import HitRate, ReplayFigures, Validation
from sim.movielens import (
    REPLAY_DURATION_MS,
    Ratings,
    hit_rate_and_ndcg,
    item_knn,
    leave_last_out,
    popularity,
    recent_item_knn,
    swipes,
    time_order,
)
from sim.tuning import Split, Tried, covisit_settings, tune
from swipeloop.clickhouse import connect
from swipeloop.contracts import Event, EventBatch, Item, ItemBatch
from swipeloop.settings import Settings
from swipeloop.waiting import wait_for

K = 10
WEIGHTS = (1.0, 3.0, 10.0, 30.0, 100.0)  # pre-rank co-visitation weights validation tries
CATALOG_AGE = timedelta(days=30)
QUIET_S = 2.0  # once all is learned: user vectors unchanged this long (two publications)
CATCH_UP_S = 600.0
JSON = {"content-type": "application/json"}
Progress = Callable[[str, int, int], None]  # (phase, done, total)


def user_id(user: int) -> str:
    """The replayed user's id in swipeloop."""
    return f"ml-u{user}"


def item_id(item: int) -> str:
    """The replayed item's id in swipeloop."""
    return f"ml-i{item}"


def catalog(items: np.ndarray[Any, Any], now: datetime) -> list[Item]:
    """A 60 s video per rated item, each its own creator (a ratings file names none)."""
    created = now - CATALOG_AGE
    return [
        Item(
            item_id=item_id(int(i)),
            creator_id=f"ml-c{int(i)}",
            duration_ms=REPLAY_DURATION_MS,
            created_at=created,
        )
        for i in items
    ]


def swipe_events(train: Ratings, now: datetime, span_s: float) -> Iterator[Event]:
    """The replayed ratings as phone events, in time order, the timeline compressed into
    [now - span_s, now); each user one session, seq from 0."""
    order = time_order(train)
    first, last = int(train.ts[order[0]]), int(train.ts[order[-1]])
    scale = span_s / max(last - first, 1)
    start = now - timedelta(seconds=span_s)
    seq: dict[int, int] = {}
    for row in order.tolist():
        user, item = int(train.users[row]), int(train.items[row])
        at = start + timedelta(seconds=(int(train.ts[row]) - first) * scale)
        for k, (kind, watched) in enumerate((("impression", 0.0), *swipes(train.ratings[row]))):
            n = seq.get(user, 0)
            seq[user] = n + 1
            yield Event(
                event_id=uuid.UUID(int=row * 4 + k),
                user_id=user_id(user),
                item_id=item_id(item),
                kind=kind,  # type: ignore[arg-type]
                client_ts=at,
                session_id=f"replay-{user}",
                seq=n,
                watch_ms=int(watched * REPLAY_DURATION_MS),
            )


def tuned(
    ratings: Ratings, settings: Settings, split: Split = leave_last_out
) -> tuple[Settings, Tried]:
    """`settings` for a replay of `ratings` held out by `split`: the co-visitation constants
    chosen on the validation split (`sim.tuning.tune`), and one partition per topic, so that
    every consumer reads the swipes in the file's order."""
    train, _ = split(ratings)
    config, tried = tune(train, split)
    best = next(t for t in tried if t.config == config)
    # The embeddings learner's batches are cut by count and at the ends of the replay's
    # phases only (models.ordering): a stall of the stream on a loaded machine must not
    # look like its end (hold 2 s), and a batch waits for its 5000 swipes (a minute at most)
    learner = {"embedding_hold_s": 2.0, "embedding_batch_wait_s": 60.0}
    return (
        settings.with_(topic_partitions=1, **learner, **covisit_settings(config)),
        best,
    )


def replay(
    ratings: Ratings,
    settings: Settings,
    url: str,
    state: ServingState,
    span_s: float = 86_400.0,
    progress: Progress | None = None,
    split: Split = leave_last_out,
    tuning: Tried | None = None,
) -> ReplayFigures:
    """Replay the ratings `split` keeps through the stack serving at `url` (whose serving
    state is `state`), score its feeds and the baselines on the ones it holds out.

    Validation first: the replayed ratings are split again the same way; what that keeps is
    streamed, and the pre-rank's co-visitation weight is chosen among `WEIGHTS` on those
    held-out items, with pages that mark nothing seen. Then the rest is streamed, and the
    test feeds are served with the chosen weight."""
    tell = progress or (lambda _phase, _done, _total: None)
    now = datetime.now(UTC)  # the end of the replayed timeline
    wall = state.clock
    state.clock = now.timestamp  # pages are scored then, however long the replay takes
    try:
        return _replay(ratings, settings, url, state, span_s, tell, split, tuning, now)
    finally:
        state.clock = wall


def _replay(
    ratings: Ratings,
    settings: Settings,
    url: str,
    state: ServingState,
    span_s: float,
    tell: Progress,
    split: Split,
    tuning: Tried | None,
    now: datetime,
) -> ReplayFigures:
    train, held = split(ratings)
    _, check = split(train)
    users = sorted(held)
    with httpx.Client(base_url=url, timeout=60, headers=settings.bearer("user")) as api:
        began = time.perf_counter()
        items = catalog(np.unique(ratings.items), now)
        for at in range(0, len(items), settings.max_batch_events):
            _post(api, "/v1/items", ItemBatch(items[at : at + settings.max_batch_events]))
            tell("catalog", min(at + settings.max_batch_events, len(items)), len(items))
        _wait(lambda: len(state.catalog) >= len(items), "the catalog in the API")
        events = list(swipe_events(train, now, span_s))
        first = [e for e in events if not _validated(e, check)]
        rest = [e for e in events if _validated(e, check)]
        client = connect(settings)
        learned_from = _learned(), _counted()
        _stream(api, settings, first, "replay", tell)
        _caught_up(client, state, len(first), learned_from)
        weight, tried = _choose_weight(state, check, tell)
        # the chosen weight, as a replica started with it would have it
        state.settings = state.settings.with_(covisit_weight=weight)
        _stream(api, settings, rest, "replay the validation items", tell)
        replay_s = round(time.perf_counter() - began, 1)
        began = time.perf_counter()
        _caught_up(client, state, len(events), learned_from)
        catch_up_s = round(time.perf_counter() - began, 1)
        recommended: dict[int, list[int]] = {}
        for done, user in enumerate(users, start=1):
            r = api.get("/v1/feed", params={"user_id": user_id(user), "n": K})
            r.raise_for_status()
            recommended[user] = [int(i["item_id"][4:]) for i in r.json()["items"]]
            tell("score", done, len(users))
    ours = _hit_rate(recommended, held)
    return ReplayFigures(
        ratings=len(ratings),
        users=len(users),
        events=len(events),
        replay_s=replay_s,
        catch_up_s=catch_up_s,
        swipeloop=ours,
        popularity=_hit_rate(popularity(train, users, K), held),
        item_knn=_hit_rate(item_knn(train, users, K), held),
        recent_item_knn=_hit_rate(recent_item_knn(train, users, K), held),
        hr_at_10=ours.hr_at_10,
        ndcg_at_10=ours.ndcg_at_10,
        validation=Validation(
            users=len(check),
            covisit_weight=weight,
            weights=tried,
            covisit=_settings_of(state.covisits.config),
            covisit_alone=None
            if tuning is None
            else HitRate(hr_at_10=tuning.hr_at_10, ndcg_at_10=tuning.ndcg_at_10),
        ),
    )


def _validated(event: Event, check: Mapping[int, int]) -> bool:
    """Whether `event` is a swipe on its user's validation item."""
    return check.get(int(event.user_id[4:])) == int(event.item_id[4:])


def _stream(
    api: httpx.Client, settings: Settings, events: list[Event], phase: str, tell: Progress
) -> None:
    batch = settings.max_batch_events
    for at in range(0, len(events), batch):
        _post(api, "/v1/events", EventBatch(events[at : at + batch]))
        tell(phase, min(at + batch, len(events)), len(events))


def _caught_up(
    client: Client, state: ServingState, events: int, learned_from: tuple[float, float]
) -> None:
    """Every event so far in ClickHouse, learned by the embeddings flow and counted by the
    features flow (this process's counters, from `learned_from`), and the serving state no
    longer changing."""
    _wait(
        lambda: client.query("SELECT count() FROM events").result_rows[0][0] >= events,
        "every replayed event in ClickHouse",
    )
    learned, counted = learned_from
    _wait(lambda: _learned() - learned >= events, "the embeddings flow to learn every event")
    _wait(lambda: _counted() - counted >= events, "the features flow to count every event")
    _settled(lambda: _fingerprint(state))


def _counted() -> float:
    """Events the features flows of this process have counted into windows or set aside as
    late, so far."""
    return sum(
        REGISTRY.get_sample_value(f"swipeloop_{name}_total") or 0.0
        for name in ("feature_events", "late_events")
    )


def _learned() -> float:
    """Events the embeddings flows of this process have learned from, so far."""
    return REGISTRY.get_sample_value("swipeloop_embedding_events_total") or 0.0


def _choose_weight(
    state: ServingState, check: Mapping[int, int], tell: Progress
) -> tuple[float, dict[str, HitRate]]:
    """The co-visitation weight among `WEIGHTS` whose pages find the validation items best
    (NDCG@10; ties: the first), and each one's figures. The pages are what GET /v1/feed
    would serve, but mark nothing seen and log nothing."""
    tried: dict[str, HitRate] = {}
    for k, weight in enumerate(WEIGHTS, start=1):
        pages = {
            user: [
                int(i.item_id[4:])
                for i in build_feed(
                    state, None, user_id(user), K, covisit_weight=weight, mark_seen=False
                )[0].items
            ]
            for user in sorted(check)
        }
        tried[f"{weight:g}"] = _hit_rate(pages, check)
        tell("validation", k, len(WEIGHTS))
    best = max(tried, key=lambda w: tried[w].ndcg_at_10)  # (max keeps the first of equals)
    return float(best), tried


def _settings_of(config: CoVisitConfig) -> dict[str, float]:
    return {k: v for k, v in asdict(config).items() if k != "max_neighbours"}


def _hit_rate(recommended: Mapping[int, Sequence[int]], held: Mapping[int, int]) -> HitRate:
    return msgspec.convert(hit_rate_and_ndcg(recommended, held, K), HitRate)


def _post(api: httpx.Client, path: str, body: object) -> None:
    r = api.post(
        path, content=msgspec.json.encode(body), headers={"content-type": "application/json"}
    )
    if r.status_code != 202:
        raise RuntimeError(f"POST {path} answered {r.status_code}: {r.text[:500]}")


def _fingerprint(state: ServingState) -> tuple[float, ...]:
    """Changes while the flows still update user vectors or item features, or the API still
    applies swipes."""
    vectors = list(state.user_vectors.values())
    columns = state.columns
    return (
        len(vectors),
        float(sum(float(v[0]) for v in vectors)),
        float(np.nansum(columns.as_of_s)),
        float(columns.counts.sum()),
        len(state.users),
        len(state.covisits),
    )


def _wait(check: Callable[[], bool], what: str) -> None:
    if not wait_for(check, CATCH_UP_S, every_s=0.5):
        raise TimeoutError(f"waited {CATCH_UP_S:.0f} s for {what}")


def _settled(probe: Callable[[], object], timeout_s: float = CATCH_UP_S) -> None:
    """Wait until `probe()` has not changed for `QUIET_S`."""
    deadline = time.monotonic() + timeout_s
    last, since = probe(), time.monotonic()
    while time.monotonic() - since < QUIET_S:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the serving state still changes after {timeout_s:.0f} s")
        time.sleep(0.5)
        now = probe()
        if now != last:
            last, since = now, time.monotonic()
