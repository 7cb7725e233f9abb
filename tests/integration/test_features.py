"""Windowed features against the real parts: every window the flow wrote equals ClickHouse SQL
over the same raw events, on a random stream with out-of-order and late events."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from dataflows.features import written
from dataflows.runner import run
from models.features.weights import COUNTERS
from models.windows import WINDOWS
from swipeloop import SQL, topics
from swipeloop.broker import EmbeddedBroker
from swipeloop.clickhouse import connect
from swipeloop.contracts import ItemFeatures
from swipeloop.kafka import client_config
from swipeloop.migrations import migrate
from swipeloop.settings import Settings
from tests.conftest import produce, scalar
from tests.support.feature_stream import LATENESS, catalog, stream

pytestmark = pytest.mark.integration
CHECKS = SQL / "checks"


@pytest.fixture
def live(settings: Settings, broker: EmbeddedBroker) -> Settings:
    wired = settings.with_(
        kafka_bootstrap=broker.bootstrap,
        broker_epoch=broker.epoch,
        feature_lateness_s=LATENESS,
        feature_shards=3,
    )
    topics.ensure_topics(wired)
    migrate(connect(wired))
    return wired


def rows(client: Client, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in client.query(sql, parameters=params).result_rows]


def test_every_window_equals_sql_over_the_raw_events(live: Settings) -> None:
    rng = random.Random(7)
    events, made_late = stream(rng, 12_000)
    produce(live, catalog(rng), events)
    run("ingest", live, in_thread=True, drain=True)  # events and items into ClickHouse
    run("features", live, in_thread=True, drain=True)
    client = connect(live)

    late = scalar(client, "SELECT count() FROM late_events")
    assert made_late * 0.5 < late <= made_late * 1.5, (late, made_late)

    engagement_sql = (CHECKS / "engagement_windows.sql").read_text()
    affinity_sql = (CHECKS / "affinity_windows.sql").read_text()
    counters = ", ".join(COUNTERS)
    checked = 0
    for spec in WINDOWS:
        params = {"window_s": spec.length_s, "hop_s": spec.hop_s}
        expected = {
            (level, entity, end.replace(tzinfo=UTC)): values
            for level, entity, end, *values in rows(client, engagement_sql, **params)
            if written(level, spec.length_s, int(end.replace(tzinfo=UTC).timestamp()))
        }
        got: dict[tuple[str, str, datetime], list[Any]] = {}
        for level, table, key in (
            ("item", "item_features", "item_id"),
            ("creator", "creator_features", "creator_id"),
            ("user", "user_features", "user_id"),
        ):
            sql = (
                f"SELECT {key}, window_end, {counters} FROM {table} FINAL "
                "WHERE window_s = {window_s:UInt32}"
            )
            for entity, end, *values in rows(client, sql, window_s=spec.length_s):
                got[(level, entity, end.replace(tzinfo=UTC))] = values
        assert got.keys() == expected.keys(), spec
        for cell, values in got.items():
            assert values == pytest.approx(expected[cell], rel=1e-9, abs=1e-9), (spec, cell)
        checked += len(got)

        affinity = {
            (kind, user, target, end.replace(tzinfo=UTC)): values
            for kind, user, target, end, *values in rows(client, affinity_sql, **params)
            if written(f"user_{kind}", spec.length_s, int(end.replace(tzinfo=UTC).timestamp()))
        }
        stored = {
            (kind, user, target, end.replace(tzinfo=UTC)): values
            for kind, user, target, end, *values in rows(
                client,
                "SELECT kind, user_id, target, window_end, weight, events FROM user_affinity "
                "FINAL WHERE window_s = {window_s:UInt32}",
                window_s=spec.length_s,
            )
        }
        assert stored.keys() == affinity.keys(), spec
        for pair, values in stored.items():
            assert values == pytest.approx(affinity[pair], rel=1e-9, abs=1e-9), (spec, pair)
        checked += len(stored)
    assert checked > 10_000

    # the API's cache reads the live windows from the compacted topic
    consumer = Consumer(client_config(live.kafka_bootstrap, **{"group.id": "t"}))
    consumer.assign([TopicPartition(topics.ITEM_FEATURES, p, OFFSET_BEGINNING) for p in range(3)])
    newest: dict[str, ItemFeatures] = {}
    for msg in consumer.consume(10_000, 5):
        f = msgspec.json.decode(msg.value() or b"", type=ItemFeatures)
        newest[f.item_id] = f
    consumer.close()
    assert "i0" in newest and set(newest["i0"].window_s) == {spec.length_s for spec in WINDOWS}
