"""The API under faults: a broker that stops and comes back, and an API that restarts."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from bench.feed import ranking_model
from cli.stack import Stack
from swipeloop import topics
from swipeloop.broker import EmbeddedBroker
from swipeloop.clickhouse import connect
from swipeloop.kafka import client_config
from swipeloop.settings import Settings
from tests.conftest import wait_until
from tests.support.ingest_events import api_event

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def batch(user: str, n: int) -> dict[str, Any]:
    """A body of `n` watches of the catalog's first items."""
    return {"events": [api_event(user, k, item_id=f"v{k:05d}") for k in range(n)]}


def on_the_broker(settings: Settings) -> set[str]:
    """The event ids the broker holds, every partition of both event topics from the start."""
    consumer = Consumer(client_config(settings.kafka_bootstrap or "", **{"group.id": "check"}))
    meta = consumer.list_topics(timeout=10)
    consumer.assign(
        [
            TopicPartition(t, p, OFFSET_BEGINNING)
            for t in topics.EVENT_TOPICS
            for p in meta.topics[t].partitions
        ]
    )
    ids: set[str] = set()
    quiet = 0
    while quiet < 5:
        messages = consumer.consume(1000, 0.5)
        quiet = 0 if messages else quiet + 1
        for m in messages:
            if m.error() is None and (value := m.value()):
                ids.add(json.loads(value)["event_id"])
    consumer.close()
    return ids


def test_broker_stopped_and_restarted_503_then_recovers_by_itself(
    live: Settings, broker: EmbeddedBroker
) -> None:
    """While the broker is gone the API answers 503 with Retry-After, in bounded time, and
    never 202; once a broker is back on the address it accepts again, by itself, and every
    batch it acknowledged is on the broker. (The embedded broker keeps nothing: the one that
    comes back is empty, so the topics are made again, as `swipeloop topics` would.)"""
    with Stack(live, schedule_training=False, run_flows=False) as stack:
        stack.serve_in_thread()
        http = httpx.Client(base_url=stack.url, timeout=10)
        assert http.post("/v1/events", json=batch("before", 5)).status_code == 202

        broker.stop()
        answers = []
        for _ in range(3):
            started = time.monotonic()
            r = http.post("/v1/events", json=batch("during", 5))
            answers.append(r.status_code)
            assert time.monotonic() - started < live.ack_timeout_s + 1.5
            assert r.status_code == 503 and int(r.headers["retry-after"]) >= 1, r.text
        assert http.get("/health/ready").json()["checks"]["broker"] is False

        back = EmbeddedBroker(port=broker.port).start()
        try:
            topics.ensure_topics(live)
            acked: list[dict[str, Any]] = []

            def accepted() -> bool:
                sent = batch("after", 5)
                if http.post("/v1/events", json=sent).status_code == 202:
                    acked.append(sent)
                    return True
                return False

            wait_until(accepted, 60, "the API to accept again once the broker is back")
            for _ in range(5):
                sent = batch("after", 5)
                assert http.post("/v1/events", json=sent).status_code == 202
                acked.append(sent)
            assert http.get("/health/ready").json()["checks"]["broker"] is True
            held = on_the_broker(live)
            assert {e["event_id"] for b in acked for e in b["events"]} <= held, "a false ack"
        finally:
            back.stop()


def test_a_restarted_api_still_never_repeats_an_item_and_serves_the_same_model(
    live: Settings,
) -> None:
    with Stack(live.with_(seed_items=600), schedule_training=False) as stack:
        version = ranking_model(stack.settings)
        stack.serve_in_thread()
        http = httpx.Client(base_url=stack.url, timeout=30)

        def page() -> dict[str, Any]:
            r = http.get("/v1/feed", params={"user_id": "returning", "n": 20})
            assert r.status_code == 200, r.text
            body: dict[str, Any] = r.json()
            return body

        state = stack.services.feed.state
        wait_until(lambda: len(state.catalog_order()) == 600, 60, "the whole catalog")
        wait_until(lambda: page()["model_version"] == version, 30, "the promoted model")
        shown = [i["item_id"] for _ in range(5) for i in page()["items"]]
        # every one of them (the pages asked while waiting for the model count too, so a
        # count of the user's rows could pass before these are in)
        stored = (
            "SELECT uniqExact(item_id) FROM impressions "
            "WHERE user_id = 'returning' AND item_id IN {shown:Array(String)}"
        )
        client = connect(stack.settings)
        wait_until(
            lambda: client.command(stored, parameters={"shown": shown}) == len(set(shown)),
            60,
            "the impressions stored",
        )

        stack.stop_api()  # a restart: the new API's caches come from ClickHouse and the topics
        stack.serve_in_thread()
        after = [page() for _ in range(5)]
        assert {p["model_version"] for p in after} == {version}
        again = [i["item_id"] for p in after for i in p["items"]]
        assert len(again) == 100 and not set(again) & set(shown), "an item shown twice"
