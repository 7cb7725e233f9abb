"""GET /v1/feed on the embedded stack with a 12,000-item catalog: exactly 10,000 candidates,
nothing shown twice (across replicas and a restart), blocked creators never, every page
diverse, and models promoted and rolled back under a stream of feeds without one failing."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import msgspec
import numpy as np
import pytest
from clickhouse_connect.driver.client import Client

from api.feed import STAGES, build_feed
from api.feeder import Feeder
from api.services import ModelHolder
from api.state import ServingState
from cli.stack import Stack
from models.features.ranking import FEATURE_NAMES
from swipeloop import topics
from swipeloop.clickhouse import connect
from swipeloop.kafka import durable_producer
from tests.conftest import wait_until
from tests.support.catalog_stack import catalog_stack
from tests.support.models import trained
from training import registry

pytestmark = pytest.mark.integration
ITEMS = 12_000


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, chdb_path: Path) -> Iterator[Stack]:
    with catalog_stack(chdb_path, tmp_path_factory.mktemp("feed"), ITEMS, seed=5) as running:
        yield running


def page(api: httpx.Client, user: str, n: int = 20, **params: Any) -> dict[str, Any]:
    r = api.get("/v1/feed", params={"user_id": user, "n": n, **params})
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def diverse(creators: list[str], most: int = 2, span: int = 10) -> bool:
    windows = [creators[a : a + span] for a in range(max(1, len(creators) - span + 1))]
    return all(w.count(c) <= most for w in windows for c in w)


def test_retrieval_returns_exactly_10000_candidates_and_explains_itself(stack: Stack) -> None:
    api = httpx.Client(base_url=stack.url, timeout=30)
    body = page(api, "counter", explain="true")
    assert body["candidates"] == 10_000
    explain = body["explain"]
    assert sum(explain["candidates_per_source"].values()) == 10_000
    assert set(explain["stage_ms"]) == set(STAGES)
    assert [i["item_id"] for i in explain["items"]] == [i["item_id"] for i in body["items"]]


def test_fifty_feeds_never_repeat_across_replicas_and_a_restart(stack: Stack) -> None:
    api = httpx.Client(base_url=stack.url, timeout=30)
    settings = stack.settings
    shown: list[str] = []

    def check(items: list[str]) -> None:
        assert not set(items) & set(shown), "an item was shown twice"
        shown.extend(items)

    for _ in range(20):  # replica A: the stack's API
        body = page(api, "binge")
        check([i["item_id"] for i in body["items"]])
        assert diverse([i["creator_id"] for i in body["items"]])
    wait_until(
        lambda: (
            connect(settings).command("SELECT count() FROM impressions WHERE user_id = 'binge'")
            == len(shown)
        ),
        60,
        "the impressions in ClickHouse",
    )
    # Replica B starts now (a restart, or another replica): caches from ClickHouse and topics.
    replica = ServingState(settings, connect(settings))
    replica.bootstrap()
    feeder = Feeder(replica, settings)
    feeder.start()
    producer = durable_producer(settings)
    try:
        wait_until(lambda: len(replica.catalog) == ITEMS, 60, "replica B's catalog")
        for k in range(30):  # alternate: B, then A, then B ...
            if k % 2 == 0:
                feed, impressions, _ = build_feed(replica, None, "binge", 20)
                for imp in impressions:
                    producer.produce(
                        topics.IMPRESSIONS, key=b"binge", value=msgspec.json.encode(imp)
                    )
                producer.flush(10)
                items = [i.item_id for i in feed.items]
                heard_by(serving(stack), items, "A hearing of B's impressions")
            else:
                items = [i["item_id"] for i in page(api, "binge")["items"]]
                heard_by(replica, items, "B hearing of A's impressions")
            check(items)
    finally:
        feeder.stop()
    assert len(shown) == 50 * 20


def heard_by(state: ServingState, items: list[str], what: str) -> None:
    """The binge watcher's seen set in this replica holds these items."""
    wait_until(
        lambda: (
            set(state.items.known(items).tolist()) <= state.user("binge").seen
            and len(state.items.known(items)) == len(items)
        ),
        10,
        what,
    )


