"""`swipeloop simulate`, `replay` and `report`: measure the recommender with simulated people or
a ratings file, and render what was measured."""

from __future__ import annotations

import asyncio
import enum
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from cli.shared import BAD_INPUT, console, env_settings
from swipeloop.extras import require


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
    from swipeloop.tokens import Credentials

    settings = env_settings()  # (only its keys: the API is at `url`)
    warmup_s, seconds = warmup_minutes * 60, minutes * 60
    world = World.create(
        seed, users, items, bursts=one_burst(seed, warmup_s + seconds / 3, seconds / 3)
    )

    async def train() -> None:  # the nightly job, once, inside the running stack
        async with httpx.AsyncClient(timeout=600, headers=settings.bearer("admin")) as client:
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
                credentials=Credentials(settings),
            )
        )
    text = json.dumps(figures.flat())
    if out is not None:
        out.write_text(text)
    print(text)


def report(
    simulation: Annotated[Path, typer.Argument(help="a `simulate --out` file")],
    replay: Annotated[Path | None, typer.Option(help="a `replay` output to add")] = None,
    out: Annotated[Path, typer.Option(help="where the PNGs and report.md go")] = Path(
        "bench/report"
    ),
) -> None:
    """Render a simulation (and a replay) as PNG plots and a Markdown summary."""
    import msgspec

    from sim.figures import ReplayFigures, Summary

    require("matplotlib", "eval", "swipeloop report")
    from sim.report import render

    try:
        figures = Summary.from_flat(json.loads(simulation.read_text()))
        replayed = (
            msgspec.convert(json.loads(replay.read_text()), ReplayFigures) if replay else None
        )
    except (OSError, json.JSONDecodeError, msgspec.ValidationError) as exc:
        console.print(f"[red]cannot read:[/] {exc}")
        raise typer.Exit(BAD_INPUT) from exc
    for path in render(figures, out, replayed):
        console.print(f"wrote {path}")


class Split(enum.StrEnum):
    """`swipeloop replay --split`."""

    last = "last"
    history = "history"


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
    split: Annotated[
        Split,
        typer.Option(
            help="what is held out: each user's last rating, or the one at 80 % of their history"
        ),
    ] = Split.last,
) -> None:
    """Replay a ratings file through a fresh embedded stack, then score next-item prediction
    (HR@10, NDCG@10) of its feeds against popularity and item-kNN; every choice is made on a
    validation split first (each user's item before the test one). Prints JSON."""
    import tempfile

    import msgspec
    from rich.progress import Progress

    from cli.stack import fresh_stack
    from sim.movielens import RatingsError, history_split, leave_last_out, read_ratings
    from sim.replay import replay as run
    from sim.replay import tuned
    from swipeloop.broker import free_port

    try:
        data = read_ratings(ratings)
    except (RatingsError, OSError) as exc:
        console.print(f"[red]cannot replay:[/] {exc}")
        raise typer.Exit(BAD_INPUT) from exc
    with tempfile.TemporaryDirectory(prefix="swipeloop-replay-") as tmp:
        settings = env_settings().with_(
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

            held_out = leave_last_out if split is Split.last else history_split
            settings, tuning = tuned(data, settings, held_out)
            with fresh_stack(settings) as stack:
                state = stack.services.feed.state
                figures = run(
                    data, settings, stack.url, state, span_hours * 3600, progress, held_out, tuning
                )
    print(json.dumps(msgspec.to_builtins(figures)))
