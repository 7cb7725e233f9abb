"""Numbered ClickHouse migrations: applied once each, in order, recorded in schema_migrations
(on a cluster, each statement as `swipeloop.cluster` rewrites it)."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources.abc import Traversable

from clickhouse_connect.driver.client import Client

from swipeloop import SQL, sql_files
from swipeloop.cluster import Cluster, of, on_cluster, rewrite

MIGRATIONS_DIR = SQL / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class BadMigrations(ValueError):
    """The migration files are missing, misnamed or numbered twice (the message says which)."""


@dataclass(frozen=True)
class Migration:
    """One numbered file: statements forward, and statements back after a `-- down` line."""

    version: int
    name: str
    up: list[str]
    down: list[str]
    checksum: str


def load(directory: Traversable = MIGRATIONS_DIR) -> list[Migration]:
    """Every migration file, in version order; BadMigrations if there is none."""
    found = []
    for path in sql_files(directory):
        match = _NAME.match(path.name)
        if not match:
            raise BadMigrations(f"{path}: migration files are named NNNN_snake_name.sql")
        text = path.read_text()
        up, _, down = text.partition("\n-- down\n")
        found.append(
            Migration(
                int(match.group(1)),
                match.group(2),
                _statements(up),
                _statements(down),
                hashlib.sha256(text.encode()).hexdigest()[:16],
            )
        )
    if not found:  # a package built without its SQL: applying nothing would pass for success
        raise BadMigrations(f"no migration files (NNNN_name.sql) in {directory}")
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise BadMigrations(f"duplicate migration numbers in {directory}")
    return found


def _statements(sql: str) -> list[str]:
    body = "\n".join(line for line in sql.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


# which versions are applied; on a cluster rewritten like any table (replicated local tables
# under a Distributed one), so every host reads the same ledger
LEDGER = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
    "checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
    "ENGINE = ReplacingMergeTree ORDER BY version"
)


def applied(client: Client, cluster: str = "") -> set[int]:
    """Versions already recorded as applied (on the ClickHouse cluster `cluster`, if named)."""
    return _applied(client, of(client, cluster))


def _applied(client: Client, cluster: Cluster | None) -> set[int]:
    for statement in _plan([LEDGER], cluster):
        client.command(statement)
    return {
        int(r[0]) for r in client.query("SELECT version FROM schema_migrations FINAL").result_rows
    }


def migrate(
    client: Client,
    directory: Traversable = MIGRATIONS_DIR,
    to: int | None = None,
    each: Callable[[Migration], None] | None = None,
    cluster: str = "",
) -> list[Migration]:
    """Apply the pending migrations in order, up to version `to` (all by default); return
    those applied now. `each` is told of each one before it runs. With a `cluster`, each
    statement runs as `swipeloop.cluster` rewrites it (replicated, distributed, ON CLUSTER)."""
    on = of(client, cluster)
    done = _applied(client, on)
    pending = [
        m for m in load(directory) if m.version not in done and (to is None or m.version <= to)
    ]
    # all rewritten before any runs: a shape the cluster rewrite refuses changes nothing
    plans = [(m, _plan(m.up, on)) for m in pending]
    for migration, plan in plans:
        if each is not None:
            each(migration)
        for statement in plan:
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
            # a replicated table drops a row inserted before as a retry: a version applied
            # again after a reverse is a new row
            settings={"insert_deduplicate": 0} if on else None,
        )
    return pending


def reverse(
    client: Client,
    to: int,
    directory: Traversable = MIGRATIONS_DIR,
    each: Callable[[Migration], None] | None = None,
    cluster: str = "",
) -> list[Migration]:
    """Reverse the applied migrations newer than version `to`, newest first (their `-- down`
    statements); return those reversed. `cluster` as for `migrate`."""
    on = of(client, cluster)
    done = _applied(client, on)
    newer = [m for m in reversed(load(directory)) if m.version in done and m.version > to]
    plans = [(m, _plan(m.down, on)) for m in newer]
    for migration, plan in plans:
        if each is not None:
            each(migration)
        for statement in plan:
            client.command(statement)
        client.command(
            on_cluster("DELETE FROM schema_migrations WHERE version = {v:UInt32}", on),
            parameters={"v": migration.version},
        )
    return newer


def _plan(statements: list[str], cluster: Cluster | None) -> list[str]:
    """The statements as they run: as written on one server, rewritten on a cluster."""
    return [one for statement in statements for one in rewrite(statement, cluster)]
