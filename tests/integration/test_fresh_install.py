"""A fresh install: ready with an empty catalog once broker, ClickHouse and flows answer, and a
demo catalog only when `swipeloop seed` is asked for one."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.stack import Stack
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
from tests.conftest import scalar, wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    with Stack(settings.with_(seed_items=0), schedule_training=False) as running:
        running.serve_in_thread()
        yield running


def test_ready_on_an_empty_catalog_then_seeded(stack: Stack) -> None:
    api = httpx.Client(base_url=stack.url, timeout=30)
    wait_until(lambda: api.get("/health/ready").status_code == 200, 60, "API ready")
    body = api.get("/health/ready").json()
    assert body["catalog_items"] == 0
    assert set(body["checks"]) == {
        "broker",
        "clickhouse",
        "flow:ingest",
        "flow:features",
        "flow:embeddings",
    }
    assert all(body["checks"].values()), body

    # the optional demo catalog, posted to the items topic as `swipeloop up` posts its own
    s = stack.settings
    env = {"SWIPELOOP_KAFKA_BOOTSTRAP": s.kafka_bootstrap or ""}
    for _ in range(2):  # the same ids again: replaced, not added
        result = CliRunner().invoke(app, ["seed", "--items", "120"], env=env)
        assert result.exit_code == 0, result.output
        assert "posted 120 demo items" in result.output
    client = connect(s)
    wait_until(lambda: scalar(client, "SELECT count() FROM items FINAL") == 120, 60, "items stored")
    wait_until(lambda: api.get("/health/ready").json()["catalog_items"] == 120, 30, "API's catalog")
    state = stack.services.feed.state  # its shared lists follow within a second
    wait_until(lambda: len(state.catalog_order()) == 120, 30, "the API's catalog order")
    feed = api.get("/v1/feed", params={"user_id": "first-visitor", "n": 10}).json()
    assert len(feed["items"]) == 10


def test_seed_needs_a_broker_server() -> None:
    result = CliRunner().invoke(app, ["seed"], env={"SWIPELOOP_KAFKA_BOOTSTRAP": ""})
    assert result.exit_code == 2
    assert "SWIPELOOP_KAFKA_BOOTSTRAP" in result.output
