"""How long raw events and impressions are kept: a ClickHouse TTL on each table, from the
`retention_days` setting (0: kept for ever), set again at every start so that a changed
setting takes effect. ClickHouse drops expired rows as it merges parts (on a cluster, on each
replica's local table: `swipeloop.cluster`). Everything derived from them (features, vectors,
models) has its own life."""

from __future__ import annotations

from clickhouse_connect.driver.client import Client

from swipeloop.cluster import LOCAL, of, rewrite
from swipeloop.settings import Settings

RETAINED = (("events", "client_ts"), ("impressions", "served_at"))  # table, its time column


def statements(days: int, has_ttl: set[str]) -> list[str]:
    """What sets a retention of `days` (0: removes it from the tables in `has_ttl`)."""
    if days:
        return [
            f"ALTER TABLE {table} MODIFY TTL toDateTime({column}) + INTERVAL {int(days)} DAY"
            for table, column in RETAINED
        ]
    return [f"ALTER TABLE {table} REMOVE TTL" for table, _ in RETAINED if table in has_ttl]


def apply_retention(client: Client, settings: Settings) -> list[str]:
    """Set the tables' TTL to `settings.retention_days`; the statements run, as written."""
    cluster = of(client, settings.clickhouse_cluster)
    suffix = LOCAL if cluster else ""
    rows = client.query(
        "SELECT name, create_table_query FROM system.tables "
        "WHERE database = currentDatabase() AND name IN {names:Array(String)}",
        parameters={"names": [table + suffix for table, _ in RETAINED]},
    ).result_rows
    has_ttl = {str(name).removesuffix(suffix) for name, query in rows if " TTL " in str(query)}
    ran = []
    for statement in statements(settings.retention_days, has_ttl):
        for one in rewrite(statement, cluster):
            client.command(one)
            ran.append(one)
    return ran
