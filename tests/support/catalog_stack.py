"""The whole system in this process, serving a demo catalog: what the feed and console tests
run against (one per module)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from cli.stack import Stack
from sim.demo_catalog import demo_catalog
from sim.simulator import msgspec_item
from swipeloop.broker import free_port
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
from tests.conftest import wait_until


@contextmanager
def catalog_stack(
    chdb_path: Path, data_dir: Path, items: int, seed: int, **changes: Any
) -> Iterator[Stack]:
    """A stack of its own (a database on the process's chdb path, `changes` to the settings),
    serving once `items` demo videos are in ClickHouse, ready, and in the API's catalog."""
    settings = Settings(
        clickhouse_url=f"chdb://{chdb_path}",
        clickhouse_database=f"t_{uuid.uuid4().hex[:10]}",
        data_dir=data_dir,
        api_port=free_port(),
        seed_items=0,
        **changes,
    )
    with Stack(settings, schedule_training=False) as running:
        running.serve_in_thread()
        api = httpx.Client(base_url=running.url, timeout=30)
        catalog = [msgspec_item(it) for it in demo_catalog(items, seed=seed)]
        for at in range(0, items, 500):
            batch = catalog[at : at + 500]
            assert api.post("/v1/items", json={"items": batch}).status_code == 202
        client = connect(settings)
        wait_until(
            lambda: client.command("SELECT count() FROM items FINAL") == items,
            120,
            "the catalog in ClickHouse",
        )
        wait_until(lambda: api.get("/health/ready").status_code == 200, 60, "API ready")
        # the API follows the catalog topic; its shared lists (the catalog order is the last
        # resort of retrieval) are refreshed once a second from what it holds
        state = running.services.feed.state
        wait_until(lambda: len(state.catalog_order()) == items, 60, "the API's whole catalog")
        yield running
