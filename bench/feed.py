"""Feed benchmark: GET /v1/feed over HTTP at a large catalog, stage by stage.

    python bench/feed.py --quick      # < 60 s; 200,000 items; prints one JSON object
    python bench/feed.py              # 1,000,000 items

The catalog and a clustered vector per item are written to ClickHouse before the API starts
(the API bootstraps them as after a restart; its FAISS index builds its IVF lists in the
background and is waited for). 2,000 users each get a learned-looking vector, and a LightGBM
model of the nightly model's shape (fitted on synthetic rows) ranks every shortlist. Requests
ask for 20 items with 10,000 candidates each, from `--clients` keep-alive clients (aiohttp, a
quarter of httpx's CPU per request, in a separate process, so the load generator does not
share the API's interpreter; it does share the 2 cores with the API). By default the flows
are not started: this measures the feed API as it runs in production, in its own container
(`swipeloop api --role feed`); `--with-flows` measures `swipeloop up`, everything in one
process, where the flows sink every served impression into ClickHouse on the same two cores.
`stage_p99_ms` comes from the API's Server-Timing header.
A second phase asks with `explain=true`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.feed import STAGES
from bench.e2e import preload, server_timing
from models.features import FEATURE_NAMES
from models.ranker import fit, save
from swipeloop.broker import free_port
from swipeloop.settings import Settings
from swipeloop.stack import Stack


def ranking_model(settings: Settings) -> str:
    """A LightGBM model of the nightly model's shape (100 trees of 31 leaves, `models.ranker`)
    fitted on synthetic rows and put in the registry, so each feed pays for real ranking."""
    rng = np.random.default_rng(3)
    rows = rng.random((20_000, len(FEATURE_NAMES))).astype(np.float32)
    labels = (rows[:, 0] + 0.3 * rng.random(len(rows)) > 0.8).astype(np.int8)
    booster, auc = fit(rows, labels)
    now = datetime.now(UTC)
    info = save(settings.models_dir, booster, len(rows), int(labels.sum()), auc, now, now)
    return info.version


def learned_users(stack: Stack, users: int, dim: int) -> None:
    """Give users vectors as the embeddings flow would (the API's user-vector cache)."""
    state = stack.server.config.app.state.services.feed.state
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(users, dim)).astype(np.float32)
    vectors[:, -1] = 1.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    for k in range(users):
        state.user_vectors[f"bench-u{k}"] = vectors[k]


def load(
    url: str, seconds: float, clients: int, explain: bool
) -> tuple[list[dict[str, Any]], float]:
    """`feeds` in a separate process: its records, and the CPU seconds it spent."""
    # spawn: forking a process that runs the broker client's and the engine's threads is unsafe
    with ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn")
    ) as pool:
        return pool.submit(run_feeds, url, seconds, clients, explain).result()


def run_feeds(
    url: str, seconds: float, clients: int, explain: bool
) -> tuple[list[dict[str, Any]], float]:
    cpu = time.process_time()
    records = asyncio.run(feeds(url, seconds, clients, explain))
    return records, time.process_time() - cpu


async def feeds(url: str, seconds: float, clients: int, explain: bool) -> list[dict[str, Any]]:
    """Requests from `clients` keep-alive clients for `seconds`; one record per response."""
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + seconds

    async def client(c: int, http: aiohttp.ClientSession) -> None:
        k = 0
        while time.monotonic() < deadline:
            params: dict[str, Any] = {"user_id": f"bench-u{(c * 997 + k) % 2_000}", "n": 20}
            if explain:
                params["explain"] = "true"
            k += 1
            t0 = time.perf_counter()
            async with http.get(f"{url}/v1/feed", params=params) as r:
                body = await r.read()
                ms = (time.perf_counter() - t0) * 1000
                r.raise_for_status()
                out.append(
                    {
                        "ms": ms,
                        "stages": server_timing(r.headers["server-timing"]),
                        "candidates": (feed := json.loads(body))["candidates"],
                        "model": feed["model_version"],
                    }
                )

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as http:
        await asyncio.gather(*(client(c, http) for c in range(clients)))
    return out


def p(values: list[float], q: float) -> float:
    return round(float(np.percentile(values, q)), 2) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="200,000 items, short phases")
    parser.add_argument("--items", type=int, default=0)
    parser.add_argument("--clients", type=int, default=3)
    parser.add_argument(
        "--with-flows", action="store_true", help="run the flows in the API's process too"
    )
    args = parser.parse_args()
    items = args.items or (200_000 if args.quick else 1_000_000)
    phase = 6.0 if args.quick else 30.0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        settings = Settings(data_dir=Path(tmp), api_port=free_port(), seed_items=0)
        stack = Stack(settings, schedule_training=False, run_flows=args.with_flows).start()
        try:
            preload_s = preload(stack.settings, items, settings.embedding_dim)
            model = ranking_model(stack.settings)
            t0 = time.perf_counter()
            stack.serve_in_thread(timeout_s=300)
            state = stack.server.config.app.state.services.feed.state
            state.index.wait_ready(300)
            bootstrap_s = time.perf_counter() - t0
            learned_users(stack, 2_000, settings.embedding_dim)
            load(stack.url, 1.0, 1, False)  # warm-up
            api_cpu = time.process_time()  # this process is the API's
            plain, client_cpu = load(stack.url, phase, args.clients, False)
            api_cpu = time.process_time() - api_cpu
            explained, _ = load(stack.url, phase / 2, args.clients, True)
            index = state.index.describe()
        finally:
            stack.stop()
    ms = [r["ms"] for r in plain]
    print(
        json.dumps(
            {
                "items": items,
                "candidates": int(np.median([r["candidates"] for r in plain])),
                "model": model if all(r["model"] == model for r in plain) else "mixed",
                "requests": len(plain),
                "feeds_per_s": round(len(plain) / phase, 1),
                "api_cpu_ms_per_feed": round(1000 * api_cpu / max(len(plain), 1), 2),
                "client_cpu_ms_per_feed": round(1000 * client_cpu / max(len(plain), 1), 2),
                "p50_ms": p(ms, 50),
                "p99_ms": p(ms, 99),
                "server_p99_ms": p([r["stages"]["feed"] for r in plain], 99),
                "stage_p99_ms": {s: p([r["stages"][s] for r in plain], 99) for s in STAGES},
                "wait_p99_ms": p([r["stages"]["wait"] for r in plain], 99),
                "p99_ms_explain": p([r["ms"] for r in explained], 99),
                "index": {k: v for k, v in index.items() if k in ("kind", "nlist", "vectors")},
                "preload_s": round(preload_s, 1),
                "api_bootstrap_s": round(bootstrap_s, 1),
                "clients": args.clients,
                "ann_oversample": settings.ann_oversample,
                "flows_in_process": args.with_flows,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
