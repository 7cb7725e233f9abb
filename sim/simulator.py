"""`swipeloop simulate`: the simulated world's people use the live API, and what they do is
measured per policy arm.

catalog    the world's videos are POSTed to /v1/items (a video's topic is its one tag);
           new uploads follow as the world makes them
warm-up    everyone is served by the real-time feed for a while, so there is something to
           learn from; then `train` runs once (the nightly job: it promotes the first model,
           which the batch arm snapshots)
run        `concurrency` sessions at a time: a person asks GET /v1/feed?policy=<their arm>,
           reacts to each video (swipeline.world), POSTs the swipes (seq from 0 in each
           session), and asks again until bored (early skips in a row); a pause, then another
           person's session. Bursts lift a topic for everyone while they last.
tally      per arm: watch seconds per session (and during bursts), like and early-skip
           rates, catalogue coverage, creator exposure Gini, the burst topic's share of
           impressions over time (adaptation lag), views of the gem uploads (minutes to N)
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial

import httpx
import msgspec
import numpy as np

from sim.demo_catalog import TAGS
from sim.figures import ArmFigures, BurstSpan, Reach, Summary, UploadViews
from sim.world import BANDWIDTH_KBPS, POLICIES, Burst, Person, Reaction, Video, World, gini
from swipeloop.contracts import Context, Event, EventBatch, Item, ItemBatch
from swipeloop.tokens import Credentials

BUCKET_S = 5.0  # the timeline's resolution
SUSTAINED = 2  # buckets in a row that make a rise (adaptation_lag)
PAGE = 10
MAX_FEEDS = 5  # per session: even a person who never gets bored puts the phone down
TRIAL_CHECK_S = 5.0  # a trial not yet decided runs on this long before it is asked again
TRIAL_PATIENCE = 3  # ... at most this many times its own seconds more
# a trial: its setup, its seconds, and whether it is decided (none: its seconds are enough)
Trial = tuple[Callable[[], Awaitable[object]], float, Callable[[], bool] | None]
JSON = {"content-type": "application/json"}


def item_of(video: Video, start: datetime) -> Item:
    """The video as the system gets it (its quality stays in the world)."""
    return Item(
        item_id=video.item_id,
        creator_id=video.creator_id,
        duration_ms=video.duration_ms,
        tags=[TAGS[video.topic]],
        created_at=start + timedelta(seconds=video.created_s),
    )


@dataclass
class Tally:
    """What one policy arm's people did."""

    sessions: list[float] = field(default_factory=list)  # watch seconds per session
    burst_sessions: list[float] = field(default_factory=list)  # sessions during a burst
    plays: int = 0
    likes: int = 0
    early_skips: int = 0
    shown: Counter[str] = field(default_factory=Counter)  # impressions per item
    creators: Counter[str] = field(default_factory=Counter)  # impressions per creator
    # per time bucket: [impressions, impressions of a topic that bursts (at some time),
    # watch seconds]
    timeline: dict[int, list[float]] = field(default_factory=dict)
    gem_views: dict[str, list[float]] = field(default_factory=dict)  # seconds after upload

    def figures(self, catalog: int) -> ArmFigures:
        """The arm's summary."""
        return ArmFigures(
            sessions=len(self.sessions),
            watch_s_per_session=_mean(self.sessions),
            burst_watch_s_per_session=_mean(self.burst_sessions),
            like_rate=self.likes / self.plays if self.plays else None,
            early_skip_rate=self.early_skips / self.plays if self.plays else None,
            coverage=len(self.shown) / catalog if catalog else None,
            creator_gini=gini(np.array(list(self.creators.values()), dtype=np.float64)),
        )


@dataclass
class Run:
    """One simulation's shared state: the world, the clock, the tallies."""

    world: World
    start: datetime
    began: float  # time.monotonic() at world time 0
    by_id: dict[str, Video]
    tallies: dict[str, Tally] = field(default_factory=lambda: {p: Tally() for p in POLICIES})
    errors: int = 0
    credentials: Credentials = field(default_factory=Credentials)

    def now(self) -> float:
        """World time: seconds since the world began."""
        return time.monotonic() - self.began

    def bursts(self, topic: int) -> bool:
        """Whether the measured burst (the world's first) lifts this topic at some time."""
        return bool(self.world.bursts) and self.world.bursts[0].topic == topic