def serving(stack: Stack) -> ServingState:
    """Replica A's caches (the stack's API)."""
    state: ServingState = stack.services.feed.state
    return state


def test_a_blocked_creator_never_appears_and_every_page_is_diverse(stack: Stack) -> None:
    api = httpx.Client(base_url=stack.url, timeout=30)
    served = page(api, "picky")["items"]
    first = served[0]
    event = {
        "event_id": str(uuid.uuid4()),
        "user_id": "picky",
        "item_id": first["item_id"],
        "kind": "block",
        "client_ts": datetime.now(UTC).isoformat(),
        "session_id": "s-picky",
        "seq": 1,
    }
    assert api.post("/v1/events", json={"events": [event]}).status_code == 202
    blocked = first["creator_id"]
    state = serving(stack)
    wait_until(
        lambda: state.creators.get(blocked) in state.user("picky").blocked_creators,
        30,
        "the block in the API",
    )
    for _ in range(10):
        items = page(api, "picky", n=50)["items"]
        served += items
        assert blocked not in {i["creator_id"] for i in items}
        assert diverse([i["creator_id"] for i in items])
    # A replica starting now learns the block and what was shown from ClickHouse alone.
    client = connect(stack.settings)
    wait_until(
        lambda: (
            client.command("SELECT count() FROM events WHERE user_id = 'picky'") == 1
            and client.command("SELECT count() FROM impressions WHERE user_id = 'picky'")
            == len(served)
        ),
        60,
        "picky's block and impressions in ClickHouse",
    )
    replica = ServingState(stack.settings, client)
    replica.bootstrap()
    picky = replica.user("picky")
    assert replica.creators.get(blocked) in picky.blocked_creators
    assert picky.seen == set(replica.items.known([i["item_id"] for i in served]).tolist())


def test_an_unfollow_and_an_unblock_undo_the_follow_and_the_block(stack: Stack) -> None:
    """Live and after a restart (from ClickHouse alone): the last word on a creator stands."""
    api = httpx.Client(base_url=stack.url, timeout=30)
    a, b, c = page(api, "fickle", n=3)["items"]
    state = serving(stack)
    user = state.user("fickle")
    code = {x["creator_id"]: state.creators.get(x["creator_id"]) for x in (a, b, c)}
    seq = iter(range(1, 100))

    def act(item: dict[str, Any], kind: str) -> dict[str, Any]:
        return {
            "event_id": str(uuid.uuid4()),
            "user_id": "fickle",
            "item_id": item["item_id"],
            "kind": kind,
            "client_ts": datetime.now(UTC).isoformat(),
            "session_id": "s-fickle",
            "seq": next(seq),
        }

    done = [act(a, "follow"), act(b, "block"), act(c, "follow")]
    assert api.post("/v1/events", json={"events": done}).status_code == 202
    wait_until(
        lambda: (
            user.followed == {code[a["creator_id"]], code[c["creator_id"]]}
            and user.blocked_creators == {code[b["creator_id"]]}
        ),
        30,
        "the follows and the block in the API",
    )
    undone = [act(a, "unfollow"), act(b, "unblock")]
    assert api.post("/v1/events", json={"events": undone}).status_code == 202
    wait_until(
        lambda: user.followed == {code[c["creator_id"]]} and not user.blocked_creators,
        30,
        "the unfollow and the unblock in the API",
    )
    client = connect(stack.settings)
    wait_until(
        lambda: client.command("SELECT count() FROM events WHERE user_id = 'fickle'") == 5,
        60,
        "fickle's five events in ClickHouse",
    )
    replica = ServingState(stack.settings, client)
    replica.bootstrap()
    again = replica.user("fickle")
    assert again.followed == {replica.creators.get(c["creator_id"])}
    assert not again.blocked_creators


