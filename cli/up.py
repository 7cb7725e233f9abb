"""`swipeloop up` (everything in one process) and `swipeloop api` (the API alone, on servers)."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.shared import console, env_settings, setup_logging
from swipeloop.settings import Settings, keys_of


def up(
    host: Annotated[str | None, typer.Option(help="API host [SWIPELOOP_API_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="API port [SWIPELOOP_API_PORT]")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start everything in one process: broker, ClickHouse, flows, API, nightly trainer."""
    from cli.stack import Stack
    from swipeloop.metrics import serve_metrics

    setup_logging(verbose)
    stack = Stack(bound(env_settings(), host, port))
    with console.status("starting broker, ClickHouse, flows"):
        stack.start()
    s = stack.settings
    serve_metrics(s, session_gaps=True)
    console.print(
        f"[bold green]swipeloop is up[/]  (Ctrl-C stops)\n"
        f"  API       {stack.url}   (OpenAPI: {stack.url}/schema)\n"
        f"  feed      {stack.url}/v1/feed?user_id=alice\n"
        f"  console   {stack.url}/console   (a feed to swipe through, and operations)\n"
        f"  broker    {s.kafka_bootstrap}{' (embedded, memory only)' if s.broker_epoch else ''}\n"
        f"  ClickHouse {s.clickhouse_url or s.clickhouse_dsn} (database {s.clickhouse_database})\n"
        f"  models    {s.models_dir}   (a cache: the registry is in ClickHouse; retrained on cron "
        f"'{s.train_cron}')\n"
        + (
            f"  metrics   http://{s.api_host}:{s.metrics_port}/metrics   (the flows')\n"
            if s.metrics_port
            else ""
        )
        + f"  keys      {_keys_line(s)}\n"
        f"  tokens    {_tokens_line(s)}"
    )
    try:
        stack.serve()
    finally:
        with console.status("stopping"):
            stack.stop()


def bound(settings: Settings, host: str | None, port: int | None) -> Settings:
    """The settings with the API's address from the options, where given (else the
    SWIPELOOP_API_HOST / SWIPELOOP_API_PORT variables, else their defaults)."""
    return settings.with_(
        api_host=settings.api_host if host is None else host,
        api_port=settings.api_port if port is None else port,
    )


def _keys_line(s: Settings) -> str:
    """What `up` says about who may call it."""
    app_keys, admin_keys = keys_of(s.app_keys), keys_of(s.admin_keys)
    if app_keys and admin_keys:
        return f"{len(app_keys)} app, {len(admin_keys)} admin (Authorization: Bearer <key>)"
    kinds = [("APP", app_keys), ("ADMIN", admin_keys)]
    unset = [f"SWIPELOOP_{name}_KEYS" for name, keys in kinds if not keys]
    return f"{' and '.join(unset)} unset: those routes answer loopback callers only"


def _tokens_line(s: Settings) -> str:
    """What `up` says about per-user tokens."""
    if s.jwt_secret:
        return "on, HS256 (swipeloop token USER_ID makes one)"
    if s.jwks_url:
        return f"on, keys from {s.jwks_url}"
    return "off (SWIPELOOP_JWT_SECRET or SWIPELOOP_JWKS_URL turns them on)"


def api(
    host: Annotated[str | None, typer.Option(help="bind address [SWIPELOOP_API_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [SWIPELOOP_API_PORT]")] = None,
    role: Annotated[
        str, typer.Option(help="all | ingest (events and items in, stateless) | feed")
    ] = "all",
    workers: Annotated[
        int,
        typer.Option(
            min=1,
            help="processes: one per core (ingest is stateless; each feed worker is a replica "
            "that loads its caches from ClickHouse and follows the topics)",
        ),
    ] = 1,
) -> None:
    """Serve the API alone (production: broker and ClickHouse are servers)."""
    import os

    import uvicorn

    from api.app import ROLES

    settings = bound(env_settings(), host, port)
    if settings.embedded_broker:
        raise typer.BadParameter("set SWIPELOOP_KAFKA_BOOTSTRAP (or use `swipeloop up`)")
    if role not in ROLES:
        raise typer.BadParameter(f"unknown role {role!r}; one of: {', '.join(ROLES)}")
    if workers > 1 and role != "ingest" and not settings.clickhouse_url:
        raise typer.BadParameter(
            "feed workers each load their caches from ClickHouse, and chdb opens its data from "
            "one process only: set SWIPELOOP_CLICKHOUSE_URL to a server, or use --workers 1"
        )
    os.environ["SWIPELOOP_API_ROLE"] = role  # read by each worker's app factory
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        import tempfile  # every worker's metrics in one /metrics, whichever worker answers

        os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="swipeloop-metrics-")
    uvicorn.run(
        "api.app:app_from_env",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=workers,
        log_level="info",
        access_log=False,  # a line per request costs more than the request; see /metrics
    )
