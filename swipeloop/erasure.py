"""Forgetting a user: what ClickHouse holds of them, deleted, and their erasure recorded in
`erasures`, which every part that holds user data follows (`Erased`): the flows' sinks drop
the user's rows and delete any that landed before they knew, the embeddings flow drops the
user's vector, the feed replicas their seen set, signals and vector. An erased id stays
erased: events that still carry it are dropped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from clickhouse_connect.driver.client import Client

from swipeloop.cluster import of, on_cluster

log = logging.getLogger(__name__)

# Every table with a row per user action or per user; all have `user_id`.
USER_TABLES = (
    "events",
    "impressions",
    "session_seqs",
    "late_events",
    "user_features",
    "user_affinity",
    "user_embeddings",
)
# A dead letter is raw text: it names the user as a JSON `user_id` field, exactly.
_DLQ_MATCH = "position(payload, concat('\"user_id\":', toJSONString({u:String}))) > 0"


def erase(client: Client, user_id: str, now: datetime, cluster: str = "") -> int:
    """Record the erasure, then delete what ClickHouse holds of the user (on every shard of
    `cluster`, if named); rows deleted."""
    record(client, user_id, now)
    held = sum(remaining(client, user_id).values())
    delete_user(client, user_id, cluster)
    return held


def record(client: Client, user_id: str, erased_at: datetime) -> None:
    """Note the erasure (what every follower reads), before anything is deleted."""
    client.insert("erasures", [[user_id, erased_at]], column_names=["user_id", "erased_at"])


def delete_user(client: Client, user_id: str, cluster: str = "") -> None:
    """Delete the user's rows from every table of user data and the dead letters that name
    them (on every shard of `cluster`, if named). The id travels as a parameter, never in
    the SQL."""
    on = of(client, cluster)
    for table in USER_TABLES:
        client.command(
            on_cluster(f"DELETE FROM {table} WHERE user_id = {{u:String}}", on),
            parameters={"u": user_id},
        )
    client.command(on_cluster(f"DELETE FROM dlq WHERE {_DLQ_MATCH}", on), parameters={"u": user_id})


def remaining(client: Client, user_id: str) -> dict[str, int]:
    """Rows of the user in each table of user data and the DLQ (all zero once erased)."""
    counts = {}
    for table in (*USER_TABLES, "dlq"):
        where = _DLQ_MATCH if table == "dlq" else "user_id = {u:String}"  # fixed clauses
        sql = f"SELECT count() FROM {table} WHERE {where}"
        counts[table] = int(client.query(sql, parameters={"u": user_id}).result_rows[0][0])
    return counts


class Erased:
    """The erased user ids, as `erasures` holds them; `refresh` reads the table again when
    it has grown (one count query otherwise) and returns the ids new to this follower."""

    def __init__(self) -> None:
        self.users: frozenset[str] = frozenset()
        self.at: dict[str, datetime] = {}  # when each was erased
        self._rows = 0

    def refresh(self, client: Client) -> set[str]:
        """Ids erased since the last refresh (none when the table has not grown)."""
        rows = int(client.query("SELECT count() FROM erasures").result_rows[0][0])
        if rows == self._rows:
            return set()
        result = client.query("SELECT user_id, max(erased_at) FROM erasures GROUP BY user_id")
        self.at = {str(user): at.replace(tzinfo=UTC) for user, at in result.result_rows}
        new = set(self.at) - self.users
        self.users, self._rows = frozenset(self.at), rows
        if new:
            log.info("%d user(s) erased; their data is dropped from now on", len(new))
        return new