def test_the_phone_s_network_is_stored_and_ranks_by_completion_on_it(stack: Stack) -> None:
    """Plays that carry their phone's context land in events.context, teach every replica how
    videos of each length are watched on each network, and the user's next feed logs that
    completion as a feature (also after a restart, from ClickHouse alone)."""
    api = httpx.Client(base_url=stack.url, timeout=30)
    items = page(api, "on-wifi", n=6)["items"]
    state = serving(stack)
    plays = [
        {
            "event_id": str(uuid.uuid4()),
            "user_id": "on-wifi",
            "item_id": item["item_id"],
            "kind": "watch",
            "watch_ms": 4_000,
            "client_ts": datetime.now(UTC).isoformat(),
            "session_id": "s-on-wifi",
            "seq": k,
            "context": {"network": "wifi", "bandwidth_kbps": 54_000, "country": "FR"},
        }
        for k, item in enumerate(items)
    ]
    assert api.post("/v1/events", json={"events": plays}).status_code == 202
    before = state.context.plays.sum()
    wait_until(
        lambda: state.user("on-wifi").network == "wifi" and state.context.plays.sum() >= 6,
        30,
        "the plays' network in the API",
    )
    assert before == 0
    served = page(api, "on-wifi", n=5)
    client = connect(stack.settings)
    column = FEATURE_NAMES.index("context_completion") + 1  # (ClickHouse arrays count from 1)
    wait_until(
        lambda: (
            client.command(
                "SELECT count() FROM impressions WHERE request_id = {r:String} "
                "AND features[{c:UInt32}] > 0",
                parameters={"r": served["request_id"], "c": column},
            )
            == 5
        ),
        60,
        "the feed's impressions, each with the completion on wifi",
    )
    stored = client.query(
        "SELECT context.network, context.bandwidth_kbps, context.country, context.device_class "
        "FROM events WHERE user_id = 'on-wifi'"
    ).result_rows
    assert stored == [("wifi", 54_000, "FR", "")] * 6
    replica = ServingState(stack.settings, client)
    replica.bootstrap()
    assert replica.user("on-wifi").network == "wifi"
    assert replica.context.plays.sum() == 6

    # someone on cellular abandons the same videos: a feed asked from cellular ranks by that
    cellular = [
        {**play, "event_id": str(uuid.uuid4()), "user_id": "on-cell", "watch_ms": 300}
        | {"context": {"network": "cellular"}}
        for play in plays
    ]
    assert api.post("/v1/events", json={"events": cellular}).status_code == 202
    wait_until(lambda: state.context.plays.sum() >= 12, 30, "the cellular plays in the API")
    asked = page(api, "on-wifi", n=5, network="cellular")
    logged = wait_for_rows(
        client,
        "SELECT i.item_id, i.features[{c:UInt32}], c.duration_ms FROM impressions AS i "
        "INNER JOIN (SELECT item_id, duration_ms FROM items FINAL) AS c ON c.item_id = i.item_id "
        "WHERE i.request_id = {r:String}",
        {"r": asked["request_id"], "c": column},
        5,
    )
    durations = np.array([row[2] for row in logged], dtype=np.float64)
    expected = state.context.rates("cellular", durations)
    assert [row[1] for row in logged] == pytest.approx(expected.tolist(), rel=1e-5)
    assert (expected <= state.context.rates("wifi", durations)).all()
    played = np.array(  # the lengths both networks played: completion there is lower on cellular
        [
            row[0]
            for row in client.query(
                "SELECT duration_ms FROM items FINAL WHERE item_id IN {ids:Array(String)}",
                parameters={"ids": [p["item_id"] for p in plays]},
            ).result_rows
        ],
        dtype=np.float64,
    )
    assert len(played) == 6
    assert (state.context.rates("cellular", played) < state.context.rates("wifi", played)).all()
    refused = api.get("/v1/feed", params={"user_id": "on-wifi", "network": "satellite"})
    assert refused.status_code in (400, 422) and "network" in refused.text


