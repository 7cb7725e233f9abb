"""`swipeloop train`, `trainer` and `model list | promote | rollback`: the ranker's training and
its registry (in ClickHouse; beside a running `up`, asked of it)."""

from __future__ import annotations

import contextlib
import json
import threading
from typing import TYPE_CHECKING, Annotated
from urllib.parse import quote

import typer
from rich.console import Console

from cli.shared import FAILED, console, env_settings, setup_logging, store

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

    from swipeloop.settings import Settings

model = typer.Typer(help="The model registry: list versions, promote one, roll back.")
RANKERS = ("candidate", "production", "popularity")  # judged on each run's holdout


def train() -> None:
    """Train a candidate on ClickHouse now; it serves only if it beats production."""
    import msgspec

    from cli.stack import running_url
    from swipeloop.clickhouse import connect
    from training.ranker import NotEnoughData
    from training.ranker import train as run
    from training.report import TrainingReport

    settings = env_settings()
    url = running_url(settings)
    if url is not None:  # the running `up` owns the embedded ClickHouse: ask it to train
        import httpx

        with console.status(f"training inside the running stack at {url}"):
            r = httpx.post(f"{url}/admin/train", timeout=600, headers=settings.bearer("admin"))
        if r.status_code != 200:
            console.print(f"[yellow]not trained:[/] {r.json().get('detail', r.text)}")
            raise typer.Exit(FAILED)
        report = msgspec.json.decode(r.content, type=TrainingReport)
    else:
        with console.status("training") as status:
            try:
                report = run(connect(settings), settings, say=status.update)
            except NotEnoughData as exc:
                console.print(f"[yellow]not trained:[/] {exc}")
                raise typer.Exit(FAILED) from exc
    verdict = "[green]promoted[/]" if report.promoted else "[yellow]not promoted[/]"
    console.print(f"model [bold]{report.version}[/]: {verdict} ({report.reason})")
    skew = report.skew
    if skew.mismatch_rate is not None:
        console.print(
            f"skew: {skew.mismatch_rate:.1%} of {skew.sampled} sampled impressions were "
            "served features that differ from their recomputation from the events"
        )
    print(json.dumps(msgspec.to_builtins(report)))


def trainer(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = True) -> None:
    """Run the nightly training schedule (the compose `trainer` service)."""
    from training.schedule import run_schedule

    setup_logging(verbose)
    with contextlib.suppress(KeyboardInterrupt):
        run_schedule(env_settings(), threading.Event())


def _fixed(x: float | None) -> str:
    return "" if x is None else f"{x:.4f}"


def _registry(settings: Settings) -> Client:
    """A client on this data directory's registry when no `up` owns it (`store`), an old
    models directory imported once."""
    from training.registry_import import adopt

    client = store(settings)
    adopt(client, settings.models_dir)
    return client


def _ask(settings: Settings, url: str, method: str, path: str, reason: str | None = None) -> bytes:
    """The answer of the running `up`, which owns the embedded ClickHouse; a refusal exits 1."""
    import httpx

    params = {"reason": reason} if reason is not None else None
    r = httpx.request(
        method, f"{url}{path}", params=params, timeout=60, headers=settings.bearer("admin")
    )
    if r.status_code != 200:
        console.print(f"[red]{r.json().get('detail', r.text)}[/]")
        raise typer.Exit(FAILED)
    return r.content


@model.command("list")
def model_list() -> None:
    """Every version with its offline metrics; the serving one is marked."""
    import msgspec
    from rich.table import Table

    from cli.stack import running_url
    from training.registry import Listing, listing

    settings = env_settings()
    url = running_url(settings)
    if url is not None:
        found = msgspec.json.decode(_ask(settings, url, "GET", "/admin/models"), type=Listing)
    else:
        found = listing(_registry(settings))
    table = Table()
    table.add_column("version", no_wrap=True)
    for name in ("serving", "rows", "NDCG@10", "production's", "popularity's", "AUC"):
        table.add_column(name)
    for v in found.versions:
        ndcg = [(v.metrics.get(who) or {}).get("ndcg_at_10") for who in RANKERS]
        table.add_row(
            v.version,
            "●" if v.version == found.serving else "",
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
    from cli.stack import running_url
    from training.registry import RegistryError, promote

    settings = env_settings()
    url = running_url(settings)
    if url is not None:
        _ask(settings, url, "POST", f"/admin/models/{quote(version, safe='')}/promote", reason)
    else:
        try:
            promote(_registry(settings), version, reason)
        except RegistryError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(FAILED) from exc
    console.print(f"serving [bold]{version}[/]")


@model.command("rollback")
def model_rollback(
    reason: Annotated[str, typer.Option(help="recorded in the history")] = "rollback",
) -> None:
    """Serve again the version that served before the current one."""
    from cli.stack import running_url
    from training.registry import RegistryError, rollback

    settings = env_settings()
    url = running_url(settings)
    if url is not None:
        answer = json.loads(_ask(settings, url, "POST", "/admin/models/rollback", reason))
        version = str(answer["serving"])
    else:
        try:
            version = rollback(_registry(settings), reason)
        except RegistryError as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(FAILED) from exc
    console.print(f"rolled back: serving [bold]{version}[/]")


@model.command("canary")
def model_canary(
    version: Annotated[
        str | None, typer.Argument(help="serve this version to a share of users first")
    ] = None,
    share: Annotated[int, typer.Option(min=1, max=50, help="percent of users")] = 10,
    judge: Annotated[bool, typer.Option(help="judge the running canary now")] = False,
) -> None:
    """Canaries: start one (VERSION), judge the running one (--judge), or list them."""
    import msgspec
    from rich.table import Table

    from cli.stack import running_url
    from training import canary
    from training.registry import RegistryError

    settings = env_settings()
    url = running_url(settings)
    if version is not None:
        if url is not None:
            path = f"/admin/models/{quote(version, safe='')}/canary?share={share}"
            _ask(settings, url, "POST", path, "by hand")
        else:
            try:
                canary.start(_registry(settings), version, share, "by hand")
            except RegistryError as exc:
                console.print(f"[red]{exc}[/]")
                raise typer.Exit(FAILED) from exc
        console.print(f"canary [bold]{version}[/] on {share} % of users")
    if judge:
        if url is not None:
            answer = _ask(settings, url, "POST", "/admin/models/canary/judge")
            verdict: canary.Verdict | None = msgspec.json.decode(answer, type=canary.Verdict)
        else:
            verdict = canary.judge(_registry(settings), settings)
        if verdict is None:
            console.print("[yellow]no canary is running[/]")
            raise typer.Exit(FAILED)
        console.print(f"canary: [bold]{verdict.state}[/] ({verdict.reason})", highlight=False)
    if version is None and not judge:
        if url is not None:
            found = msgspec.json.decode(
                _ask(settings, url, "GET", "/admin/models/canaries"), type=list[canary.Canary]
            )
        else:
            found = canary.listing(_registry(settings))
        table = Table()
        for column in ("version", "against", "share", "started", "state", "reason"):
            table.add_column(column)
        for c in found:
            started = c.started_at.isoformat(timespec="seconds")
            table.add_row(c.version, c.production, f"{c.share} %", started, c.state, c.reason)
        Console().print(table)
