"""Phones for the demo: users with hidden tastes request feeds and swipe through them."""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx
import numpy as np

from swipeloop.catalog import TAGS, demo_catalog
from swipeloop.contracts import Item


@dataclass
class SimUser:
    """A user whose taste (one weight per tag) only shows through what they do."""

    user_id: str
    taste: np.ndarray
    session: str = ""
    seq: int = 0
    skips_in_row: int = 0


@dataclass
class SimReport:
    """What the run did and how the users liked it."""

    feeds: int = 0
    events: int = 0
    errors: int = 0
    watch_fraction: list[float] = field(default_factory=list)
    likes: int = 0

    def summary(self, seconds: float) -> dict[str, float]:
        """Figures for the run as a whole."""
        return {
            "feeds": self.feeds,
            "events": self.events,
            "errors": self.errors,
            "events_per_s": round(self.events / seconds, 1) if seconds else 0.0,
            "mean_watch_fraction": round(float(np.mean(self.watch_fraction)), 4)
            if self.watch_fraction
            else 0.0,
            "like_rate": round(self.likes / max(len(self.watch_fraction), 1), 4),
        }


def react(user: SimUser, item: Item, rng: np.random.Generator) -> tuple[float, bool, bool]:
    """Watch fraction, loop and like, from the user's taste for the item's tags plus noise."""
    affinity = float(np.mean([user.taste[TAGS.index(t)] for t in item.tags])) if item.tags else 0.0
    fraction = float(1 / (1 + np.exp(-(6 * affinity - 1.5 + rng.normal(0, 0.7)))))
    looped = fraction > 0.9 and rng.random() < 0.5
    liked = fraction > 0.7 and rng.random() < affinity
    return fraction, looped, liked


def swipe_events(
    user: SimUser, item: Item, request_id: str, rng: np.random.Generator
) -> tuple[list[dict[str, object]], float, bool]:
    """The events a phone sends for one video: watch or skip, maybe loop and like."""
    fraction, looped, liked = react(user, item, rng)
    watch_ms = int(fraction * item.duration_ms)
    kinds = ["skip" if fraction < 0.15 else "watch"]
    if looped:
        kinds.append("loop")
    if liked:
        kinds.append("like")
    events = []
    for kind in kinds:  # seq runs 0, 1, 2, ... per session (a hole is a lost packet)
        events.append(
            {
                "event_id": str(uuid.UUID(bytes=rng.bytes(16), version=4)),
                "user_id": user.user_id,
                "item_id": item.item_id,
                "kind": kind,
                "watch_ms": watch_ms,
                "client_ts": datetime.now(UTC).isoformat(),
                "session_id": user.session,
                "seq": user.seq,
                "request_id": request_id,
            }
        )
        user.seq += 1
    user.skips_in_row = user.skips_in_row + 1 if fraction < 0.15 else 0
    return events, fraction, liked


def population(users: int, seed: int) -> list[SimUser]:
    """Users who each love a few tags and dislike the rest."""
    rng = np.random.default_rng(seed + 1)
    out = []
    for u in range(users):
        taste = rng.normal(-0.3, 0.2, len(TAGS))
        taste[rng.choice(len(TAGS), size=3, replace=False)] = rng.uniform(0.6, 1.0, 3)
        out.append(SimUser(f"sim-u{u:05d}", taste, session=uuid.uuid4().hex))
    return out


async def _user_loop(
    client: httpx.AsyncClient,
    user: SimUser,
    catalog: dict[str, Item],
    deadline: float,
    rng: np.random.Generator,
    report: SimReport,
    page: int,
) -> None:
    while time.monotonic() < deadline:
        try:
            r = await client.get("/v1/feed", params={"user_id": user.user_id, "n": page})
            r.raise_for_status()
            feed = r.json()
            report.feeds += 1
            batch: list[dict[str, object]] = []
            for entry in feed["items"]:
                item = catalog.get(entry["item_id"])
                if item is None:
                    continue
                events, fraction, liked = swipe_events(user, item, feed["request_id"], rng)
                batch.extend(events)
                report.watch_fraction.append(fraction)
                report.likes += int(liked)
                if user.skips_in_row >= 3:  # bored: the session ends
                    user.session, user.seq, user.skips_in_row = uuid.uuid4().hex, 0, 0
                    break
            if batch:
                resp = await client.post("/v1/events", json={"events": batch})
                resp.raise_for_status()
                report.events += len(batch)
        except httpx.HTTPError:
            report.errors += 1
            await asyncio.sleep(0.5)
        await asyncio.sleep(float(rng.uniform(0.2, 1.0)))


async def simulate(
    api_url: str,
    users: int,
    items: int,
    seconds: float,
    seed: int = 0,
    concurrency: int = 64,
    page: int = 10,
) -> dict[str, float]:
    """Post the catalog, then let `users` phones swipe for `seconds`; return a summary."""
    catalog = {it.item_id: it for it in demo_catalog(items, seed)}
    report = SimReport()
    async with httpx.AsyncClient(base_url=api_url, timeout=10.0) as client:
        values = list(catalog.values())
        for start in range(0, len(values), 500):
            chunk = [msgspec_item(it) for it in values[start : start + 500]]
            (await client.post("/v1/items", json={"items": chunk})).raise_for_status()
        people = population(users, seed)
        rng = np.random.default_rng(seed + 2)
        begin = time.monotonic()
        deadline = begin + seconds
        pending = list(people)
        active: set[asyncio.Task[None]] = set()
        while pending or active:
            while pending and len(active) < concurrency and time.monotonic() < deadline:
                user = pending.pop(int(rng.integers(len(pending))))
                active.add(
                    asyncio.create_task(
                        _user_loop(
                            client,
                            user,
                            catalog,
                            min(deadline, time.monotonic() + 20),
                            rng,
                            report,
                            page,
                        )
                    )
                )
            if not active:
                break
            done, active = await asyncio.wait(active, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                task.result()
            if time.monotonic() >= deadline:
                pending.clear()
        return report.summary(time.monotonic() - begin)


def msgspec_item(item: Item) -> dict[str, object]:
    """An item as the JSON the API expects."""
    import msgspec

    result: dict[str, object] = msgspec.to_builtins(item)
    return result
