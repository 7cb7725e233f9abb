"""`swipeloop erase-user`: forget a user, here or through the running stack."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from cli.shared import FAILED, console, env_settings


def erase_user(user_id: Annotated[str, typer.Argument(help="the user to forget")]) -> None:
    """Forget a user: their events, impressions, features, vector and dead letters leave
    ClickHouse; the flows and the feed replicas drop what they hold within seconds; events
    that still carry the id are dropped from then on. Prints JSON."""
    from datetime import UTC, datetime

    from cli.stack import running_url
    from swipeloop import erasure
    from swipeloop.clickhouse import connect

    settings = env_settings()
    url = running_url(settings)
    if url is not None:  # the running `up` owns the embedded ClickHouse: ask it
        import httpx

        r = httpx.delete(f"{url}/v1/users/{user_id}", timeout=120, headers=settings.bearer("admin"))
        if r.status_code != 202:
            console.print(f"[red]not erased:[/] {r.json().get('detail', r.text)}")
            raise typer.Exit(FAILED)
        result = r.json()
    else:
        now = datetime.now(UTC)
        removed = erasure.erase(connect(settings), user_id, now, settings.clickhouse_cluster)
        result = {"user_id": user_id, "erased_at": now.isoformat(), "rows_deleted": removed}
    console.print(f"[green]erased[/] {user_id}: {result['rows_deleted']} rows deleted")
    print(json.dumps(result))
