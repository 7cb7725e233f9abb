"""Policy comparison benchmark: the simulated world against a fresh embedded stack, four
policy arms on one population (realtime, batch, popularity, random).

    python bench/simulate.py --quick    # < 90 s: 400 people, 2,000 videos, 10 s warm-up, 28 s
    python bench/simulate.py            # 200 people, 10,000 videos, 1 min warm-up, 5 min
    python bench/simulate.py --out F    # also keep the figures for `swipeloop report F`

The default population is small on purpose: ~650 sessions fit in the 5 minutes, so 200
people come back about three times each, which is what real-time personalisation needs
(`--users 2000`: most never come back; bench/RESULTS.md has both).

One process: broker, chdb, the three flows and the API (`cli.stack.Stack`), and the
simulator's people (`sim.simulator`) on the same two cores. After the warm-up (every
arm on the real-time feed) the nightly training runs once in-process and the API loads the
model it promotes, which the batch arm snapshots. One burst lifts a topic (drawn from the
seed) for the middle third of the measured time. Prints one JSON object: per arm and the
issue's keys (`*_watch_s_per_session`, `lift_vs_batch` during the burst,
`new_upload_minutes_to_1000_views` for the real-time arm, and the same at `--views`: 25 by
default, 10 with --quick). A person is never shown a video twice, so a video's views in an
arm cannot pass the arm's people (`people_per_arm`): 1,000 views stay out of reach here.
`canaries`: three canary trials after the measured run (`Canaries`), a retrained model, one
that should pass and one that should be dropped, with the judge's verdicts.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.stack import Stack
from sim.simulator import simulate
from sim.world import World, one_burst
from swipeloop.broker import free_port
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
from training import canary, registry
from training.ranker import NotEnoughData, fit, train, training_set


def say(line: str) -> None:
    """The training's progress, on stderr (stdout is the JSON)."""
    print(line, file=sys.stderr)


