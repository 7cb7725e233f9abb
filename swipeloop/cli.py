"""`swipeloop`: run the whole system, or one role of it, from the command line."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from swipeloop.settings import Settings

app = typer.Typer(
    help="Real-time short-video recommendations.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)


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
    from swipeloop.metrics import serve_metrics
    from swipeloop.stack import Stack

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
        f"  metrics   http://127.0.0.1:{s.metrics_port}/metrics   (flows; 0 turns it off)"
    )
    try:
        stack.serve()
    finally:
        with console.status("stopping"):
            stack.stop()


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
    uvicorn.run(
        "api.app:app_from_env",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level="info",
        access_log=False,  # a line per request costs more than the request; see /metrics
    )


@app.command()
def flow(
    name: Annotated[str, typer.Argument(help="ingest, features or embeddings")],
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

    Every flow resumes from its last snapshot under SWIPELOOP_DATA_DIR/recovery;
    SIGTERM or Ctrl-C stops a flow after the current batch.
    """
    from dataflows.runner import FLOWS, run_process

    _logging(verbose)
    if name not in FLOWS:
        raise typer.BadParameter(f"unknown flow {name!r}; one of: {', '.join(FLOWS)}")
    settings = _settings()
    if settings.embedded_broker:
        raise typer.BadParameter("set SWIPELOOP_KAFKA_BOOTSTRAP (or use `swipeloop up`)")
    run_process(name, settings, **({"drain": True} if drain else {}))


@app.command()
def migrate() -> None:
    """Apply pending ClickHouse migrations (idempotent)."""
    from swipeloop.clickhouse import connect
    from swipeloop.migrations import migrate as run

    applied = run(connect(_settings()))
    console.print(
        f"applied {len(applied)} migration(s): "
        + (", ".join(f"{m.version:04d}_{m.name}" for m in applied) or "none pending")
    )


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
    from models.ranker import NotEnoughData
    from models.ranker import train as run
    from swipeloop.clickhouse import connect

    settings = _settings()
    from swipeloop.stack import running_url

    url = running_url(settings)
    if url is not None:  # the running `up` owns the embedded ClickHouse: ask it to train
        import httpx

        with console.status(f"training inside the running stack at {url}"):
            r = httpx.post(f"{url}/admin/train", timeout=600)
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

    from models.registry import production, versions

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
    from models.registry import RegistryError, promote

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
    from models.registry import RegistryError, rollback

    try:
        version = rollback(_settings().models_dir, reason)
    except RegistryError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1) from exc
    console.print(f"rolled back: serving [bold]{version}[/]")


@app.command()
def trainer(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = True) -> None:
    """Run the nightly training schedule (the compose `trainer` service)."""
    from swipeloop.trainer import run_schedule

    _logging(verbose)
    with contextlib.suppress(KeyboardInterrupt):
        run_schedule(_settings(), threading.Event())


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

    from swipeloop.simulator import simulate as run
    from swipeloop.world import World, one_burst

    warmup_s, seconds = warmup_minutes * 60, minutes * 60
    world = World.create(
        seed, users, items, bursts=one_burst(seed, warmup_s + seconds / 3, seconds / 3)
    )

    async def train() -> None:  # the nightly job, once, inside the running stack
        async with httpx.AsyncClient(timeout=600) as client:
            r = await client.post(f"{url}/admin/train")
        if r.status_code != 200:
            console.print(f"[yellow]not trained:[/] {r.text[:300]}")

    with console.status(f"{users} people, {minutes} min (+{warmup_minutes} warm-up) at {url}"):
        figures = asyncio.run(run(url, world, seconds, warmup_s, train, seed=seed, views=(views,)))
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
    from swipeloop.report import render

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

    from models.replay import RatingsError, read_ratings
    from swipeloop.broker import free_port
    from swipeloop.replay import replay as run

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

            figures = run(data, settings, span_hours * 3600, progress)
    print(json.dumps(figures))


@app.command("sql")
def sql(query: Annotated[str, typer.Argument(help="a ClickHouse SQL query")]) -> None:
    """Run one query on the analytics store and print the rows."""
    from swipeloop.clickhouse import connect

    result = connect(_settings()).query(query)
    print("\t".join(result.column_names))
    for row in result.result_rows:
        print("\t".join(str(v) for v in row))


def main() -> None:
    """Console-script entry point."""
    app()


if __name__ == "__main__":
    main()