def wait_for_rows(
    client: Client, sql: str, parameters: dict[str, Any], count: int
) -> list[tuple[Any, ...]]:
    """The rows of `sql` once there are `count` of them."""
    rows: list[tuple[Any, ...]] = []

    def enough() -> bool:
        nonlocal rows
        rows = [tuple(row) for row in client.query(sql, parameters=parameters).result_rows]
        return len(rows) >= count

    wait_until(enough, 60, f"{count} rows of {sql[:60]}")
    return rows


def test_promotions_and_a_rollback_reach_every_replica_without_a_failed_feed(
    stack: Stack, tmp_path: Path
) -> None:
    """Feeds stream from two clients while three models are promoted and one rolled back:
    every request answers 200, and each version serves on both replicas (the stack's API
    over HTTP, and a second replica's model holder with a data directory of its own) within
    10 s of its promotion."""
    store = connect(stack.settings)  # the registry
    versions = [trained(store, seed) for seed in range(3)]
    # replica B: polls the same registry, with a data directory (a models cache) of its own
    replica = ModelHolder(stack.settings.with_(data_dir=tmp_path / "replica-b"))
    replica.start()
    users = ["reload-0", "reload-1"]
    answers: dict[str, list[tuple[int, str]]] = {u: [] for u in users}  # (status, version)
    failures: list[str] = []
    stop = threading.Event()

    def stream(user: str) -> None:
        with httpx.Client(base_url=stack.url, timeout=30) as api:
            while not stop.is_set():
                try:
                    r = api.get("/v1/feed", params={"user_id": user, "n": 10})
                except httpx.HTTPError as exc:  # a dropped connection is a failed request
                    failures.append(repr(exc))
                    continue
                version = r.json()["model_version"] if r.status_code == 200 else r.text
                answers[user].append((r.status_code, version))

    def serving(version: str) -> bool:
        return all(a and a[-1][1] == version for a in answers.values()) and (
            replica.current is not None and replica.current.version == version
        )

    clients = [threading.Thread(target=stream, args=(user,)) for user in users]
    for client in clients:
        client.start()
    reached: list[float] = []
    try:
        for version in versions:
            registry.promote(store, version, "test")
            promoted = time.monotonic()
            wait_until(partial(serving, version), 10, f"model {version} on both replicas")
            reached.append(time.monotonic() - promoted)
        back = registry.rollback(store)
        wait_until(lambda: serving(back), 10, f"the rollback to {back} on both replicas")
    finally:
        stop.set()
        for client in clients:
            client.join(30)
        replica.stop()
    assert back == versions[1]
    assert not failures
    for user, feeds in answers.items():
        assert {status for status, _ in feeds} == {200}, [a for a in feeds if a[0] != 200][:3]
        served = [v for _, v in feeds]
        # to each client, each version took over from the one before, in promotion order
        order = [v for k, v in enumerate(served) if k == 0 or v != served[k - 1]]
        assert order[-4:] == [*versions, back], (user, order)
        assert len(feeds) > 10
    assert max(reached) < 10


def test_what_others_watched_next_is_in_the_feed_within_seconds(stack: Stack) -> None:
    """Five people watched x, then y; a sixth watches x: y is in their next page, found by
    co-visitation (the pairs counted as the swipes arrive)."""
    api = httpx.Client(base_url=stack.url, timeout=30)
    x, y = (i["item_id"] for i in page(api, "covisit-picker", n=2)["items"])
    now = datetime.now(UTC).isoformat()

    def watched(user: str, items: list[str]) -> list[dict[str, Any]]:
        return [
            {
                "event_id": str(uuid.uuid4()),
                "user_id": user,
                "item_id": item,
                "kind": "watch",
                "watch_ms": 15_000,
                "client_ts": now,
                "session_id": f"s-{user}",
                "seq": k,
            }
            for k, item in enumerate(items)
        ]

    events = [e for u in range(5) for e in watched(f"covisit-{u}", [x, y])]
    events += watched("covisit-new", [x])
    assert api.post("/v1/events", json={"events": events}).status_code == 202
    state = serving(stack)
    wait_until(
        lambda: list(state.user("covisit-new").watched) == [state.items.get(x)],
        30,
        "the new user's watch in the API",
    )
    items = page(api, "covisit-new", n=10, explain="true")["items"]
    found = {i["item_id"]: i["source"] for i in items}
    assert found.get(y) == "covisit", found


