"""Shared fixtures: one chdb engine path per test process (chdb's rule), a database per test."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
from clickhouse_connect.driver.client import Client

from dataflows.runner import run_in_thread
from swipeloop import topics
from swipeloop.broker import EmbeddedBroker, free_port
from swipeloop.clickhouse import connect
from swipeloop.contracts import Item, ReceivedEvent, topic_for
from swipeloop.kafka import durable_producer
from swipeloop.migrations import migrate
from swipeloop.settings import Settings
from swipeloop.waiting import wait_for


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one embedded ClickHouse data path this test process may open."""
    return tmp_path_factory.mktemp("clickhouse")


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh memory-only Tansu broker (starts in ~0.1 s)."""
    with EmbeddedBroker() as running:
        yield running


def isolated(chdb_path: Path, data_dir: Path, **changes: Any) -> Settings:
    """Settings of an isolated test: own database on the process's chdb path, own data dir,
    free API port, quick lateness and publication; `changes` on top."""
    return Settings(
        clickhouse_url=f"chdb://{chdb_path}",
        clickhouse_database=f"t_{uuid.uuid4().hex[:10]}",
        data_dir=data_dir,
        api_port=free_port(),
        seed_items=0,
        feature_lateness_s=2,
        publish_interval_s=0.5,
        model_poll_s=0.5,
    ).with_(**changes)


@pytest.fixture
def settings(tmp_path: Path, chdb_path: Path) -> Settings:
    """Settings of an isolated test (`isolated`)."""
    return isolated(chdb_path, tmp_path)


@pytest.fixture
def live(settings: Settings, broker: EmbeddedBroker) -> Settings:
    """Settings on a fresh broker with topics, and a migrated database (a module may have its
    own)."""
    wired = settings.with_(
        kafka_bootstrap=broker.bootstrap, broker_epoch=broker.epoch, flow_epoch_s=0.5
    )
    topics.ensure_topics(wired)
    migrate(connect(wired))
    return wired


@pytest.fixture
def ingest_thread(live: Settings) -> Iterator[threading.Thread]:
    """The ingest flow in a thread of this process, on `live`."""
    stop = threading.Event()
    failed: list[BaseException] = []
    thread = run_in_thread("ingest", live, stop, failed.append)
    yield thread
    stop.set()
    thread.join(timeout=30)
    assert not failed, failed


def swipeloop_process(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`swipeloop ARGS` in its own process (its own chdb path: one per process), stderr kept."""
    return subprocess.Popen(
        [sys.executable, "-m", "cli.app", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def produce(settings: Settings, items: list[Item], events: list[ReceivedEvent]) -> None:
    """Items and events onto the broker as the API stores them; all acknowledged."""
    producer = durable_producer(settings, **{"linger.ms": 5})
    for it in items:
        producer.produce(topics.ITEMS, key=it.item_id.encode(), value=msgspec.json.encode(it))
    for ev in events:
        value = msgspec.json.encode(ev)
        producer.produce(topic_for(ev.kind), key=ev.user_id.encode(), value=value)
    assert producer.flush(30) == 0


def drain(flow: str, env: dict[str, str]) -> None:
    """`swipeloop flows run FLOW --drain` in its own process, to the end of every partition."""
    done = swipeloop_process("flows", "run", flow, "--drain", env=env)
    _, err = done.communicate(timeout=180)
    assert done.returncode == 0, err.decode()[-2000:]


def role_env(live: Settings, data_dir: Path, database: str, **extra: str) -> dict[str, str]:
    """The environment of a `swipeloop` process with its own data dir, recovery store and
    database (on the chdb path next to `data_dir`), snapshotting every 0.3 s."""
    return {
        **os.environ,
        "SWIPELOOP_KAFKA_BOOTSTRAP": live.kafka_bootstrap or "",
        "SWIPELOOP_BROKER_EPOCH": live.broker_epoch,
        "SWIPELOOP_DATA_DIR": str(data_dir),
        "SWIPELOOP_CLICKHOUSE_URL": f"chdb://{data_dir.parent / 'clickhouse'}",
        "SWIPELOOP_CLICKHOUSE_DATABASE": database,
        "SWIPELOOP_FLOW_EPOCH_S": "0.3",
        "SWIPELOOP_METRICS_PORT": "0",
        **{f"SWIPELOOP_{name.upper()}": value for name, value in extra.items()},
    }


def json_of(code: str, env: dict[str, str]) -> Any:
    """What a Python snippet prints as JSON, run in its own process (its own chdb path)."""
    read = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, timeout=120, check=True
    )
    return json.loads(read.stdout)


def wait_until(check: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll until check() is true; fail the test with `what` after the timeout."""
    if not wait_for(check, timeout_s, every_s=0.2):
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def scalar(client: Client, sql: str) -> int:
    """The one number `sql` returns."""
    value = client.command(sql)
    assert isinstance(value, int), f"{sql} returned {value!r}"
    return value
