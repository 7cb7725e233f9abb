"""Soak: mixed ingest and feed load at half of measured capacity, for minutes, on loopback.

    python bench/soak.py --quick      # < 60 s in all; prints one JSON object
    python bench/soak.py              # 10 minutes of load

The whole system runs in this process as `swipeloop up` runs it (embedded broker, chdb, the
three flows, the API); the load comes from a separate process (aiohttp keep-alive clients),
so this process's RSS is the server's. First the capacity: closed-loop clients, each asking for
a feed (n=10) and then posting the swipes on what it showed (10 events), as fast as answers
come. Then an open loop at half of that rate (`--fraction`; a request every 1/rate s, whatever
the answers), for the run's length. Every acknowledged event is looked for in ClickHouse once
ingest has caught up: one missing is a false ack. `window_s` is the length of the windows the
p99s are taken over (60 s: per minute; `--quick`: 10 s), for both kinds of request and for
each; `rss_slope_mb_per_min` is the least-squares slope of RSS after the first window; the
CPU cores used per window, by this process and by the embedded broker, tell a server that
grows slower from a machine that is full (the load process runs on the same cores).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import sys
import tempfile
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.feed import cpu_s
from cli.stack import Stack
from swipeloop.broker import free_port
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
from swipeloop.waiting import wait_for

USERS = 5_000
KINDS = ("watch", "watch", "skip", "like", "loop")


def swipes(user: str, items: list[str], rng: np.random.Generator) -> list[dict[str, Any]]:
    """What a phone sends after a feed: one event per item shown."""
    now = datetime.now(UTC).isoformat()
    return [
        {
            "event_id": str(uuid.uuid4()),
            "user_id": user,
            "item_id": item,
            "kind": KINDS[int(rng.integers(len(KINDS)))],
            "watch_ms": int(rng.integers(500, 30_000)),
            "client_ts": now,
            "session_id": f"soak-{user}",
            "seq": k,
        }
        for k, item in enumerate(items)
    ]


class Recorder:
    """Every request's (start s, latency ms, status, kind) and the event ids acknowledged."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, float, int, str]] = []
        self.acked: list[str] = []
        self.began = time.monotonic()

    async def call(
        self, http: aiohttp.ClientSession, kind: str, method: str, url: str, **kw: Any
    ) -> tuple[int, Any]:
        t0 = time.monotonic()
        try:
            async with http.request(method, url, **kw) as r:
                body = await r.json(content_type=None)
                status = r.status
        except (aiohttp.ClientError, TimeoutError):
            body, status = None, 599  # no answer: counted as a server error
        self.requests.append((t0 - self.began, (time.monotonic() - t0) * 1000, status, kind))
        return status, body

    async def session(self, http: aiohttp.ClientSession, url: str, k: int) -> None:
        """One user's turn: a feed, then the swipes on what it showed."""
        rng = np.random.default_rng(k)
        user = f"soak-u{k % USERS}"
        status, feed = await self.call(
            http, "feed", "GET", f"{url}/v1/feed", params={"user_id": user, "n": 10}
        )
        if status != 200 or not feed["items"]:
            return
        events = swipes(user, [i["item_id"] for i in feed["items"]], rng)
        status, _ = await self.call(
            http, "events", "POST", f"{url}/v1/events", json={"events": events}
        )
        if status == 202:
            self.acked.extend(e["event_id"] for e in events)


async def closed_loop(url: str, seconds: float, clients: int) -> dict[str, Any]:
    """Sessions back to back from `clients` clients: the capacity in sessions/s."""
    recorder, deadline = Recorder(), time.monotonic() + seconds
    done = 0

    async def client(c: int, http: aiohttp.ClientSession) -> None:
        nonlocal done
        k = c
        while time.monotonic() < deadline:
            await recorder.session(http, url, k)
            k += clients
            done += 1

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        await asyncio.gather(*(client(c, http) for c in range(clients)))
    return {"sessions_per_s": done / seconds, "acked": recorder.acked}


async def open_loop(url: str, seconds: float, rate: float) -> dict[str, Any]:
    """A session started every 1/rate s for `seconds`, whether or not earlier ones answered."""
    recorder = Recorder()
    tasks: set[asyncio.Task[None]] = set()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        for k in range(int(seconds * rate)):
            await asyncio.sleep(max(0.0, k / rate - (time.monotonic() - recorder.began)))
            task = asyncio.create_task(recorder.session(http, url, 100_000 + k))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.gather(*tasks)
    return {"requests": recorder.requests, "acked": recorder.acked}


def run_closed(url: str, seconds: float, clients: int) -> dict[str, Any]:
    return asyncio.run(closed_loop(url, seconds, clients))


def run_open(url: str, seconds: float, rate: float) -> dict[str, Any]:
    return asyncio.run(open_loop(url, seconds, rate))


