"""`swipeloop migrate` and `swipeloop topics`: the stores' shape, ClickHouse tables and Kafka
topics (what compose's `init` job runs before any other role starts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated

import typer

from cli.shared import FAILED, console, env_settings

if TYPE_CHECKING:
    from swipeloop.migrations import Migration


def migrate(
    to: Annotated[
        int | None, typer.Option(help="migrate up or down to this version (default: the newest)")
    ] = None,
    down: Annotated[
        int | None, typer.Option(min=1, help="reverse the newest N applied migrations")
    ] = None,
) -> None:
    """Apply pending ClickHouse migrations (idempotent), or reverse some (`--down N`, `--to N`).

    Each file of sql/migrations/ holds its statements forward, then after a `-- down`
    line those that undo them.
    """
    from swipeloop.clickhouse import connect
    from swipeloop.migrations import BadMigrations, applied, load, reverse
    from swipeloop.migrations import migrate as forward
    from swipeloop.retention import apply_retention

    if to is not None and down is not None:
        raise typer.BadParameter("--to and --down do not go together")
    try:  # before the store is touched: a package without its SQL must not pass for migrated
        load()
    except BadMigrations as exc:
        console.print(f"[red]swipeloop migrate:[/] {exc}", highlight=False, soft_wrap=True)
        raise typer.Exit(FAILED) from exc
    settings = env_settings()
    client, cluster = connect(settings), settings.clickhouse_cluster

    def say(verb: str) -> Callable[[Migration], None]:
        return lambda m: console.print(f"{verb} {m.version:04d}_{m.name}")

    done = sorted(applied(client, cluster))
    if down is not None:  # down N: to the version below the newest N
        to = done[-down - 1] if down < len(done) else 0
    if to is not None and done and to < done[-1]:
        verb, changed = "reversed", reverse(client, to, each=say("reversing"), cluster=cluster)
    else:
        verb, changed = "applied", forward(client, to=to, each=say("applying"), cluster=cluster)
    now = sorted(applied(client, cluster))
    console.print(f"{len(changed)} migration(s) {verb}; at version {now[-1] if now else 0}")
    if verb == "applied":
        apply_retention(client, settings)
        days = settings.retention_days
        console.print(f"events and impressions kept {f'{days} days' if days else 'for ever'}")


def topics() -> None:
    """Create the topics of the topic spec that are missing."""
    from swipeloop.topics import ensure_topics

    settings = env_settings()
    if settings.embedded_broker:
        raise typer.BadParameter("set SWIPELOOP_KAFKA_BOOTSTRAP")
    created = ensure_topics(settings)
    console.print(f"created: {', '.join(created) or 'nothing (all exist)'}")
