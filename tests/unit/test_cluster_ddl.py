"""The cluster variant of every migration (swipeloop.cluster): each statement, forward and
back, read by ClickHouse's own parser (chdb's formatQuery). No cluster runs here, so the
statements are parsed and their shape checked, never executed."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import clickhouse_connect
import pytest
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import DatabaseError

from swipeloop import retention
from swipeloop.cluster import Cluster, UnsupportedStatement, named, of, on_cluster, rewrite
from swipeloop.erasure import USER_TABLES
from swipeloop.migrations import LEDGER, Migration, load

CLUSTER = Cluster("main", "swipeloop")
MIGRATIONS = load()
_DISTRIBUTED = re.compile(r"Distributed\('main', 'swipeloop', '(\w+)_local', (.+)\)$")


@pytest.fixture(scope="module")
def parser(chdb_path: Path) -> Iterator[Client]:
    """A client on the process's chdb engine, for its parser (no table is touched)."""
    client = clickhouse_connect.get_client(dsn=f"chdb://{chdb_path}")
    yield client
    client.close()


def parsed(parser: Client, sql: str) -> str:
    """`sql` as ClickHouse's parser reads it back, on one line (a syntax error raises)."""
    result = parser.query("SELECT formatQuerySingleLine({s:String})", parameters={"s": sql})
    return str(result.result_rows[0][0])


def statements(migration: Migration) -> list[str]:
    return [*migration.up, *migration.down]


@pytest.mark.parametrize("migration", MIGRATIONS, ids=lambda m: f"{m.version:04d}_{m.name}")
def test_every_statement_parses_on_a_cluster_forward_and_back(
    parser: Client, migration: Migration
) -> None:
    for statement in statements(migration):
        rewritten = rewrite(statement, CLUSTER)
        assert rewritten != [statement]
        for sql in rewritten:
            text = parsed(parser, sql)
            assert " ON CLUSTER main" in text, text
            assert "non_replicated_deduplication_window" not in text
            if text.startswith("CREATE TABLE") and "_local ON CLUSTER" in text:
                assert "ENGINE = Replicated" in text, text
                assert "('/clickhouse/tables/{shard}/{database}/" in text, text
                assert "'{replica}'" in text


def test_the_retention_reaches_each_replica_s_local_table(parser: Client) -> None:
    for days, has_ttl in ((30, set()), (0, {"events", "impressions"})):
        for statement in retention.statements(days, has_ttl):
            (local,) = rewrite(statement, CLUSTER)
            text = parsed(parser, local)
            assert re.match(
                r"ALTER TABLE swipeloop\.(events|impressions)_local ON CLUSTER main", text
            )
            assert ("TTL toDateTime(" in text) == bool(days), text


def test_the_parser_refuses_what_is_not_sql(parser: Client) -> None:
    with pytest.raises(DatabaseError, match="Syntax error"):
        parsed(parser, "CREATE TABLE t ON CLUSTER main (x UInt8 ENGINE = MergeTree")


def test_without_a_cluster_every_statement_is_unchanged() -> None:
    for migration in MIGRATIONS:
        for statement in [*statements(migration), LEDGER]:
            assert rewrite(statement, None) == [statement]
    delete = "DELETE FROM events WHERE user_id = {u:String}"
    assert on_cluster(delete, None) == delete
    assert named("", "swipeloop") is None


def test_each_table_is_a_replicated_local_table_under_a_distributed_one(parser: Client) -> None:
    created = {}
    for statement in [LEDGER, *(s for m in MIGRATIONS for s in statements(m))]:
        if not statement.upper().startswith("CREATE TABLE"):
            continue
        local, distributed = (parsed(parser, s) for s in rewrite(statement, CLUSTER))
        over = _DISTRIBUTED.search(distributed)
        assert over, distributed
        table, key = over.groups()
        assert distributed.startswith(
            f"CREATE TABLE IF NOT EXISTS swipeloop.{table} ON CLUSTER main "
            f"AS swipeloop.{table}_local ENGINE = Distributed("
        )
        assert local.startswith(f"CREATE TABLE IF NOT EXISTS swipeloop.{table}_local ON CLUSTER")
        column = re.fullmatch(r"cityHash64\((\w+)\)", key)
        assert column and f"`{column.group(1)}` " in local, "sharded by one of its columns"
        created[table] = key
    assert created["events"] == created["impressions"] == "cityHash64(user_id)"
    assert created["items"] == "cityHash64(item_id)"
    assert "schema_migrations" in created


def test_a_replicated_table_keeps_the_dedup_window_its_file_sized(parser: Client) -> None:
    events = next(m for m in MIGRATIONS if m.name == "events").up[0]
    local = parsed(parser, rewrite(events, CLUSTER)[0])
    assert "ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/{database}/" in local
    assert "events_local', '{replica}', received_at)" in local, "the version column kept"
    assert "SETTINGS replicated_deduplication_window = 10000" in local


def test_a_materialized_view_moves_rows_between_local_tables_sharded_alike() -> None:
    keys, views = {}, []
    for migration in MIGRATIONS:
        for sql in (s for statement in migration.up for s in rewrite(statement, CLUSTER)):
            if over := _DISTRIBUTED.search(sql):
                keys[over.group(1)] = over.group(2)
            if sql.startswith("CREATE MATERIALIZED VIEW"):
                views.append(sql)
    assert views
    for view in views:
        target = re.search(r" TO swipeloop\.(\w+)_local AS", view)
        source = re.search(r"\bFROM swipeloop\.(\w+)_local\b", view)
        assert target and source, view
        assert keys[target.group(1)] == keys[source.group(1)], "each shard's rows stay on it"


