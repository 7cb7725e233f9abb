"""The operator's commands on the real parts: `swipeloop migrate` up and down, `swipeloop flows
list | run | status` on the embedded broker and ClickHouse engine."""

from __future__ import annotations

import json
import os
import uuid
from datetime import UTC, datetime

import httpx
import pytest
from typer.testing import CliRunner

from cli.app import app
from swipeloop import topics
from swipeloop.broker import EmbeddedBroker, free_port
from swipeloop.clickhouse import connect
from swipeloop.contracts import Item, ReceivedEvent
from swipeloop.migrations import applied, load
from swipeloop.settings import Settings
from tests.conftest import produce, swipeloop_process, wait_until


def env_of(settings: Settings) -> dict[str, str]:
    return {
        "SWIPELOOP_CLICKHOUSE_URL": settings.clickhouse_url or "",
        "SWIPELOOP_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "SWIPELOOP_DATA_DIR": str(settings.data_dir),
        "SWIPELOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "SWIPELOOP_BROKER_EPOCH": settings.broker_epoch,
        "SWIPELOOP_METRICS_PORT": "0",
    }


def tables(settings: Settings) -> set[str]:
    rows = connect(settings).query("SHOW TABLES").result_rows
    return {r[0] for r in rows} - {"schema_migrations"}


def test_migrations_go_up_and_down_and_up_again(settings: Settings) -> None:
    runner, env = CliRunner(), env_of(settings)
    newest = load()[-1].version
    first = runner.invoke(app, ["migrate"], env=env)
    assert first.exit_code == 0 and f"at version {newest}" in first.output
    everything = tables(settings)
    assert {"events", "items", "impressions", "dlq", "model_runs", "session_gaps"} <= everything
    again = runner.invoke(app, ["migrate"], env=env)
    assert "0 migration(s) applied" in again.output

    back = runner.invoke(app, ["migrate", "--down", str(newest - 12)], env=env)
    assert back.exit_code == 0 and "at version 12" in back.output
    assert "reversing 0014_model_runs_skew" in back.output and "model_runs" not in tables(settings)
    assert runner.invoke(app, ["migrate", "--to", "13"], env=env).exit_code == 0
    columns = connect(settings).query("DESCRIBE model_runs").result_rows
    assert "query_s" not in {c[0] for c in columns}  # 0013 made the table, 0014 added it

    assert runner.invoke(app, ["migrate", "--to", "5"], env=env).exit_code == 0
    assert applied(connect(settings)) == {1, 2, 3, 4, 5}
    assert "model_runs" not in tables(settings) and "item_embeddings" in tables(settings)
    assert runner.invoke(app, ["migrate", "--to", "0"], env=env).exit_code == 0
    assert tables(settings) == set()  # every down section undoes its up section

    assert runner.invoke(app, ["migrate"], env=env).exit_code == 0
    assert tables(settings) == everything
    both = runner.invoke(app, ["migrate", "--to", "3", "--down", "1"], env=env)
    assert both.exit_code != 0


@pytest.fixture
def live(settings: Settings, broker: EmbeddedBroker) -> Settings:
    wired = settings.with_(kafka_bootstrap=broker.bootstrap, broker_epoch=broker.epoch)
    topics.ensure_topics(wired)
    return wired


def test_flows_list_run_and_status(live: Settings) -> None:
    runner, env = CliRunner(), env_of(live)
    assert runner.invoke(app, ["migrate"], env=env).exit_code == 0
    listed = runner.invoke(app, ["flows", "list"], env=env)
    assert listed.exit_code == 0
    assert all(name in listed.stdout for name in ("ingest", "features", "embeddings"))
    before = runner.invoke(app, ["flows", "status", "-f", "json"], env=env)
    assert before.exit_code == 0 and json.loads(before.stdout)[0]["partitions"] == 0

    now = datetime.now(UTC)
    item = Item(item_id="i1", creator_id="c1", duration_ms=10_000, tags=[], created_at=now)
    events = [
        ReceivedEvent(
            event_id=uuid.uuid4(),
            user_id=f"u{n % 7}",
            item_id="i1",
            kind="watch",
            client_ts=now,
            received_at=now,
            session_id="s",
            seq=n,
            watch_ms=5_000,
        )
        for n in range(300)
    ]
    produce(live, [item], events)
    ran = runner.invoke(app, ["flows", "run", "ingest", "--drain", "--workers", "2"], env=env)
    assert ran.exit_code == 0, ran.output
    assert connect(live).command("SELECT count() FROM events") == 300

    status = runner.invoke(app, ["flows", "status", "--format", "json"], env=env)
    assert status.exit_code == 0, status.output
    ingest = next(row for row in json.loads(status.stdout) if row["flow"] == "ingest")
    assert ingest["partitions"] == 2  # one per worker, made on the first run
    assert ingest["runs"] == 1 and ingest["epoch"] is not None
    # the snapshotted offsets and what the broker holds past them: the events and the item
    # (the last epoch's offsets may not be snapshotted yet; a restart re-reads those)
    assert ingest["read"] > 0 and ingest["read"] + ingest["lag"] == 301
    unknown = runner.invoke(app, ["flows", "run", "nope"], env=env)
    assert unknown.exit_code != 0 and "unknown flow" in unknown.output


def test_a_flow_serves_its_metrics_on_bytewaxs_api_server(live: Settings) -> None:
    port = free_port()
    env = {**os.environ, **env_of(live), "SWIPELOOP_FLOW_API_PORT": str(port)}
    assert CliRunner().invoke(app, ["migrate"], env=env_of(live)).exit_code == 0
    flow = swipeloop_process("flows", "run", "ingest", env=env)
    try:

        def metrics() -> str:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
            except httpx.HTTPError:
                return ""

        wait_until(lambda: "swipeloop_consumer_lag{" in metrics(), 60, "the flow's /metrics")
        text = metrics()
        assert 'step="ingest.read",topic="events.actions"' in text  # ours, per partition
        assert httpx.get(f"http://127.0.0.1:{port}/dataflow", timeout=2).status_code == 200
        assert (
            live.data_dir / "dataflow" / "ingest" / "dataflow.json"
        ).is_file()  # not in the working dir
    finally:
        flow.terminate()
        assert flow.wait(30) == 0