def test_baseline_policies_serve_unseen_items_under_their_name(stack: Stack) -> None:
    """The experiment arms: each serves full pages of items its user has not seen, logged
    with its name; batch ranks with the production model; an unknown policy is a 422."""
    api = httpx.Client(base_url=stack.url, timeout=30)
    models = stack.services.feed.models
    client = connect(stack.settings)
    version = trained(client, seed=7)
    registry.promote(client, version, "test")
    wait_until(
        lambda: models.current is not None and models.current.version == version,
        10,
        f"model {version} serving",
    )
    for policy in ("random", "popularity", "batch"):
        shown: list[str] = []
        for _ in range(3):
            body = page(api, f"arm-{policy}", n=10, policy=policy)
            ids = [i["item_id"] for i in body["items"]]
            assert len(ids) == 10 and not set(ids) & set(shown), policy
            assert {i["source"] for i in body["items"]} == {policy}
            shown += ids
        if policy == "batch":
            assert models.current is not None
            assert body["model_version"] == models.current.version
    r = api.get("/v1/feed", params={"user_id": "arm-x", "policy": "best"})
    assert r.status_code == 422 and "at policy" in r.text, r.text
    r = api.get("/v1/feed", params=[("user_id", "arm-x"), ("n", "5"), ("n", "50")])
    assert r.status_code == 422 and "given 2 times - at n" in r.text, r.text  # which n?


def test_a_topic_someone_just_finished_fills_their_next_page(stack: Stack) -> None:
    """Six videos of one tag watched to the end, six of another skipped at once: within
    seconds the API's affinity for the first is up, the second's down, and the next page
    leans on the first (models.affinity: a pre-rank term and two ranker features)."""
    api = httpx.Client(base_url=stack.url, timeout=30)
    state = serving(stack)
    by_tag: dict[str, list[Any]] = {}
    for item in state.catalog.values():
        if item.tags:
            by_tag.setdefault(item.tags[0], []).append(item)
    loved, skipped = sorted(by_tag, key=lambda t: -len(by_tag[t]))[:2]
    now = datetime.now(UTC).isoformat()
    events = [
        {
            "event_id": str(uuid.uuid4()),
            "user_id": "affinity-fan",
            "item_id": item.item_id,
            "kind": "watch",
            "watch_ms": item.duration_ms if tag == loved else 300,
            "client_ts": now,
            "session_id": "s-affinity",
            "seq": k,
        }
        for k, (tag, item) in enumerate(
            [(loved, it) for it in by_tag[loved][:6]]
            + [(skipped, it) for it in by_tag[skipped][:6]]
        )
    ]
    assert api.post("/v1/events", json={"events": events}).status_code == 202
    user = state.user("affinity-fan")
    codes = np.array([state.tags.code(loved), state.tags.code(skipped)])

    def scores() -> Any:
        return user.tag_affinity.lookup(codes, datetime.now(UTC).timestamp())

    # each full watch adds 1 to its tags, each early skip -0.5 (videos may carry both tags)
    wait_until(lambda: scores()[0] > 4 and scores()[1] < -1.5, 30, "the swipes in the affinity")
    items = page(api, "affinity-fan", n=20)["items"]
    tags = [state.catalog[i["item_id"]].tags[:1] for i in items]
    share = len(by_tag[loved]) / len(state.catalog)
    assert tags.count([loved]) >= 5 > 20 * share, (tags, share)  # 1 in 4, not 1 in 20
    assert tags.count([skipped]) <= 1