async def simulate(
    api_url: str,
    world: World,
    seconds: float,
    warmup_s: float = 0.0,
    train: Callable[[], Awaitable[object]] | None = None,
    concurrency: int = 32,
    seed: int = 0,
    views: tuple[int, ...] = (1000,),
    credentials: Credentials | None = None,
    trials: Sequence[Trial] = (),
) -> Summary:
    """Warm up, train once, run for `seconds` of world time; the per-arm figures (gem
    uploads timed to each number of `views`). `credentials`: what the API wants (each person
    its own token, uploads a key); none: the loopback default. Then each of `trials`: its
    setup (a canary started, say), and that many seconds of everyone on the real-time feed,
    which the figures do not count; with a `decided` check, more (`TRIAL_CHECK_S` at a time,
    at most `TRIAL_PATIENCE` times as long again) until it says the trial is decided."""
    start = datetime.now(UTC)
    by_id = {v.item_id: v for v in world.videos}
    run = Run(world, start, time.monotonic(), by_id, credentials=credentials or Credentials())
    rng = np.random.default_rng([seed, 3])
    async with httpx.AsyncClient(base_url=api_url, timeout=30.0) as client:
        for at in range(0, len(world.videos), 500):
            chunk = [item_of(v, start) for v in world.videos[at : at + 500]]
            await _post(client, "/v1/items", ItemBatch(chunk), run.credentials.server())
        # world time 0 is now: the swipes' client_ts (start + world time) is the wall clock
        run.start, run.began = datetime.now(UTC), time.monotonic()
        if warmup_s > 0:
            await _sessions(client, run, warmup_s, concurrency, rng, warmup=True)
        if train is not None:
            await train()
        measured_from = run.now()
        await _sessions(client, run, measured_from + seconds, concurrency, rng)
        figures = summary(run, measured_from, views)
        for setup, trial_s, decided in trials:
            await setup()
            until = run.now() + trial_s
            await _sessions(client, run, until, concurrency, rng, warmup=True)
            limit = until + TRIAL_PATIENCE * trial_s
            while decided is not None and run.now() < limit:
                if await asyncio.to_thread(decided):
                    break
                await _sessions(
                    client, run, run.now() + TRIAL_CHECK_S, concurrency, rng, warmup=True
                )
    return figures


async def _sessions(
    client: httpx.AsyncClient,
    run: Run,
    until: float,
    concurrency: int,
    rng: np.random.Generator,
    warmup: bool = False,
) -> None:
    """Sessions of randomly picked people, `concurrency` at a time, until world time `until`;
    uploads are posted as the world makes them."""
    idle = list(run.world.people)
    busy: set[asyncio.Task[None]] = set()
    uploads = asyncio.create_task(_uploads(client, run, until))
    while run.now() < until:
        while idle and len(busy) < concurrency:
            person = idle.pop(int(rng.integers(len(idle))))
            task = asyncio.create_task(_session(client, run, person, until, rng, warmup))
            task.add_done_callback(partial(_release, idle, person))
            busy.add(task)
        done, busy = await asyncio.wait(busy, return_when=asyncio.FIRST_COMPLETED)
        for task in done:
            task.result()
    for task in busy:
        await task
    await uploads


def _release(idle: list[Person], person: Person, _done: object) -> None:
    idle.append(person)


async def _uploads(client: httpx.AsyncClient, run: Run, until: float) -> None:
    while run.now() < until:
        new = run.world.uploads(run.now())
        if new:
            run.by_id.update((v.item_id, v) for v in new)
            batch = ItemBatch([item_of(v, run.start) for v in new])
            await _post(client, "/v1/items", batch, run.credentials.server())
        await asyncio.sleep(0.5)


