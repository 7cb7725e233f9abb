"""Raw events and impressions expire after `retention_days` (a ClickHouse TTL, set at every
start, removed with 0), and the nightly training reads only its window."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from clickhouse_connect.driver.client import Client
from typer.testing import CliRunner

from cli.app import app
from swipeloop.clickhouse import connect
from swipeloop.migrations import migrate
from swipeloop.retention import apply_retention
from swipeloop.settings import Settings, SettingsError
from tests.conftest import scalar

pytestmark = pytest.mark.integration


def created(client: Client, table: str) -> str:
    """The table's CREATE statement as ClickHouse holds it now."""
    return str(
        client.command(
            "SELECT create_table_query FROM system.tables "
            "WHERE database = currentDatabase() AND name = {t:String}",
            parameters={"t": table},
        )
    )


def ttl(client: Client, table: str) -> bool:
    return " TTL " in created(client, table)


def test_old_events_and_impressions_expire_and_zero_keeps_them(settings: Settings) -> None:
    client = connect(settings)
    migrate(client)
    now = datetime.now(UTC)
    for age_days in (40, 1):
        at = now - timedelta(days=age_days)
        client.insert(
            "events",
            [[uuid.uuid4(), "u", f"i{age_days}", "watch", 9000, at, at, "s", age_days]],
            column_names=[
                "event_id", "user_id", "item_id", "kind", "watch_ms", "client_ts",
                "received_at", "session_id", "seq",
            ],
        )  # fmt: skip
        client.insert(
            "impressions",
            [[f"r{age_days}", "u", f"i{age_days}", 0, "ann", "v0", at]],
            column_names=[
                "request_id", "user_id", "item_id", "position", "source", "model_version",
                "served_at",
            ],
        )  # fmt: skip
    assert apply_retention(client, settings.with_(retention_days=0)) == []  # nothing to remove
    keep = settings.with_(retention_days=30, training_window_days=7)
    assert len(apply_retention(client, keep)) == 2
    assert ttl(client, "events") and ttl(client, "impressions")
    for table in ("events", "impressions"):
        client.command(f"OPTIMIZE TABLE {table} FINAL")  # a merge applies the TTL
    assert scalar(client, "SELECT count() FROM events") == 1
    assert scalar(client, "SELECT count() FROM impressions") == 1
    assert client.command("SELECT item_id FROM events") == "i1"
    assert len(apply_retention(client, keep)) == 2  # again at every start: the same TTL
    assert len(apply_retention(client, settings.with_(retention_days=0))) == 2
    assert not ttl(client, "events") and not ttl(client, "impressions")


def test_the_migrate_command_sets_the_retention(settings: Settings) -> None:
    env = {
        "SWIPELOOP_CLICKHOUSE_URL": settings.clickhouse_url or "",
        "SWIPELOOP_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "SWIPELOOP_DATA_DIR": str(settings.data_dir),
        "SWIPELOOP_RETENTION_DAYS": "45",
    }
    result = CliRunner().invoke(app, ["migrate"], env=env)
    assert result.exit_code == 0, result.output
    assert "events and impressions kept 45 days" in result.output
    assert "TTL toDateTime(client_ts) + toIntervalDay(45)" in created(connect(settings), "events")


def test_a_training_window_longer_than_the_retention_is_refused() -> None:
    with pytest.raises(SettingsError, match="TRAINING_WINDOW_DAYS=30: expected at most"):
        Settings.from_env({"SWIPELOOP_RETENTION_DAYS": "7", "SWIPELOOP_TRAINING_WINDOW_DAYS": "30"})
    assert Settings.from_env({"SWIPELOOP_RETENTION_DAYS": "0"}).training_window_days == 14
