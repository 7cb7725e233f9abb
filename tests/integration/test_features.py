"""Windowed features against the real parts: every window the flow wrote equals ClickHouse SQL
over the same raw events, on a random stream with out-of-order and late events."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import msgspec
import pytest
from clickhouse_connect.driver.client import Client
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from dataflows.features import written
from dataflows.runner import run
from models.features import COUNTERS
from models.windows import WINDOWS
from swipeloop import topics
from swipeloop.broker import EmbeddedBroker
from swipeloop.clickhouse import connect
from swipeloop.contracts import Item, ItemFeatures, ReceivedEvent
from swipeloop.kafka import client_config
from swipeloop.migrations import migrate
from swipeloop.settings import Settings
from tests.conftest import produce

pytestmark = pytest.mark.integration
CHECKS = Path(__file__).parents[2] / "sql" / "checks"
KINDS = ["impression"] * 6 + ["watch"] * 4 + ["skip"] * 3 + ["loop", "like", "share"]
KINDS += ["comment", "follow", "not_interested", "block"]
START = datetime(2026, 11, 27, 12, tzinfo=UTC)
LATENESS = 10


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


def catalog(rng: random.Random) -> list[Item]:
    tags = ["cats", "dogs", "food", "dance", "news", "cars"]
    return [
        Item(
            item_id=f"i{n}",
            creator_id=f"c{n % 7}",
            duration_ms=rng.choice([4_000, 9_000, 15_000, 60_000, 180_000]),
            tags=rng.sample(tags, rng.randint(0, 3)),
            created_at=START - timedelta(days=1),
        )
        for n in range(30)
    ]


def stream(rng: random.Random, n: int) -> tuple[list[ReceivedEvent], int]:
    """Events in arrival order over ~25 minutes of event time: most a few seconds out of
    order, some far behind (late), one item four times as popular as the rest."""
    out, now, late = [], START, 0
    for seq in range(n):
        now += timedelta(milliseconds=rng.randint(0, 200))
        behind = rng.uniform(0, LATENESS - 1)
        if rng.random() < 0.03:
            behind, late = rng.uniform(LATENESS + 5, 120), late + 1
        item = "i0" if rng.random() < 0.2 else f"i{rng.randrange(31)}"  # i30: not in catalog
        ts = now - timedelta(seconds=behind)
        out.append(
            ReceivedEvent(
                event_id=uuid.uuid4(),
                user_id=f"u{rng.randrange(25)}",
                item_id=item,
                kind=rng.choice(KINDS),  # type: ignore[arg-type]
                client_ts=ts,
                session_id="s",
                seq=seq,
                watch_ms=rng.choice([300, 1_500, 2_500, 8_000, 40_000, 200_000]),
                received_at=ts,
            )
        )
    return out, late


def rows(client: Client, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    return [tuple(r) for r in client.query(sql, parameters=params).result_rows]


def test_every_window_equals_sql_over_the_raw_events(live: Settings) -> None:
    rng = random.Random(7)
    events, made_late = stream(rng, 12_000)
    produce(live, catalog(rng), events)
    run("ingest", live, in_thread=True, drain=True)  # events and items into ClickHouse
    run("features", live, in_thread=True, drain=True)
    client = connect(live)

    late = int(client.command("SELECT count() FROM late_events"))
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
        for key, values in got.items():
            assert values == pytest.approx(expected[key], rel=1e-9, abs=1e-9), (spec, key)
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
        for key, values in stored.items():
            assert values == pytest.approx(affinity[key], rel=1e-9, abs=1e-9), (spec, key)
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


_READ_TABLES = """
import json, sys
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
client = connect(Settings.from_env())
out = {}
for table in ("item_features", "creator_features", "user_features", "user_affinity"):
    rows = client.query(f"SELECT * EXCEPT version FROM {table} FINAL").result_rows
    out[table] = sorted([str(v) if not isinstance(v, float) else v for v in r] for r in rows)
out["late_events"] = int(client.command("SELECT count() FROM late_events FINAL"))
print(json.dumps(out))
"""

