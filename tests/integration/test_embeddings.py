"""Online embeddings against the real parts: the broker, chdb, the flow and the API's index."""

from __future__ import annotations

import itertools
import random
import threading
import time
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import msgspec
import pytest

from api.feeder import Feeder
from api.state import ServingState
from dataflows.runner import run
from swipeloop import topics
from swipeloop.broker import EmbeddedBroker
from swipeloop.clickhouse import connect
from swipeloop.contracts import ReceivedEvent
from swipeloop.erasure import erase
from swipeloop.migrations import migrate
from swipeloop.settings import Settings
from tests.conftest import produce, wait_until
from tests.support.embedding_stream import START, catalog, event

pytestmark = pytest.mark.integration


@pytest.fixture(params=[1, 2], ids=["one_worker", "two_workers"])
def workers(request: pytest.FixtureRequest) -> int:
    """One worker: one learner holds the table; two: a user and an item shard each."""
    return int(request.param)


@pytest.fixture
def live(settings: Settings, broker: EmbeddedBroker, workers: int) -> Settings:
    wired = settings.with_(
        kafka_bootstrap=broker.bootstrap,
        broker_epoch=broker.epoch,
        embedding_dim=16,
        embedding_min_count=2,
        embedding_ttl_s=600,
        publish_interval_s=0.3,
        flow_epoch_s=1.0,
        flow_workers=workers,
    )
    topics.ensure_topics(wired)
    migrate(connect(wired))
    return wired


@pytest.fixture
def serving(live: Settings) -> Iterator[ServingState]:
    """The embeddings flow running live, and the API's caches following its topics."""
    state = ServingState(live, connect(live))
    feeder = Feeder(state, live)
    feeder.start()
    stop = threading.Event()
    failed: list[BaseException] = []

    def target() -> None:
        try:  # (one worker: Bytewax's run_main; more: its cluster of threads)
            run("embeddings", live, stop, in_thread=live.flow_workers == 1)
        except BaseException as exc:
            failed.append(exc)

    flow = threading.Thread(target=target, name="flow-embeddings", daemon=True)
    flow.start()
    yield state
    stop.set()
    flow.join(30)
    feeder.stop()
    assert not failed, failed


def cosine(state: ServingState, a: str, b: str) -> float:
    va, vb = state.vectors[a], state.vectors[b]  # unit length in the API
    return float(va @ vb)


def test_co_engagement_burst_moves_two_items_closer_in_the_api_index(
    live: Settings, serving: ServingState
) -> None:
    rng = random.Random(5)
    items = catalog(40)
    users = [f"u{k}" for k in range(60)]
    warm = [  # every user and item seen a few times, tastes random
        event(rng.choice(users), f"i{rng.randrange(40)}", rng.choice(["impression", "like"]), START)
        for _ in range(3_000)
    ]
    produce(live, items, warm)
    wait_until(lambda: {"i1", "i2"} <= serving.vectors.keys(), 60, "vectors of i1 and i2")
    wait_until(lambda: len(serving.user_vectors) >= 50, 30, "user vectors in the API cache")
    before = cosine(serving, "i1", "i2")  # (random tastes: from about -0.2 to 0.7)
    fans = users[:30]
    burst = [event(u, item, "like", START) for _ in range(6) for u in fans for item in ("i1", "i2")]
    sent = time.monotonic()
    produce(live, [], burst)

    def nearest() -> bool:  # i2 is i1's nearest item, and closer than before
        ids, _ = serving.index.search(serving.vectors["i1"], 2)
        return list(ids) == ["i1", "i2"] and cosine(serving, "i1", "i2") > before

    wait_until(nearest, 60, "i2 the nearest item to i1 in the API")
    print(f"burst visible in the API index after {time.monotonic() - sent:.2f} s")
    print(f"cosine of i1 and i2: {before:.3f} -> {cosine(serving, 'i1', 'i2'):.3f}")
    # the index holds the moved vectors: searching with i1 scores i2 at their new cosine
    ids, scores = serving.index.search(serving.vectors["i1"], len(serving.index))
    by_id = dict(zip(ids, scores.tolist(), strict=True))
    assert by_id["i2"] == pytest.approx(cosine(serving, "i1", "i2"), abs=0.05)
    # a fan's learned vector (from `user-vectors`) scores the pair above most items
    fan = serving.user(fans[0])
    query = serving.user_vector(fan)
    assert query is not None and fans[0] in serving.user_vectors
    ids, scores = serving.index.search(query, len(serving.index))
    rank = {item: k for k, item in enumerate(ids)}
    assert min(rank["i1"], rank["i2"]) < len(ids) // 2