class Canaries:
    """Three canary trials after the measured run, everyone on the real-time feed and half of
    them ranked by the canary (training.canary): a model trained again on all the days so far
    (the nightly run's own path: it must pass the offline gate; live, it may or may not hold),
    production's own model under a new version, which should pass, and a model trained to rank
    what people disliked first, which should be dropped. Each is judged once its trial's
    seconds are over, and every 5 s after while the judge waits (a difference within the
    noise), for at most three times as long again."""

    def __init__(self, stack: Stack, quick: bool) -> None:
        self.seconds = 15.0 if quick else 60.0
        self.settings = stack.settings.with_(
            canary_share=50, canary_sessions=20 if quick else 50, canary_margin=0.1
        )
        self.stack = stack
        self.outcomes: dict[str, dict[str, Any]] = {}

    async def retrained(self) -> None:
        """Train again: a model that passes the offline gate serves half the users."""
        client = connect(self.settings)
        report = await asyncio.to_thread(train, client, self.settings, say)
        if not report.canary:  # the gate refused it (or nothing served): a canary anyway
            canary.start(client, report.version, 50, f"bench: {report.reason}")
        self.outcomes["retrained"] = {"version": report.version, "offline": report.reason}
        self.stack.services.feed.models.refresh()

    async def same(self) -> None:
        """Judge the first; then production's own model, as a new version, on half the users."""
        self.judged("retrained")
        client = connect(self.settings)
        production = registry.production(client)
        assert production is not None
        booster = registry.load(client, self.settings.models_dir, production)
        now = datetime.now(UTC)
        version = registry.save(client, registry.artefact(booster, 0, 0, None, now, now)).version
        canary.start(client, version, 50, f"bench: production's model {production} again")
        self.outcomes["same"] = {"version": version, "copy_of": production}
        self.stack.services.feed.models.refresh()

    async def bad(self) -> None:
        """Judge the second; then a model that ranks the worst first serves half the users."""
        self.judged("same")
        client = connect(self.settings)
        data = await asyncio.to_thread(training_set, client, self.settings)
        worst = 3 - data.relevance  # what people skipped, ranked as what they liked
        inverted = replace(data, relevance=worst, labels=(worst >= 2).astype(np.int8))
        booster = await asyncio.to_thread(fit, inverted)
        now = datetime.now(UTC)
        made = registry.artefact(booster, len(data), int(inverted.labels.sum()), None, now, now)
        version = registry.save(client, made).version
        canary.start(client, version, 50, "bench: a model that ranks the worst first")
        self.outcomes["bad"] = {"version": version}
        self.stack.services.feed.models.refresh()

    def decided(self, which: str) -> Callable[[], bool]:
        """A check for the simulation: this trial judged now (`judged`), and whether it is
        decided (training.canary waits while the difference is within the noise)."""
        return lambda: self.judged(which)

    def judged(self, which: str) -> bool:
        """The running canary's verdict, recorded as this trial's outcome (once decided, it
        stays); whether it is decided."""
        outcome = self.outcomes[which]
        if outcome.get("state") in (None, canary.RUNNING):
            verdict = canary.judge(connect(self.settings), self.settings)
            outcome.update(msgspec.to_builtins(verdict) if verdict else {"state": "none"})
            self.stack.services.feed.models.refresh()
        return bool(outcome["state"] != canary.RUNNING)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--users", type=int, default=200, help="people (not with --quick)")
    parser.add_argument("--views", type=int, help="gem uploads also timed to this many views")
    parser.add_argument("--out", type=Path, help="also write the JSON here (swipeloop report)")
    args = parser.parse_args()
    users, videos = (400, 2_000) if args.quick else (args.users, 10_000)
    warmup_s, seconds = (10.0, 28.0) if args.quick else (60.0, 300.0)
    views = args.views or (10 if args.quick else 25)
    began = time.perf_counter()
    # the measured burst in the middle third, and one in the warm-up: days have bursts, so
    # the night's model has seen how a topic everyone suddenly wants is taken
    bursts = one_burst(args.seed, warmup_s + seconds / 3, seconds / 3)
    bursts += one_burst(args.seed, warmup_s / 4, warmup_s / 2, draw=5)
    world = World.create(args.seed, users, videos, bursts=bursts)
    with tempfile.TemporaryDirectory(prefix="swipeloop-simulate-") as tmp:
        settings = Settings(data_dir=Path(tmp), api_port=free_port(), metrics_port=0, seed_items=0)
        with Stack(settings, schedule_training=False) as stack:
            stack.serve_in_thread()
            trained: dict[str, Any] = {}

            async def nightly() -> None:
                started = time.perf_counter()
                # the night comes after the day is in ClickHouse: wait for the ingest flow
                # to stop adding events (on two busy cores it can trail by tens of seconds)
                client = connect(settings)
                counts = [-1]
                while time.perf_counter() - started < 120:
                    counts.append(int(client.query("SELECT count() FROM events").result_rows[0][0]))
                    if counts[-1] == counts[-2]:
                        break
                    await asyncio.sleep(1.0)
                trained["events"], trained["caught_up_s"] = (
                    counts[-1],
                    round(time.perf_counter() - started, 1),
                )
                try:
                    report = await asyncio.to_thread(train, connect(settings), settings, say)
                    trained.update(version=report.version, rows=report.rows)
                except NotEnoughData as exc:
                    trained["skipped"] = str(exc)
                stack.services.feed.models.refresh()  # (rather than wait for its poll)
                trained["train_s"] = round(time.perf_counter() - started, 1)

            trial = Canaries(stack, quick=args.quick)
            figures = asyncio.run(
                simulate(
                    stack.url,
                    world,
                    seconds,
                    warmup_s,
                    nightly,
                    seed=args.seed,
                    views=(1000, views),
                    trials=[
                        (trial.retrained, trial.seconds, trial.decided("retrained")),
                        (trial.same, trial.seconds, trial.decided("same")),
                        (trial.bad, trial.seconds, trial.decided("bad")),
                    ],
                )
            )
            trial.judged("bad")
    out = figures.flat()
    out["by_arm_new_upload_minutes_to_1000_views"] = out["new_upload_minutes_to_1000_views"]
    out["new_upload_minutes_to_1000_views"] = out["new_upload_minutes_to_1000_views"]["realtime"]
    out["training"] = trained
    out["canaries"] = trial.outcomes
    out["total_s"] = round(time.perf_counter() - began, 1)
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    if args.out:
        args.out.write_text(json.dumps(out))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
