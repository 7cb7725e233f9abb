"""What every `swipeloop` command uses: the settings, the stderr console, logging, row printing.

Rows and tables go to stdout (so they pipe); progress and verdicts go to `console` (stderr).
"""

from __future__ import annotations

import json
import logging
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from rich.console import Console

from swipeloop.settings import Settings

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

console = Console(stderr=True)

# Exit codes, the same for every command (README, "The command line").
FAILED = 1  # it ran and refused or failed: nothing to roll back, no such version, too little data
BAD_INPUT = 2  # a usage error, a bad SWIPELOOP_* variable, a file or query that cannot be read
UNREACHABLE = 3  # the broker, ClickHouse or a running `up` did not answer


class Format(StrEnum):
    """How `swipeloop sql` and `flows status` print rows."""

    table = "table"
    csv = "csv"
    json = "json"


def env_settings() -> Settings:
    """The settings of this run, from the `SWIPELOOP_*` variables (the librdkafka ones
    checked by librdkafka itself)."""
    from swipeloop.kafka import check_client_config

    settings = Settings.from_env()
    check_client_config(settings)
    return settings


def store(settings: Settings) -> Client:
    """ClickHouse for a command run where no `up` owns it: the embedded engine migrated first,
    as `up` does on start (a server is migrated by `swipeloop migrate`)."""
    from swipeloop.clickhouse import connect
    from swipeloop.migrations import migrate

    client = connect(settings)
    if not settings.clickhouse_url:
        migrate(client)
    return client


def setup_logging(verbose: bool) -> None:
    """INFO with --verbose, else WARNING, to stderr."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def print_rows(columns: list[str], rows: list[list[Any]], fmt: Format) -> None:
    """Rows on stdout as a table (its row count on stderr), CSV or a JSON list of objects."""
    import csv
    import sys

    if fmt is Format.json:
        print(json.dumps([dict(zip(columns, row, strict=True)) for row in rows], default=str))
    elif fmt is Format.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(columns)
        writer.writerows(rows)
    else:
        from rich.table import Table

        table = Table(*columns)
        for row in rows:
            table.add_row(*("" if v is None else str(v) for v in row))
        Console().print(table)
        console.print(f"{len(rows)} row(s)")