def test_column_changes_reach_both_tables_and_mutations_the_local_one(parser: Client) -> None:
    add = rewrite("ALTER TABLE items ADD COLUMN IF NOT EXISTS x UInt8 DEFAULT 0", CLUSTER)
    assert [s.split(" ON ")[0] for s in add] == [
        "ALTER TABLE swipeloop.items_local",  # the local tables first: they hold the data
        "ALTER TABLE swipeloop.items",
    ]
    drop = rewrite("ALTER TABLE items DROP COLUMN IF EXISTS x", CLUSTER)
    assert [s.split(" ON ")[0] for s in drop] == [
        "ALTER TABLE swipeloop.items",  # the Distributed one first: it never reads a lost column
        "ALTER TABLE swipeloop.items_local",
    ]
    mutation = "ALTER TABLE events DELETE WHERE user_id = 'u'"
    assert rewrite(mutation, CLUSTER) == [
        "ALTER TABLE swipeloop.events_local ON CLUSTER main DELETE WHERE user_id = 'u'"
    ]
    for sql in (*add, *drop):
        parsed(parser, sql)
    with pytest.raises(UnsupportedStatement, match="column and other changes"):
        rewrite("ALTER TABLE t ADD COLUMN x UInt8, DELETE WHERE 1", CLUSTER)


def test_a_dropped_table_goes_everywhere_at_once() -> None:
    assert rewrite("DROP TABLE IF EXISTS events", CLUSTER) == [
        "DROP TABLE IF EXISTS swipeloop.events ON CLUSTER main SYNC",
        "DROP TABLE IF EXISTS swipeloop.events_local ON CLUSTER main SYNC",
    ]
    assert rewrite("DROP VIEW IF EXISTS session_gaps", CLUSTER) == [
        "DROP VIEW IF EXISTS swipeloop.session_gaps ON CLUSTER main SYNC"
    ]


def test_runtime_mutations_run_on_every_shards_local_table(parser: Client) -> None:
    for table in (*USER_TABLES, "schema_migrations"):
        sql = on_cluster(f"DELETE FROM {table} WHERE user_id = {{u:String}}", CLUSTER)
        assert sql == (
            f"DELETE FROM swipeloop.{table}_local ON CLUSTER main WHERE user_id = {{u:String}}"
        )
        assert parsed(parser, sql) == sql
    others = [
        (
            "OPTIMIZE TABLE events FINAL",
            "OPTIMIZE TABLE swipeloop.events_local ON CLUSTER main FINAL",
        ),
        ("TRUNCATE dlq", "TRUNCATE swipeloop.dlq_local ON CLUSTER main"),
        (
            "CREATE DATABASE IF NOT EXISTS `swipeloop`",
            "CREATE DATABASE IF NOT EXISTS swipeloop ON CLUSTER main",
        ),
    ]
    for statement, expected in others:
        assert on_cluster(statement, CLUSTER) == expected
        parsed(parser, expected)
    with pytest.raises(UnsupportedStatement, match="not one statement"):
        on_cluster("ALTER TABLE events ADD COLUMN x UInt8", CLUSTER)


def test_odd_names_are_quoted_and_the_parser_agrees(parser: Client) -> None:
    odd = Cluster("my-cluster", "swipe loop")
    sql = (
        "CREATE TABLE IF NOT EXISTS `odd table` (k String DEFAULT 'ORDER BY nope' -- ORDER BY no\n)"
        " ENGINE = MergeTree() ORDER BY tuple()"
    )
    local, distributed = rewrite(sql, odd)
    assert local.startswith("CREATE TABLE IF NOT EXISTS `swipe loop`.`odd table_local` ON CLUSTER")
    assert (
        "ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/{database}/odd table_local'"
        in local
    )
    assert distributed.endswith(
        "Distributed('my-cluster', 'swipe loop', 'odd table_local', rand())"
    ), "a table ordered by nothing is sharded at random"
    for each in (local, distributed):
        assert "ON CLUSTER `my-cluster`" in parsed(parser, each)
    strings = "CREATE TABLE t (k String DEFAULT 'x, y') ENGINE = MergeTree ORDER BY (k, 'ORDER BY')"
    assert rewrite(strings, CLUSTER)[1].endswith("'t_local', cityHash64(k))")


def test_shapes_it_does_not_know_are_refused_not_run_on_one_server() -> None:
    for sql in (
        "CREATE TABLE t (x UInt8) ENGINE = Memory",
        "CREATE TABLE t (x UInt8) ENGINE = ReplicatedMergeTree ORDER BY x",
        "CREATE TABLE t ON CLUSTER other (x UInt8) ENGINE = MergeTree ORDER BY x",
        "CREATE TABLE t AS s",
        "CREATE MATERIALIZED VIEW m ENGINE = MergeTree ORDER BY x AS SELECT x FROM s",
        "CREATE MATERIALIZED VIEW m TO t AS SELECT x FROM (SELECT x FROM s)",
        "RENAME TABLE a TO b",
        "CREATE TABLE",
        "",
    ):
        with pytest.raises(UnsupportedStatement):
            rewrite(sql, CLUSTER)
    assert rewrite("INSERT INTO items SELECT * FROM items", CLUSTER) == [
        "INSERT INTO items SELECT * FROM items"
    ], "data moves through the Distributed tables, as on one server"


def test_the_cluster_takes_the_clients_database(parser: Client) -> None:
    assert of(parser, "") is None
    assert of(parser, "main") == Cluster("main", str(parser.command("SELECT currentDatabase()")))