def test_idle_ids_expire_from_clickhouse_and_the_index(
    live: Settings, serving: ServingState
) -> None:
    items = catalog(3)
    old = [event("u_old", "i0", "like", START) for _ in range(3)]
    produce(live, items, old)
    client = connect(live)
    wait_until(lambda: "i0" in serving.vectors, 60, "i0's vector in the API")
    current = "SELECT item_id FROM item_embeddings FINAL WHERE deleted = 0 AND cold = 0"

    def stored() -> set[str]:
        return {r[0] for r in client.query(current).result_rows}

    wait_until(lambda: "i0" in stored(), 30, "i0's vector in ClickHouse")
    later = START + timedelta(seconds=live.embedding_ttl_s + 60)  # event time moves on
    produce(live, [], [event("u_new", "i1", "like", later) for _ in range(3)])
    wait_until(lambda: "i0" not in serving.vectors, 60, "i0 gone from the API")
    # (i1's vector may come in a later message than i0's tombstone)
    wait_until(lambda: "i1" in serving.vectors, 30, "i1's vector in the API")
    assert "i0" not in serving.index.search(serving.vectors["i1"], 10)[0]
    wait_until(lambda: "i0" not in stored(), 30, "i0 gone from ClickHouse's current view")
    users = "SELECT user_id FROM user_embeddings FINAL WHERE deleted = 0"
    wait_until(
        lambda: {r[0] for r in client.query(users).result_rows} == {"u_new"}, 30, "u_old gone"
    )
    # (the API hears of it from the topic, which may come after ClickHouse's merge: a wait)
    wait_until(lambda: "u_old" not in serving.user_vectors, 30, "u_old gone from the API")


def test_a_deleted_item_leaves_the_index_and_the_current_vectors(
    live: Settings, serving: ServingState
) -> None:
    items = catalog(3)
    produce(live, items, [event(f"u{k}", "i0", "like", START) for k in range(3)] * 2)
    wait_until(lambda: "i0" in serving.vectors, 60, "i0's vector in the API")
    deleted = msgspec.structs.replace(items[0], deleted=True)  # what DELETE /v1/items/i0 sends
    produce(live, [deleted], [])
    wait_until(lambda: "i0" not in serving.catalog, 30, "i0 gone from the API's catalog")
    wait_until(lambda: "i0" not in serving.vectors, 30, "i0 gone from the API's vectors")
    assert len(serving.index) == len(serving.vectors)
    client = connect(live)
    current = "SELECT item_id FROM item_embeddings FINAL WHERE deleted = 0"
    wait_until(
        lambda: "i0" not in {r[0] for r in client.query(current).result_rows},
        30,
        "i0 gone from ClickHouse's current vectors",
    )


def _on_the_partition_of(user: str, partitions: int) -> str:
    """Another user whose events go to the same partitions as `user`'s (the producer's
    partitioner: CRC-32 of the key), so they are read in the order they were sent."""
    return next(
        other
        for k in itertools.count()
        if zlib.crc32((other := f"kept{k}").encode()) % partitions
        == zlib.crc32(user.encode()) % partitions
    )


def test_an_erased_user_loses_their_vector_and_gets_no_new_one(
    live: Settings, serving: ServingState
) -> None:
    gone, kept = "gone", _on_the_partition_of("gone", live.topic_partitions)

    def likes(user: str, at: datetime) -> list[ReceivedEvent]:
        return [event(user, f"i{k}", "like", at) for k in range(10)]

    produce(live, catalog(10), likes(gone, START) + likes(kept, START))
    client = connect(live)
    current = "SELECT user_id, version FROM user_embeddings FINAL WHERE deleted = 0"

    def stored() -> dict[str, int]:
        return {str(user): int(version) for user, version in client.query(current).result_rows}

    wait_until(lambda: {gone, kept} <= stored().keys(), 60, "both users' vectors in ClickHouse")
    wait_until(lambda: gone in serving.user_vectors, 30, "the user's vector in the API")
    erase(client, gone, datetime.now(UTC))
    version = stored()[kept]
    later = START + timedelta(seconds=5)  # their phone is still sending
    produce(live, [], likes(gone, later) + likes(kept, later))
    wait_until(lambda: gone not in serving.user_vectors, 30, "the vector gone from the API")
    # (the other user's later likes, read after theirs, learned: theirs were read too)
    wait_until(lambda: stored().get(kept, 0) > version, 60, "the other user's later likes")
    assert gone not in stored() and gone not in serving.user_vectors
