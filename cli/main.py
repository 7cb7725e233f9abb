"""`swipeloop`: run the whole system, or one role of it, from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from swipeloop.settings import Settings, keys_of

if TYPE_CHECKING:
    from swipeloop.analysis import NamedQuery

app = typer.Typer(
    help="Real-time short-video recommendations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


class Format(StrEnum):
    """How `swipeloop sql` and `flows status` print rows."""

    table = "table"
    csv = "csv"
    json = "json"


def _settings() -> Settings:
    return Settings.from_env()


def _logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


@app.command()
def up(
    host: Annotated[str, typer.Option(help="API host")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="API port")] = 8000,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Start everything in one process: broker, ClickHouse, flows, API, nightly trainer."""
    from cli.stack import Stack
    from swipeloop.metrics import serve_metrics

    _logging(verbose)
    stack = Stack(_settings().with_(api_host=host, api_port=port))
    with console.status("starting broker, ClickHouse, flows"):
        stack.start()
    s = stack.settings
    serve_metrics(s, session_gaps=True)
    console.print(
        f"[bold green]swipeloop is up[/]  (Ctrl-C stops)\n"
        f"  API       {stack.url}   (OpenAPI: {stack.url}/schema)\n"
        f"  feed      {stack.url}/v1/feed?user_id=alice\n"
        f"  broker    {s.kafka_bootstrap}{' (embedded, memory only)' if s.broker_epoch else ''}\n"
        f"  ClickHouse {s.clickhouse_dsn} (database {s.clickhouse_database})\n"
        f"  models    {s.models_dir}   (retrained on cron '{s.train_cron}')\n"
        f"  metrics   http://{s.api_host}:{s.metrics_port}/metrics   (flows; 0 turns it off)\n"
        f"  keys      {_keys_line(s)}"
    )
    try:
        stack.serve()
    finally:
        with console.status("stopping"):
            stack.stop()


def _keys_line(s: Settings) -> str:
    """What `up` says about who may call it."""
    app_keys, admin_keys = keys_of(s.app_keys), keys_of(s.admin_keys)
    if app_keys and admin_keys:
        return f"{len(app_keys)} app, {len(admin_keys)} admin (Authorization: Bearer <key>)"
    kinds = [("APP", app_keys), ("ADMIN", admin_keys)]
    unset = [f"SWIPELOOP_{name}_KEYS" for name, keys in kinds if not keys]
    return f"{' and '.join(unset)} unset: those routes answer loopback callers only"


