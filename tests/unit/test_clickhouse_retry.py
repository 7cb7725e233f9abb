"""with_retry: ClickHouse away or busy is waited out; a statement it refuses fails at once."""

from __future__ import annotations

import pytest
from clickhouse_connect.driver.exceptions import DatabaseError, OperationalError

from swipeloop.clickhouse import StatementError, connect, transient, with_retry
from swipeloop.settings import Settings


def test_a_statement_clickhouse_refuses_fails_at_once_naming_it(settings: Settings) -> None:
    client = connect(settings)
    calls = 0

    def bad_read() -> object:
        nonlocal calls
        calls += 1
        return client.query("SELECT * FROM no_such_table WHERE user_id = 'u1'")

    named = r"read of users failed \(SELECT \* FROM no_such_table WHERE"
    with pytest.raises(StatementError, match=named) as err:
        with_retry("read of users", bad_read)
    assert calls == 1  # at once: not retried (no wall-time bound: a loaded machine is slow)
    assert err.value.name == "UNKNOWN_TABLE"
    assert isinstance(err.value.__cause__, DatabaseError) and not transient(err.value.__cause__)


def test_a_refused_insert_names_its_table(settings: Settings) -> None:
    client = connect(settings)
    rows = b'{"user_id": "u1"}'
    with pytest.raises(StatementError, match=r"insert failed \(INSERT INTO no_such_table\)"):
        with_retry("insert", lambda: client.raw_insert("no_such_table", insert_block=rows))


def test_clickhouse_away_is_retried_until_it_answers(caplog: pytest.LogCaptureFixture) -> None:
    attempts = 0

    def away_twice() -> str:
        nonlocal attempts
        attempts += 1
        if attempts <= 2:
            raise OperationalError("connection refused")
        return "answered"

    assert with_retry("read of erasures", away_twice) == "answered"
    assert attempts == 3
    assert caplog.text.count("ClickHouse read of erasures failed (connection refused)") == 2


def test_a_busy_server_is_transient_and_a_wrong_statement_is_not() -> None:
    assert transient(DatabaseError("too many queries", code=202))
    assert transient(OperationalError("network error"))
    assert not transient(DatabaseError("syntax error", code=62))
    assert not transient(ValueError("not a ClickHouse error"))


def test_a_refusal_inside_another_retried_call_is_not_retried_again(settings: Settings) -> None:
    client = connect(settings)

    def inner() -> object:
        return with_retry("inner read", lambda: client.query("SELECT nonsense"))

    with pytest.raises(StatementError, match=r"^ClickHouse inner read failed \(SELECT nonsense\)"):
        with_retry("outer read", inner)
