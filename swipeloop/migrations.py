"""Numbered ClickHouse migrations: applied once each, in order, recorded in schema_migrations."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from importlib.resources.abc import Traversable

from clickhouse_connect.driver.client import Client

from swipeloop import SQL, sql_files

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


def applied(client: Client) -> set[int]:
    """Versions already recorded as applied."""
    client.command(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version UInt32, name String, "
        "checksum String, applied_at DateTime64(3, 'UTC') DEFAULT now64(3)) "
        "ENGINE = ReplacingMergeTree ORDER BY version"
    )
    return {
        int(r[0]) for r in client.query("SELECT version FROM schema_migrations FINAL").result_rows
    }


def migrate(
    client: Client,
    directory: Traversable = MIGRATIONS_DIR,
    to: int | None = None,
    each: Callable[[Migration], None] | None = None,
) -> list[Migration]:
    """Apply the pending migrations in order, up to version `to` (all by default); return
    those applied now. `each` is told of each one before it runs."""
    done = applied(client)
    pending = [
        m for m in load(directory) if m.version not in done and (to is None or m.version <= to)
    ]
    for migration in pending:
        if each is not None:
            each(migration)
        for statement in migration.up:
            client.command(statement)
        client.insert(
            "schema_migrations",
            [[migration.version, migration.name, migration.checksum]],
            column_names=["version", "name", "checksum"],
        )
    return pending


def reverse(
    client: Client,
    to: int,
    directory: Traversable = MIGRATIONS_DIR,
    each: Callable[[Migration], None] | None = None,
) -> list[Migration]:
    """Reverse the applied migrations newer than version `to`, newest first (their `-- down`
    statements); return those reversed."""
    done = applied(client)
    newer = [m for m in reversed(load(directory)) if m.version in done and m.version > to]
    for migration in newer:
        if each is not None:
            each(migration)
        for statement in migration.down:
            client.command(statement)
        client.command(
            "DELETE FROM schema_migrations WHERE version = {v:UInt32}",
            parameters={"v": migration.version},
        )
    return newer