def rss_mb() -> float:
    """This process's resident set (the server's: the load runs elsewhere)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def cores_per_window(samples: list[tuple[float, float]], window_s: float) -> list[float]:
    """CPU cores used in each window, from (elapsed s, cumulative CPU s) samples."""
    at, used = np.array(samples).T
    edges = np.minimum(np.arange(0.0, at[-1] + window_s, window_s), at[-1])
    edges = np.unique(edges)
    return [round(float(c), 2) for c in np.diff(np.interp(edges, at, used)) / np.diff(edges)]


def p99(values: list[float]) -> float | None:
    return round(float(np.percentile(values, 99)), 1) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="under 60 s in all")
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the load")
    parser.add_argument("--clients", type=int, default=8, help="closed-loop clients (capacity)")
    parser.add_argument("--fraction", type=float, default=0.5, help="of capacity, for the load")
    args = parser.parse_args()
    load_s = 20.0 if args.quick else args.minutes * 60
    capacity_s, window_s = (5.0, 10.0) if args.quick else (30.0, 60.0)
    started = time.monotonic()
    spawn = multiprocessing.get_context("spawn")  # no fork of a process with broker threads
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        settings = Settings(
            data_dir=Path(tmp), api_port=free_port(), seed_items=1000, metrics_port=0
        )
        stack = Stack(settings, schedule_training=False).start()
        try:
            stack.serve_in_thread()
            state = stack.services.feed.state
            wait_for(lambda: len(state.catalog) >= settings.seed_items, 60)
            wait_for(lambda: len(state.catalog_order()) >= settings.seed_items, 30)
            start_s = time.monotonic() - started
            with ProcessPoolExecutor(1, mp_context=spawn) as load:
                capacity = load.submit(run_closed, stack.url, capacity_s, args.clients).result()
                rate = capacity["sessions_per_s"] * args.fraction
                running = load.submit(run_open, stack.url, load_s, rate)
                rss: list[tuple[float, float]] = []
                cpu: dict[str, list[tuple[float, float]]] = {"server": [], "broker": []}
                broker = stack.broker.pid if stack.broker else None
                t0 = time.monotonic()
                while not running.done():
                    at = time.monotonic() - t0
                    rss.append((at, rss_mb()))
                    cpu["server"].append((at, cpu_s(os.getpid())))
                    if broker is not None:
                        cpu["broker"].append((at, cpu_s(broker)))
                    time.sleep(1.0)
                soak = running.result()
            acked = capacity["acked"] + soak["acked"]
            client = connect(stack.settings)
            stored: set[str] = set()

            def all_stored() -> bool:
                rows = client.query("SELECT DISTINCT toString(event_id) FROM events").result_rows
                stored.update(str(r[0]) for r in rows)
                return stored.issuperset(acked)

            drained = time.monotonic()
            caught_up = wait_for(all_stored, 120, every_s=1.0)
            drain_s = time.monotonic() - drained
        finally:
            stack.stop()
    requests = soak["requests"]
    windows = int(np.ceil(load_s / window_s))

    def per_window(kinds: tuple[str, ...]) -> list[float | None]:
        return [
            p99(
                [
                    ms
                    for at, ms, _, k in requests
                    if w * window_s <= at < (w + 1) * window_s and k in kinds
                ]
            )
            for w in range(windows)
        ]

    both = per_window(("feed", "events"))
    later = [(t / 60, mb) for t, mb in rss if t >= window_s]
    minutes, mbs = np.array([t for t, _ in later]), np.array([mb for _, mb in later])
    slope = float(np.polyfit(minutes, mbs, 1)[0]) if len(later) > 2 else None
    print(
        json.dumps(
            {
                "requests": len(requests),
                "errors_5xx": sum(1 for *_, status, _ in requests if status >= 500),
                "errors_4xx": sum(1 for *_, status, _ in requests if 400 <= status < 500),
                "false_acks": len(set(acked) - stored),
                "acked_events": len(acked),
                "ingest_caught_up": caught_up,
                "capacity_sessions_per_s": round(capacity["sessions_per_s"], 1),
                "load_sessions_per_s": round(rate, 1),
                "load_s": load_s,
                "window_s": window_s,
                "p99_ms_first_minute": both[0],
                "p99_ms_last_minute": both[-1],
                "p99_ms_per_window": both,
                "p99_ms_per_window_feed": per_window(("feed",)),
                "p99_ms_per_window_events": per_window(("events",)),
                "p99_ms_feed": p99([ms for _, ms, _, kind in requests if kind == "feed"]),
                "p99_ms_events": p99([ms for _, ms, _, kind in requests if kind == "events"]),
                # CPU cores used per window: this process (API, flows, chdb) and the embedded
                # broker (a process of its own); 2 cores on the development VM
                "server_cores_per_window": cores_per_window(cpu["server"], window_s),
                "broker_cores_per_window": cores_per_window(cpu["broker"], window_s)
                if cpu["broker"]
                else None,
                "rss_mb_start": round(rss[0][1], 1) if rss else None,
                "rss_mb_end": round(rss[-1][1], 1) if rss else None,
                "rss_slope_mb_per_min": None if slope is None else round(slope, 2),
                "start_s": round(start_s, 1),
                "drain_s": round(drain_s, 1),
                "wall_s": round(time.monotonic() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
