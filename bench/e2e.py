"""End-to-end benchmark of the embedded stack: ingest throughput and feed latency at 100k items.

    python bench/e2e.py --quick      # < 60 s; prints one JSON object

The catalog (100,000 items) and a vector per item are written to ClickHouse before the API starts,
so the API bootstraps them exactly as after a restart. Load comes from an asyncio httpx client with
keep-alive, sharing the machine's cores with the system under test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np

from cli.stack import Stack
from sim.demo_catalog import TAGS
from swipeloop.broker import free_port
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings

CATALOG_AGE_S = 90 * 86_400  # uploads spread over 90 days: about 2 % are new (48 h)


def preload(settings: Settings, items: int, dim: int) -> float:
    """Write `items` items and clustered vectors into ClickHouse; return seconds taken."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(0)
    client = connect(settings)
    now = datetime.now(UTC)
    ids = [f"v{i:07d}" for i in range(items)]
    rows = [
        [
            ids[i],
            f"c{i % (items // 20):06d}",
            int(rng.integers(5_000, 90_000)),
            [TAGS[i % len(TAGS)]],
            "",
            now - timedelta(seconds=int(rng.integers(0, CATALOG_AGE_S))),
        ]
        for i in range(items)
    ]
    client.insert(
        "items",
        rows,
        column_names=["item_id", "creator_id", "duration_ms", "tags", "sound_id", "created_at"],
    )
    centers = rng.normal(size=(len(TAGS), dim)).astype(np.float32)
    vectors = centers[np.arange(items) % len(TAGS)] + 0.5 * rng.normal(size=(items, dim)).astype(
        np.float32
    )
    client.insert(
        "item_embeddings",
        [[ids[i], 1, now, vectors[i].tolist()] for i in range(items)],
        column_names=["item_id", "version", "updated_at", "vector"],
    )
    return time.perf_counter() - t0


def event(user: str, item: str, kind: str, seq: int) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "item_id": item,
        "kind": kind,
        "watch_ms": 12_000,
        "client_ts": datetime.now(UTC).isoformat(),
        "session_id": f"s-{user}",
        "seq": seq,
    }


async def ingest_load(
    url: str, seconds: float, batch: int, concurrency: int, items: int
) -> tuple[int, int]:
    """Post batches of events from `concurrency` clients; return (acked events, failures)."""
    acked = failures = 0
    deadline = time.monotonic() + seconds
    rng = np.random.default_rng(1)

    async def worker(w: int) -> None:
        nonlocal acked, failures
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            seq = 0
            while time.monotonic() < deadline:
                user = f"bench-u{int(rng.integers(2_000))}"
                events = [
                    event(
                        user,
                        f"v{int(rng.integers(items)):07d}",
                        "like" if k % 5 == 0 else "watch",
                        seq + k,
                    )
                    for k in range(batch)
                ]
                seq += batch
                r = await client.post("/v1/events", json={"events": events})
                if r.status_code == 202:
                    acked += batch
                else:
                    failures += 1

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return acked, failures


async def feed_load(
    url: str, seconds: float, concurrency: int
) -> tuple[list[float], list[float], list[int]]:
    """Request feeds from `concurrency` clients; latencies (client, server ms), candidates."""
    latencies: list[float] = []
    server: list[float] = []
    candidates: list[int] = []
    deadline = time.monotonic() + seconds

    async def worker(w: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            k = 0
            while time.monotonic() < deadline:
                user = f"bench-u{(w * 997 + k) % 2_000}"
                k += 1
                t0 = time.perf_counter()
                r = await client.get("/v1/feed", params={"user_id": user, "n": 20})
                latencies.append((time.perf_counter() - t0) * 1000)
                r.raise_for_status()
                server.append(server_timing(r.headers["server-timing"])["feed"])
                candidates.append(int(r.json()["candidates"]))

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return latencies, server, candidates


def server_timing(header: str) -> dict[str, float]:
    """`Server-Timing: feed;dur=3.1, retrieve;dur=1.2, ...` as {name: ms}."""
    out = {}
    for entry in header.split(","):
        name, _, duration = entry.strip().partition(";dur=")
        out[name] = float(duration)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short phases (< 60 s in all)")
    parser.add_argument("--items", type=int, default=100_000)
    args = parser.parse_args()
    phase = 5.0 if args.quick else 30.0
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        settings = Settings(data_dir=Path(tmp), api_port=free_port(), seed_items=0)
        stack = Stack(settings, schedule_training=False).start()
        try:
            preload_s = preload(stack.settings, args.items, settings.embedding_dim)
            t0 = time.perf_counter()
            stack.serve_in_thread(timeout_s=120)
            bootstrap_s = time.perf_counter() - t0
            acked, failures = asyncio.run(ingest_load(stack.url, phase, 100, 8, args.items))
            events_per_s = acked / phase
            t0 = time.perf_counter()
            client = connect(stack.settings)
            while time.perf_counter() - t0 < 60:
                stored = client.query("SELECT count() FROM events").result_rows[0][0]
                if stored >= acked:
                    break
                time.sleep(0.2)
            drain_s = time.perf_counter() - t0
            latencies, server, candidates = asyncio.run(feed_load(stack.url, phase, 2))
            # Again once the flows have closed the windows of the ingest burst: the embedded mode
            # runs flows and API in one interpreter, so flow work competes for the GIL.
            time.sleep(5)
            quiet, quiet_server, _ = asyncio.run(feed_load(stack.url, phase, 2))
        finally:
            stack.stop()
    lat = np.asarray(latencies)
    print(
        json.dumps(
            {
                "items": args.items,
                "events_per_s": round(events_per_s, 1),
                "ingest_failures": failures,
                "events_stored": int(stored),
                "events_acked": acked,
                "ingest_drain_s": round(drain_s, 2),
                "feed_requests": len(lat),
                "feeds_per_s": round(len(lat) / phase, 1),
                "feed_p50_ms": round(float(np.percentile(lat, 50)), 2),
                "feed_p99_ms": round(float(np.percentile(lat, 99)), 2),
                "feed_server_p50_ms": round(float(np.percentile(server, 50)), 2),
                "feed_server_p99_ms": round(float(np.percentile(server, 99)), 2),
                "feed_quiet_p50_ms": round(float(np.percentile(quiet, 50)), 2),
                "feed_quiet_p99_ms": round(float(np.percentile(quiet, 99)), 2),
                "feed_quiet_server_p99_ms": round(float(np.percentile(quiet_server, 99)), 2),
                "feeds_per_s_quiet": round(len(quiet) / phase, 1),
                "candidates": int(np.median(candidates)),
                "preload_s": round(preload_s, 2),
                "api_bootstrap_s": round(bootstrap_s, 2),
                "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                "load_generator": "httpx.AsyncClient keep-alive, in-process; "
                "ingest 8 clients x 100-event batches, feed 2 clients",
            }
        )
    )


if __name__ == "__main__":
    main()