@app.command()
def api(
    host: Annotated[str, typer.Option(help="bind address")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port")] = 8000,
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

    settings = _settings()
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
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,  # a line per request costs more than the request; see /metrics
    )


flows = typer.Typer(help="The dataflows: list them, run one, see where each stands.")
app.add_typer(flows, name="flows")


def _flow_names() -> list[str]:
    from dataflows.runner import FLOWS

    return list(FLOWS)


@flows.command("list")
def flows_list() -> None:
    """The dataflows there are, what each does and where it keeps its recovery store."""
    from rich.table import Table

    from dataflows.runner import FLOWS, describe, recovery_dir

    settings = _settings()
    table = Table("flow", "what it does", "recovery store")
    for name, (_, recover) in FLOWS.items():
        store = str(recovery_dir(settings, name)) if recover else "-"
        table.add_row(name, describe(name), store)
    Console().print(table)


@flows.command("run")
def flows_run(
    name: Annotated[
        str, typer.Argument(help="ingest, features or embeddings", autocompletion=_flow_names)
    ],
    workers: Annotated[int, typer.Option(min=1, help="worker threads in this process")] = 1,
    recovery: Annotated[
        Path | None,
        typer.Option(
            help="recovery store (default: SWIPELOOP_DATA_DIR/recovery/NAME-EPOCH); created "
            "on the first run with one partition per worker"
        ),
    ] = None,
    drain: Annotated[
        bool,
        typer.Option(
            help="exit once every partition is read to its end (features: and close every "
            "window; embeddings: and publish what changed)"
        ),
    ] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Run one dataflow in this process (production: one container per flow).

    It resumes from its last snapshot in its recovery store; SIGTERM or Ctrl-C stops it
    after the current batch. SWIPELOOP_FLOW_API_PORT turns on Bytewax's dataflow API server
    (/dataflow, /metrics with consumer lag) on that port.
    """
    from dataflows.runner import FLOWS, run_process

    _logging(verbose)
    if name not in FLOWS:
        raise typer.BadParameter(f"unknown flow {name!r}; one of: {', '.join(FLOWS)}")
    settings = _settings()
    if settings.embedded_broker:
        raise typer.BadParameter("set SWIPELOOP_KAFKA_BOOTSTRAP (or use `swipeloop up`)")
    drained: dict[str, Any] = {"drain": True} if drain else {}
    run_process(name, settings, workers=workers, recovery=recovery, **drained)


@flows.command("status")
def flows_status(
    fmt: Annotated[Format, typer.Option("--format", "-f", help="how to print it")] = Format.table,
) -> None:
    """Each flow's recovery store: partitions, runs, last committed epoch and snapshot, and
    how far its snapshotted offsets trail the broker (when the broker can be reached)."""
    import time

    from dataflows.runner import FLOWS, status
    from swipeloop.kafka import end_offsets

    settings = _settings()
    columns = ["flow", "partitions", "runs", "epoch", "snapshot_s_ago", "read", "lag", "store"]
    rows = []
    for name, (_, recover) in FLOWS.items():
        if not recover:
            continue
        st = status(settings, name)
        ends = end_offsets(settings, list(st.offsets)) if st.offsets else {}
        lag = sum(max(ends[k] - v, 0) for k, v in st.offsets.items() if k in ends)
        ago = None if st.snapshot_at is None else round(time.time() - st.snapshot_at)
        read = sum(st.offsets.values())
        rows.append(
            [
                name,
                st.partitions,
                st.executions,
                st.committed_epoch,
                ago,
                read,
                lag if ends else None,
                str(st.store),
            ]
        )
    _print_rows(columns, rows, fmt)
    if fmt is Format.table:
        console.print("partitions 0: never ran here; lag: messages on the broker past the snapshot")


@app.command()
def migrate(
    to: Annotated[
        int | None, typer.Option(help="migrate up or down to this version (default: the newest)")
    ] = None,
    down: Annotated[
        int | None, typer.Option(min=1, help="reverse the newest N applied migrations")
    ] = None,
) -> None:
    """Apply pending ClickHouse migrations (idempotent), or reverse some (`--down N`, `--to N`).

    Each file of sql/migrations/ holds its statements forward, then after a `-- down` line
    those that undo them.
    """
    from swipeloop.clickhouse import connect
    from swipeloop.migrations import Migration, applied, reverse
    from swipeloop.migrations import migrate as forward

    if to is not None and down is not None:
        raise typer.BadParameter("--to and --down do not go together")
    client = connect(_settings())

    def say(verb: str) -> Callable[[Migration], None]:
        return lambda m: console.print(f"{verb} {m.version:04d}_{m.name}")

    done = sorted(applied(client))
    if down is not None:  # down N: to the version below the newest N
        to = done[-down - 1] if down < len(done) else 0
    if to is not None and done and to < done[-1]:
        verb, changed = "reversed", reverse(client, to, each=say("reversing"))
    else:
        verb, changed = "applied", forward(client, to=to, each=say("applying"))
    now = sorted(applied(client))
    console.print(f"{len(changed)} migration(s) {verb}; at version {now[-1] if now else 0}")


@app.command()
def topics() -> None:
    """Create the topics of the topic spec that are missing."""
    from swipeloop.topics import ensure_topics

    settings = _settings()
    if settings.embedded_broker:
        raise typer.BadParameter("set SWIPELOOP_KAFKA_BOOTSTRAP")
    created = ensure_topics(settings)
    console.print(f"created: {', '.join(created) or 'nothing (all exist)'}")


@app.command()
def train() -> None:
    """Train a candidate on ClickHouse now; it serves only if it beats production."""
    from swipeloop.clickhouse import connect
    from training.ranker import NotEnoughData
    from training.ranker import train as run

    settings = _settings()
    from cli.stack import running_url

    url = running_url(settings)
    if url is not None:  # the running `up` owns the embedded ClickHouse: ask it to train
        import httpx

        with console.status(f"training inside the running stack at {url}"):
            r = httpx.post(f"{url}/admin/train", timeout=600, headers=settings.bearer(admin=True))
        if r.status_code != 200:
            console.print(f"[yellow]not trained:[/] {r.json().get('detail', r.text)}")
            raise typer.Exit(1)
        report = r.json()
    else:
        with console.status("training") as status:
            try:
                report = run(connect(settings), settings, say=status.update)
            except NotEnoughData as exc:
                console.print(f"[yellow]not trained:[/] {exc}")
                raise typer.Exit(1) from exc
    verdict = "[green]promoted[/]" if report["promoted"] else "[yellow]not promoted[/]"
    console.print(f"model [bold]{report['version']}[/]: {verdict} ({report['reason']})")
    skew = report["skew"]
    if skew["mismatch_rate"] is not None:
        console.print(
            f"skew: {skew['mismatch_rate']:.1%} of {skew['sampled']} sampled impressions were "
            "served features that differ from their recomputation from the events"
        )
    print(json.dumps(report))


model = typer.Typer(help="The model registry: list versions, promote one, roll back.")
RANKERS = ("candidate", "production", "popularity")  # judged on each run's holdout


def _fixed(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


app.add_typer(model, name="model")


@model.command("list")
def model_list() -> None:
    """Every version with its offline metrics; the serving one is marked."""
    from rich.table import Table

    from training.registry import production, versions

    settings = _settings()
    serving = production(settings.models_dir)
    table = Table()
    table.add_column("version", no_wrap=True)
    for name in ("serving", "rows", "NDCG@10", "production's", "popularity's", "AUC"):
        table.add_column(name)
    for v in versions(settings.models_dir):
        ndcg = [(v.metrics.get(who) or {}).get("ndcg_at_10") for who in RANKERS]
        table.add_row(
            v.version,
            "●" if v.version == serving else "",
            str(v.rows),
            *(_fixed(x) for x in (*ndcg, v.auc)),
        )
    Console().print(table)


@model.command("promote")
def model_promote(
    version: Annotated[str, typer.Argument(help="a version from `swipeloop model list`")],
    reason: Annotated[str, typer.Option(help="recorded in the history")] = "by hand",
) -> None:
    """Serve this version (every API swaps within SWIPELOOP_MODEL_POLL_S)."""
    from training.registry import RegistryError, promote

    try:
        promote(_settings().models_dir, version, reason)
    except RegistryError as exc:
        raise typer.BadParameter(str(exc)) from exc
    console.print(f"serving [bold]{version}[/]")


@model.command("rollback")
def model_rollback(
    reason: Annotated[str, typer.Option(help="recorded in the history")] = "rollback",
) -> None:
    """Serve again the version that served before the current one."""
    from training.registry import RegistryError, rollback

    try:
        version = rollback(_settings().models_dir, reason)
    except RegistryError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"rolled back: serving [bold]{version}[/]")


@app.command()
def trainer(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = True) -> None:
    """Run the nightly training schedule (the compose `trainer` service)."""
    from training.schedule import run_schedule

    _logging(verbose)
    with contextlib.suppress(KeyboardInterrupt):
        run_schedule(_settings(), threading.Event())


@app.command("erase-user")
def erase_user(user_id: Annotated[str, typer.Argument(help="the user to forget")]) -> None:
    """Forget a user: their events, impressions, features, vector and dead letters leave
    ClickHouse; the flows and the feed replicas drop what they hold within seconds; events
    that still carry the id are dropped from then on. Prints JSON."""
    from datetime import UTC, datetime

    from cli.stack import running_url
    from swipeloop import erasure
    from swipeloop.clickhouse import connect

    settings = _settings()
    url = running_url(settings)
    if url is not None:  # the running `up` owns the embedded ClickHouse: ask it
        import httpx

        r = httpx.delete(
            f"{url}/v1/users/{user_id}", timeout=120, headers=settings.bearer(admin=True)
        )
        if r.status_code != 202:
            console.print(f"[red]not erased:[/] {r.json().get('detail', r.text)}")
            raise typer.Exit(1)
        result = r.json()
    else:
        now = datetime.now(UTC)
        removed = erasure.erase(connect(settings), user_id, now)
        result = {"user_id": user_id, "erased_at": now.isoformat(), "rows_deleted": removed}
    console.print(f"[green]erased[/] {user_id}: {result['rows_deleted']} rows deleted")
    print(json.dumps(result))


@app.command()
def simulate(
    url: Annotated[str, typer.Option(help="API base URL")] = "http://127.0.0.1:8000",
    users: Annotated[int, typer.Option(help="simulated people (they come back)")] = 200,
    items: Annotated[int, typer.Option(help="videos in the world at the start")] = 5000,
    minutes: Annotated[float, typer.Option(help="measured minutes")] = 2.0,
    warmup_minutes: Annotated[
        float, typer.Option(help="minutes of real-time feeds before the one training run")
    ] = 0.5,
    seed: Annotated[int, typer.Option(help="the world's seed")] = 0,
    views: Annotated[int, typer.Option(help="gem uploads are timed to this many views")] = 1000,
    out: Annotated[
        Path | None, typer.Option(help="also write the figures here (for `swipeloop report`)")
    ] = None,
) -> None:
    """Simulated people use the running API, each served by one policy arm (realtime, batch,
    popularity, random); a burst lifts one topic in the middle third. Prints JSON per arm."""
    import httpx

    from sim.simulator import simulate as run
    from sim.world import World, one_burst

    settings = _settings()  # (only its keys: the API is at `url`)
    warmup_s, seconds = warmup_minutes * 60, minutes * 60
    world = World.create(
        seed, users, items, bursts=one_burst(seed, warmup_s + seconds / 3, seconds / 3)
    )

    async def train() -> None:  # the nightly job, once, inside the running stack
        async with httpx.AsyncClient(timeout=600, headers=settings.bearer(admin=True)) as client:
            r = await client.post(f"{url}/admin/train")
        if r.status_code != 200:
            console.print(f"[yellow]not trained:[/] {r.text[:300]}")

    with console.status(f"{users} people, {minutes} min (+{warmup_minutes} warm-up) at {url}"):
        figures = asyncio.run(
            run(
                url,
                world,
                seconds,
                warmup_s,
                train,
                seed=seed,
                views=(views,),
                headers=settings.bearer(),
            )
        )
    if out is not None:
        out.write_text(json.dumps(figures))
    print(json.dumps(figures))


@app.command()
def report(
    simulation: Annotated[Path, typer.Argument(help="a `simulate --out` file")],
    replay: Annotated[Path | None, typer.Option(help="a `replay` output to add")] = None,
    out: Annotated[Path, typer.Option(help="where the PNGs and report.md go")] = Path(
        "bench/report"
    ),
) -> None:
    """Render a simulation (and a replay) as PNG plots and a Markdown summary."""
    from sim.report import render

    try:
        figures = json.loads(simulation.read_text())
        replayed = json.loads(replay.read_text()) if replay else None
    except (OSError, json.JSONDecodeError) as exc:
        console.print(f"[red]cannot read:[/] {exc}")
        raise typer.Exit(2) from exc
    for path in render(figures, out, replayed):
        console.print(f"wrote {path}")


@app.command()
def replay(
    ratings: Annotated[
        Path, typer.Argument(help="ratings in MovieLens format: userId,movieId,rating,timestamp")
    ],
    span_hours: Annotated[
        float, typer.Option(help="the file's timeline is compressed into this many hours")
    ] = 24.0,
    data_dir: Annotated[
        Path | None, typer.Option(help="where the replay's stack keeps its data (default: temp)")
    ] = None,
) -> None:
    """Replay a ratings file through a fresh embedded stack, then score next-item prediction
    (HR@10, NDCG@10) of its feeds against popularity and item-kNN; prints JSON."""
    import tempfile

    from rich.progress import Progress

    from cli.stack import fresh_stack
    from sim.movielens import RatingsError, read_ratings
    from sim.replay import replay as run
    from swipeloop.broker import free_port

    try:
        data = read_ratings(ratings)
    except (RatingsError, OSError) as exc:
        console.print(f"[red]cannot replay:[/] {exc}")
        raise typer.Exit(2) from exc
    with tempfile.TemporaryDirectory(prefix="swipeloop-replay-") as tmp:
        settings = _settings().with_(
            data_dir=data_dir or Path(tmp),
            clickhouse_url=None,
            kafka_bootstrap=None,
            api_port=free_port(),
            metrics_port=0,
        )
        with Progress(console=console, transient=True) as bar:
            tasks: dict[str, Any] = {}

            def progress(phase: str, done: int, total: int) -> None:
                if phase not in tasks:
                    tasks[phase] = bar.add_task(phase, total=total)
                bar.update(tasks[phase], completed=done)

            with fresh_stack(settings) as stack:
                state = stack.services.feed.state
                figures = run(data, settings, stack.url, state, span_hours * 3600, progress)
    print(json.dumps(figures))


def _query_names() -> list[str]:
    from swipeloop.analysis import catalogue

    return list(catalogue())


@app.command("sql")
def sql(
    name: Annotated[
        str | None,
        typer.Argument(
            help="a query of sql/analysis/ (--list shows them)", autocompletion=_query_names
        ),
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="NAME=VALUE, repeatable")
    ] = None,
    fmt: Annotated[
        Format, typer.Option("--format", "-f", help="how to print the rows")
    ] = Format.table,
    list_: Annotated[
        bool, typer.Option("--list", help="the named queries, their parameters")
    ] = False,
    query: Annotated[
        str | None, typer.Option("--query", "-q", help="run this SQL instead (no parameters)")
    ] = None,
) -> None:
    """Run a named analysis query (or --query SQL) on the analytics store and print its rows.

    Examples: `swipeloop sql daily_engagement -p days=14`, `swipeloop sql dlq_reasons -f csv`.
    """
    from cli.stack import running_url
    from swipeloop import analysis
    from swipeloop.clickhouse import connect

    if list_:
        _list_queries(analysis.catalogue())
        return
    if (name is None) == (query is None):
        raise typer.BadParameter("give a query NAME or --query SQL (--list shows the names)")
    if any("=" not in p for p in param or []):
        raise typer.BadParameter("--param takes NAME=VALUE")
    given = dict(p.partition("=")[::2] for p in param or [])
    settings = _settings()
    url = running_url(settings)
    try:
        if query is not None:
            if url is not None:
                raise typer.BadParameter(
                    f"`swipeloop up` at {url} holds the embedded ClickHouse: run a named query "
                    "(it asks the running stack), or stop it first"
                )
            result = connect(settings).query(query)
            columns, rows = list(result.column_names), [list(r) for r in result.result_rows]
        elif url is not None:  # the running `up` owns the embedded ClickHouse: ask it
            import httpx

            r = httpx.get(
                f"{url}/admin/sql/{name}",
                params=given,
                timeout=600,
                headers=settings.bearer(admin=True),
            )
            if r.status_code != 200:
                raise analysis.QueryError(r.json().get("detail", r.text))
            columns, rows = r.json()["columns"], r.json()["rows"]
        else:
            assert name is not None
            columns, rows = analysis.run(connect(settings), analysis.load(name), given)
    except analysis.QueryError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(2) from exc
    _print_rows(columns, rows, fmt)


def _list_queries(queries: dict[str, NamedQuery]) -> None:
    from rich.table import Table

    table = Table("query", "what it answers", "parameters (default)")
    for q in queries.values():
        params = "\n".join(
            f"{p.name} {p.type}" + (f" = {p.default}" if p.default is not None else "")
            for p in q.params.values()
        )
        table.add_row(q.name, q.about, params)
    Console().print(table)


def _print_rows(columns: list[str], rows: list[list[Any]], fmt: Format) -> None:
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


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
