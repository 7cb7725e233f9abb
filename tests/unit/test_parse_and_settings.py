import uuid
from pathlib import Path

import msgspec
import pytest

from dataflows.parse import MAX_MESSAGE_BYTES, ROUTES, Rejected, month, row_line
from swipeloop.migrations import load
from swipeloop.settings import Settings, SettingsError
from training.evaluation import auc as _auc


def test_event_row_keeps_source_offsets() -> None:
    ev = {
        "event_id": str(uuid.uuid4()),
        "user_id": "u",
        "item_id": "v",
        "kind": "like",
        "client_ts": "2026-11-28T10:00:00+01:00",
        "session_id": "s",
        "seq": 1,
        "received_at": "2026-11-28T09:00:01Z",
    }
    route = ROUTES["events.actions"]
    contract = route.parse(msgspec.json.encode(ev))
    row = msgspec.json.decode(row_line(contract, "events.actions", 2, 41, "e1"))
    assert (row["topic"], row["partition"], row["offset"]) == ("events.actions", 2, 41)
    assert row["broker_epoch"] == "e1"
    assert row["event_id"] == ev["event_id"] and row["ts_clamped"] is False
    assert route.month_of is not None and route.month_of(contract) == 202611
    assert month(contract.client_ts.replace(day=1, hour=0)) == 202610  # 00:00+01:00 is Oct 31


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"{", "truncated"),
        (b"{]", "malformed"),
        (b'{"item_id": "v"}', "missing required field"),
        (b"x" * (MAX_MESSAGE_BYTES + 1), "exceeds"),
    ],
)
def test_bad_messages_are_rejected_with_a_reason(value: bytes | None, reason: str) -> None:
    with pytest.raises(Rejected, match=reason):
        ROUTES["items"].parse(value)


def test_settings_from_env() -> None:
    s = Settings.from_env(
        {
            "SWIPELOOP_KAFKA_BOOTSTRAP": "redpanda:9092",
            "SWIPELOOP_TOPIC_PARTITIONS": "6",
            "SWIPELOOP_DATA_DIR": "/data",
            "SWIPELOOP_ACK_TIMEOUT_S": "0.5",
        }
    )
    assert s.kafka_bootstrap == "redpanda:9092" and not s.embedded_broker
    assert s.topic_partitions == 6 and s.data_dir == Path("/data") and s.ack_timeout_s == 0.5
    assert Settings.from_env({}).embedded_broker
    assert Settings.from_env({}).clickhouse_dsn.startswith("chdb://")


def test_clickhouse_login_is_encoded_into_the_url() -> None:
    from urllib.parse import unquote, urlsplit

    password = "p@ss:w/rd#?%&"  # compose cannot percent-encode what it pastes into a URL
    s = Settings.from_env(
        {
            "SWIPELOOP_CLICKHOUSE_URL": "http://clickhouse:8123",
            "SWIPELOOP_CLICKHOUSE_USER": "swipeloop",
            "SWIPELOOP_CLICKHOUSE_PASSWORD": password,
        }
    )
    url = urlsplit(s.clickhouse_dsn)
    assert (url.hostname, url.port, url.username) == ("clickhouse", 8123, "swipeloop")
    assert url.password and unquote(url.password) == password
    assert password not in repr(s)
    # a login of its own replaces the URL's; without one the URL is used as given
    old = Settings(clickhouse_url="http://a:b@ch:8123", clickhouse_user="c")
    assert old.clickhouse_dsn == "http://c@ch:8123"
    assert Settings(clickhouse_url="http://a:b@ch:8123").clickhouse_dsn == "http://a:b@ch:8123"


def test_settings_reject_bad_numbers() -> None:
    with pytest.raises(SettingsError, match="SWIPELOOP_TOPIC_PARTITIONS"):
        Settings.from_env({"SWIPELOOP_TOPIC_PARTITIONS": "many"})


@pytest.mark.parametrize(
    ("env", "says"),
    [
        (
            {"SWIPELOOP_TOPIC_PARTITIONS": "abc"},
            "SWIPELOOP_TOPIC_PARTITIONS='abc': expected an integer",
        ),
        (
            {"SWIPELOOP_TOPIC_PARTITIONS": "-5"},
            "SWIPELOOP_TOPIC_PARTITIONS='-5': expected an integer >= 1",
        ),
        (
            {"SWIPELOOP_EMBEDDING_FP16": "ture"},
            "SWIPELOOP_EMBEDDING_FP16='ture': expected true or false",
        ),
        (
            {"SWIPELOOP_API_PORT": "70000"},
            "SWIPELOOP_API_PORT='70000': expected an integer <= 65535",
        ),
        (
            {"SWIPELOOP_API_ROLE": "both"},
            "SWIPELOOP_API_ROLE='both': expected one of all, ingest, feed",
        ),
        (
            {"SWIPELOOP_TRAIN_CRON": "nightly"},
            "SWIPELOOP_TRAIN_CRON='nightly': expected a cron line",
        ),
        ({"SWIPELOOP_FEED_DEFAULT_N": "500"}, "SWIPELOOP_FEED_DEFAULT_N=500: expected at most"),
        ({"SWIPELOOP_TRAIN_CORN": "0 4 * * *"}, "(did you mean SWIPELOOP_TRAIN_CRON?)"),
        (
            {"SWIPELOOP_NOTHING_LIKE_IT": "1"},
            "SWIPELOOP_NOTHING_LIKE_IT is not a swipeloop setting",
        ),
    ],
)
def test_a_bad_variable_is_named_with_what_it_expects(env: dict[str, str], says: str) -> None:
    with pytest.raises(SettingsError) as raised:
        Settings.from_env(env)
    assert says in str(raised.value)
    assert "\n" not in str(raised.value)


def test_values_are_parsed_once_into_their_types() -> None:
    s = Settings.from_env(
        {
            "SWIPELOOP_EMBEDDING_FP16": "TRUE",
            "SWIPELOOP_DATA_DIR": "/tmp/x",
            "SWIPELOOP_API_PORT": "0",
        }
    )
    assert (s.embedding_fp16, s.data_dir, s.api_port) == (True, Path("/tmp/x"), 0)
    assert (
        Settings.from_env({"SWIPELOOP_EMBEDDING_FP16": "0", "SWIPELOOP_KAFKA_BOOTSTRAP": ""})
        == Settings()
    )


def test_migrations_are_numbered_and_reversible() -> None:
    migrations = load()
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert all(m.up and m.down for m in migrations)


def test_auc() -> None:
    import numpy as np

    labels = np.array([0, 0, 1, 1], dtype=np.int8)
    assert _auc(labels, np.array([0.1, 0.2, 0.8, 0.9])) == 1.0
    assert _auc(labels, np.array([0.9, 0.8, 0.2, 0.1])) == 0.0
    assert _auc(np.array([1, 1], dtype=np.int8), np.array([0.1, 0.2])) is None


def test_feed_workers_need_a_clickhouse_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from cli.app import app

    monkeypatch.setenv("SWIPELOOP_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.delenv("SWIPELOOP_CLICKHOUSE_URL", raising=False)
    result = CliRunner().invoke(app, ["api", "--role", "feed", "--workers", "2"])
    assert result.exit_code == 2
    assert "SWIPELOOP_CLICKHOUSE_URL" in result.output