async def _session(
    client: httpx.AsyncClient,
    run: Run,
    person: Person,
    until: float,
    rng: np.random.Generator,
    warmup: bool,
) -> None:
    """One session of one person: feeds until bored, then a pause."""
    world = run.world
    person.session += 1
    person.seq = 0
    person.skips_in_row = 0
    policy = "realtime" if warmup else person.policy
    tally = run.tallies[policy]
    watched_s, in_burst = 0.0, False
    for _ in range(MAX_FEEDS):
        if run.now() >= until or world.bored(person):
            break
        try:
            r = await client.get(
                "/v1/feed",
                params={
                    "user_id": person.user_id,
                    "n": PAGE,
                    "policy": policy,
                    "network": person.network,
                },
                headers=run.credentials.user(person.user_id),
            )
            r.raise_for_status()
        except httpx.HTTPError:
            run.errors += 1
            await asyncio.sleep(0.5)
            continue
        feed = r.json()
        events: list[Event] = []
        phone = Context(
            network=person.network,
            bandwidth_kbps=BANDWIDTH_KBPS.get(person.network, 0),
            device_class=person.device_class,
        )
        for entry in feed["items"]:
            video = run.by_id.get(entry["item_id"])
            if video is None:
                continue  # (an item the world does not know: not this simulation's)
            t = run.now()
            world.drift(person, 1.0, rng)
            reaction = world.react(person, video, t, rng)
            in_burst |= any(b.during(t) for b in world.bursts)
            watched_s += reaction.watched_ms / 1000
            if not warmup:
                _count(tally, video, reaction, run.bursts(video.topic), t)
            at = run.start + timedelta(seconds=t)
            for kind, watch_ms in reaction.kinds():
                events.append(
                    Event(
                        event_id=uuid.UUID(bytes=rng.bytes(16), version=4),
                        user_id=person.user_id,
                        item_id=video.item_id,
                        kind=kind,  # type: ignore[arg-type]
                        client_ts=at,
                        session_id=f"{person.user_id}-s{person.session}",
                        seq=person.seq,
                        watch_ms=watch_ms,
                        request_id=feed["request_id"],
                        context=phone,
                    )
                )
                person.seq += 1
            if world.bored(person):
                break
        if events:
            try:
                headers = run.credentials.user(person.user_id)
                await _post(client, "/v1/events", EventBatch(events), headers)
            except httpx.TransportError:
                run.errors += 1  # (lost: the phone gave up)
        await asyncio.sleep(float(rng.uniform(0.2, 0.6)))  # swiping through the page
    if not warmup:
        tally.sessions.append(watched_s)
        if in_burst:
            tally.burst_sessions.append(watched_s)
    await asyncio.sleep(float(rng.uniform(0.5, 2.0)))  # between sessions


