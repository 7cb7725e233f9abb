"""Forgetting a user on the running stack: after DELETE /v1/users/{id} nothing of them remains
in ClickHouse, in the feed replica's caches or in the vectors, even with their events still in
flight; and `swipeloop erase-user` does the same from the command line."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.stack import Stack
from sim.demo_catalog import demo_catalog
from sim.simulator import msgspec_item
from swipeloop import topics
from swipeloop.clickhouse import connect
from swipeloop.erasure import remaining
from swipeloop.kafka import durable_producer
from swipeloop.settings import Settings
from tests.conftest import wait_until
from tests.support.flow_processes import settled

pytestmark = pytest.mark.integration

GONE, KEPT = "forget-me", "keep-me"


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    live = settings.with_(embedding_min_count=1, publish_interval_s=0.3, flow_epoch_s=1.0)
    with Stack(live, schedule_training=False) as running:
        running.serve_in_thread()
        yield running


def swipes(user: str, items: list[str], first_seq: int) -> list[dict[str, Any]]:
    kinds = ["watch", "like", "loop", "share"]
    return [
        {
            "event_id": str(uuid.uuid4()),
            "user_id": user,
            "item_id": item,
            "kind": kinds[k % len(kinds)],
            "watch_ms": 9000,
            "client_ts": datetime.now(UTC).isoformat(),
            "session_id": f"s-{user}",
            "seq": first_seq + k,
        }
        for k, item in enumerate(items)
    ]


def test_an_erased_user_leaves_nothing_behind(stack: Stack) -> None:
    s = stack.settings
    api = httpx.Client(base_url=stack.url, timeout=30)
    catalog = demo_catalog(200, seed=5)
    assert api.post("/v1/items", json={"items": [msgspec_item(i) for i in catalog]}).status_code
    ids = [i.item_id for i in catalog]
    client = connect(s)
    state = stack.services.feed.state
    wait_until(
        lambda: api.get("/v1/feed", params={"user_id": "probe", "n": 1}).json()["items"],
        30,
        "the catalog in the feed replica",
    )
    for user in (GONE, KEPT):
        assert api.post("/v1/events", json={"events": swipes(user, ids[:40], 0)}).status_code == 202
        page = api.get("/v1/feed", params={"user_id": user, "n": 10})
        assert page.status_code == 200 and len(page.json()["items"]) == 10, page.text
    # a dead letter that names the user
    producer = durable_producer(s)
    producer.produce(topics.EVENTS_ACTIONS, key=GONE, value=b'{"user_id":"forget-me","kind":1}')
    assert producer.flush(10) == 0

    def held() -> dict[str, int]:
        return remaining(client, GONE)

    wait_until(
        lambda: all(held()[t] for t in ("events", "impressions", "user_embeddings", "dlq")),
        60,
        "the user's events, impressions, vector and dead letter in ClickHouse",
    )
    wait_until(lambda: GONE in state.user_vectors, 30, "the user's vector in the feed replica")
    assert state.users[GONE].seen

    r = api.delete(f"/v1/users/{GONE}")
    assert r.status_code == 202, r.text
    assert r.json()["rows_deleted"] >= 40 + 10 + 1 + 1  # events, impressions, vector, dlq
    assert GONE not in state.users and GONE not in state.user_vectors

    # their phone is still sending: in flight, and after the erasure
    late = swipes(GONE, ids[40:80], 40)
    assert api.post("/v1/events", json={"events": late}).status_code == 202
    assert api.get("/v1/feed", params={"user_id": GONE, "n": 5}).status_code == 200
    assert api.post("/v1/events", json={"events": swipes(KEPT, ids[40:60], 40)}).status_code == 202

    kept = "SELECT count() FROM events WHERE user_id = {u:String}"
    wait_until(
        lambda: client.query(kept, parameters={"u": KEPT}).result_rows[0][0] == 60,
        60,
        "the other user's later events",
    )
    for flow in ("ingest", "features", "embeddings"):  # each past the late swipes
        wait_until(settled(s, flow), 60, f"the {flow} flow to read all that was sent")
    assert held() == dict.fromkeys(held(), 0), held()
    assert remaining(client, KEPT)["events"] == 60, "nobody else's data went with them"
    assert remaining(client, KEPT)["impressions"] == 10
    assert GONE not in state.user_vectors
    assert not state.users.get(GONE, None) or not state.users[GONE].positives

    # the command line: the other user, from a process beside the stack (direct to ClickHouse)
    env = {
        "SWIPELOOP_CLICKHOUSE_URL": s.clickhouse_url or "",
        "SWIPELOOP_CLICKHOUSE_DATABASE": s.clickhouse_database,
        "SWIPELOOP_DATA_DIR": str(s.data_dir / "cli"),
    }
    result = CliRunner().invoke(app, ["erase-user", KEPT], env=env)
    assert result.exit_code == 0, result.output
    assert '"rows_deleted": ' in result.output
    assert sum(remaining(client, KEPT).values()) == 0
    wait_until(lambda: KEPT not in state.users, 10, "the replica to follow the CLI's erasure")
