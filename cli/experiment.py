"""`swipeloop experiment start | stop | list`: online experiments (api.experiments), in
ClickHouse; beside a running `up`, asked of it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import quote

import typer
from rich.console import Console

from cli.shared import BAD_INPUT, FAILED, console, env_settings, store

if TYPE_CHECKING:
    from api.experiments import Experiment
    from swipeloop.settings import Settings

experiment = typer.Typer(help="Online experiments: split users between feed policies.")


@experiment.command("start")
def experiment_start(
    name: Annotated[str, typer.Argument(help="a new name: lower-case letters, digits, - and _")],
    arms: Annotated[
        str, typer.Option(help="policy:share,... shares in percent adding up to 100")
    ] = "realtime:50,batch:50",
) -> None:
    """Start an experiment: each user gets one arm (a hash of experiment and user, sticky),
    every feed API serves it within SWIPELOOP_MODEL_POLL_S."""
    from api.experiments import BadArms, ExperimentError, parse_arms, start

    settings = env_settings()
    try:
        parsed = parse_arms(arms)
    except BadArms as exc:
        console.print(f"[red]swipeloop experiment start:[/] {exc}", highlight=False)
        raise typer.Exit(BAD_INPUT) from exc
    answer = _running(settings, "POST", "/admin/experiments", {"name": name, "arms": arms})
    if answer is None:
        try:
            started = start(store(settings), name, parsed)
        except ExperimentError as exc:
            console.print(f"[red]swipeloop experiment start:[/] {exc}", highlight=False)
            raise typer.Exit(BAD_INPUT if isinstance(exc, BadArms) else FAILED) from exc
    else:
        started = answer
    shares = ", ".join(f"{a.policy} {a.share} %" for a in started.arms)
    console.print(f"experiment [bold]{started.name}[/] running: {shares}", highlight=False)


@experiment.command("stop")
def experiment_stop(name: Annotated[str, typer.Argument(help="the running experiment")]) -> None:
    """Stop an experiment: its users get the real-time feed again."""
    from api.experiments import ExperimentError, stop

    settings = env_settings()
    answer = _running(settings, "POST", f"/admin/experiments/{quote(name, safe='')}/stop")
    if answer is None:
        try:
            stop(store(settings), name)
        except ExperimentError as exc:
            console.print(f"[red]swipeloop experiment stop:[/] {exc}", highlight=False)
            raise typer.Exit(FAILED) from exc
    console.print(f"experiment [bold]{name}[/] stopped")


@experiment.command("list")
def experiment_list() -> None:
    """Every experiment, newest first, with its arms and life."""
    import msgspec
    from rich.table import Table

    from api.experiments import Experiment, listing
    from cli.stack import running_url

    settings = env_settings()
    url = running_url(settings)
    if url is not None:
        found = msgspec.json.decode(
            _ask(settings, url, "GET", "/admin/experiments"), type=list[Experiment]
        )
    else:
        found = listing(store(settings))
    table = Table()
    for column in ("experiment", "arms", "started", "stopped"):
        table.add_column(column)
    for e in found:
        table.add_row(
            e.name,
            ", ".join(f"{a.policy}:{a.share}" for a in e.arms),
            e.started_at.isoformat(timespec="seconds"),
            "running" if e.stopped_at is None else e.stopped_at.isoformat(timespec="seconds"),
        )
    Console().print(table)


def _running(
    settings: Settings, method: str, path: str, body: dict[str, Any] | None = None
) -> Experiment | None:
    """The running `up`'s answer (it owns the embedded ClickHouse), or None without one."""
    import msgspec

    from api.experiments import Experiment
    from cli.stack import running_url

    url = running_url(settings)
    if url is None:
        return None
    return msgspec.json.decode(_ask(settings, url, method, path, body), type=Experiment)


def _ask(
    settings: Settings, url: str, method: str, path: str, body: dict[str, Any] | None = None
) -> bytes:
    """A refusal prints the API's reason and exits (2 for bad input, 1 otherwise)."""
    import httpx

    r = httpx.request(
        method, f"{url}{path}", json=body, timeout=60, headers=settings.bearer("admin")
    )
    if r.status_code not in (200, 201):
        console.print(f"[red]{r.json().get('detail', r.text)}[/]", highlight=False)
        raise typer.Exit(BAD_INPUT if r.status_code == 422 else FAILED)
    return r.content