def _count(tally: Tally, video: Video, reaction: Reaction, topical: bool, t: float) -> None:
    tally.plays += 1
    tally.likes += int(reaction.liked)
    tally.early_skips += int(reaction.early_skip)
    tally.shown[video.item_id] += 1
    tally.creators[video.creator_id] += 1
    bucket = tally.timeline.setdefault(int(t // BUCKET_S), [0.0, 0.0, 0.0])
    bucket[0] += 1
    bucket[1] += topical
    bucket[2] += reaction.watched_ms / 1000
    if video.gem:
        tally.gem_views.setdefault(video.item_id, []).append(t - video.created_s)


def summary(run: Run, measured_from: float, views: tuple[int, ...] = (1000,)) -> Summary:
    """Per-arm figures, the lift of real time over batch during bursts, adaptation lags and
    how fast the gems were seen."""
    catalog = len(run.by_id)
    arms = {p: t.figures(catalog) for p, t in run.tallies.items()}
    rt, batch = arms["realtime"].burst_watch_s_per_session, arms["batch"].burst_watch_s_per_session
    uploads = [v for v in run.by_id.values() if v.created_s >= 0]
    return Summary(
        arms=arms,
        errors=run.errors,
        catalog=catalog,
        lift_vs_batch=rt / batch - 1 if rt is not None and batch else None,
        adaptation_lag_s={
            p: adaptation_lag(t.timeline, run.world.bursts) for p, t in run.tallies.items()
        },
        gem_uploads=sum(v.gem for v in uploads),
        # (a video is never shown twice to a person: at most people_per_arm views)
        reach=[
            Reach(
                views=n,
                minutes={p: minutes_to(t.gem_views, n) for p, t in run.tallies.items()},
                gems={
                    p: sum(len(ts) >= n for ts in t.gem_views.values())
                    for p, t in run.tallies.items()
                },
            )
            for n in views
        ],
        people_per_arm=len(run.world.people) // len(POLICIES),
        views_per_upload={  # does exploration find the gems?
            p: UploadViews(
                gem=_mean([float(t.shown[v.item_id]) for v in uploads if v.gem]),
                other=_mean([float(t.shown[v.item_id]) for v in uploads if not v.gem]),
            )
            for p, t in run.tallies.items()
        },
        measured_s=round(run.now() - measured_from, 1),
        # what `swipeloop report` plots
        bursts=[
            BurstSpan(topic=TAGS[b.topic], start_s=b.start_s, end_s=b.end_s, lift=b.lift)
            for b in run.world.bursts
        ],
        timeline={  # per arm: [bucket start s, impressions, of the burst topic, watch s]
            p: [[k * BUCKET_S, *row] for k, row in sorted(t.timeline.items())]
            for p, t in run.tallies.items()
        },
        gem_views_by_minute={p: by_minute(t.gem_views) for p, t in run.tallies.items()},
    )


def by_minute(views: dict[str, list[float]]) -> list[int]:
    """Views of all gems by minute after their upload (index: minutes since upload)."""
    seconds = [s for ts in views.values() for s in ts]
    if not seconds:
        return []
    counts: list[int] = np.bincount((np.array(seconds) // 60).astype(np.int64)).tolist()
    return counts


def adaptation_lag(timeline: dict[int, list[float]], bursts: list[Burst]) -> float | None:
    """Seconds from the first burst's start until the arm's share of impressions on the
    bursting topic has clearly risen: above twice its share before the burst and 5 points
    more, in `SUSTAINED` buckets in a row (None: no burst, or the arm never followed it)."""
    if not bursts:
        return None
    burst = bursts[0]
    first, last = int(burst.start_s // BUCKET_S), int(burst.end_s // BUCKET_S)
    shown = sum(r[0] for b, r in timeline.items() if b < first)
    before = sum(r[1] for b, r in timeline.items() if b < first) / shown if shown else 0.0
    risen = max(2 * before, before + 0.05)
    run = 0
    for b in range(first, last):
        row = timeline.get(b)
        run = run + 1 if row and row[0] and row[1] / row[0] > risen else 0
        if run == SUSTAINED:
            return (b - SUSTAINED + 1 - first) * BUCKET_S
    return None


def minutes_to(views: dict[str, list[float]], threshold: int) -> float | None:
    """The median, over gem uploads that got there, of minutes from upload to `threshold`
    views (None: none did)."""
    times = [sorted(ts)[threshold - 1] / 60 for ts in views.values() if len(ts) >= threshold]
    return float(np.median(times)) if times else None


def _mean(values: list[float]) -> float | None:
    return float(np.mean(values)) if values else None


async def _post(
    client: httpx.AsyncClient, path: str, body: object, auth: dict[str, str], tries: int = 3
) -> None:
    """POST a batch as a phone does: again after a broken connection (the ids make a repeat
    harmless); httpx.TransportError after `tries`, RuntimeError if it is refused."""
    content = msgspec.json.encode(body)
    for attempt in range(tries):
        try:
            r = await client.post(path, content=content, headers={**JSON, **auth})
            break
        except httpx.TransportError:
            if attempt == tries - 1:
                raise
            await asyncio.sleep(0.2)
    if r.status_code != 202:
        raise RuntimeError(f"POST {path} answered {r.status_code}: {r.text[:300]}")


def msgspec_item(item: Item) -> dict[str, object]:
    """An item as the JSON the API expects."""
    result: dict[str, object] = msgspec.to_builtins(item)
    return result
