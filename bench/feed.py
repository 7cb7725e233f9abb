"""Feed benchmark: GET /v1/feed over HTTP at a large catalog, stage by stage.

    python bench/feed.py --quick      # < 60 s; 200,000 items; prints one JSON object
    python bench/feed.py              # 1,000,000 items

The catalog, a clustered vector per item and 2,000 users' learned-looking vectors are written
to ClickHouse before any API starts, and a LightGBM model of the nightly model's shape (fitted
on synthetic rows) is put in the registry, so every shortlist pays for real ranking. Then the
feed API starts as it runs in production, `swipeloop api --role feed`, as `--replicas`
processes (default 2: one per core, as `--workers 2` runs it), each bootstrapping from
ClickHouse and following the broker (the embedded one, in this process). Each replica reads its
own copy of the chdb data directory: chdb opens a path from one process only, where
production replicas share a ClickHouse server. Every FAISS index builds its IVF lists in the
background and is waited for. Requests ask for 20 items with 10,000 candidates each, from
`--clients` keep-alive clients (aiohttp, in a separate process; it shares the 2 cores with
the API and the broker), client c asking replica c mod replicas. Each client sends its next
request when the last one is answered; the default of one per replica is the load at which
each process builds one feed at a time (more clients: more feeds/s at first, then only more
latency; `bench/RESULTS.md` has the curve). `--with-flows` measures `swipeloop up` instead:
everything in one process, where the flows sink every served impression into ClickHouse on
the same two cores. `stage_p99_ms` comes from the API's Server-Timing header. A second phase
asks with `explain=true`.

Memory: `replica_rss_mb` is a replica's resident set (the largest of them) once bootstrapped
with its index built, after the load, and at its peak (the bootstrap's or an index build's);
`replica_rss_mb_per_100k_items` is the one after the load per 100,000 items of the catalog (and
`..._bootstrapped` the first). The chdb engine each replica carries here (~250 MB) is included:
a production replica reads a ClickHouse server instead. `replica_state_mb` is what each part of
a serving state holds (`ServingState.memory`), from one more bootstrap in this process after the
replicas have stopped, with the resident growth that bootstrap caused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.feed import STAGES
from api.state import ServingState
from bench.e2e import preload, server_timing
from cli.stack import Stack
from models.features.ranking import FEATURE_NAMES
from swipeloop.broker import free_port
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
from training import registry
from training.ranker import Impressions, fit


def ranking_model(settings: Settings) -> str:
    """A LightGBM model of the nightly model's shape (`training.ranker`: lambdarank, 100 trees of
    31 leaves) fitted on synthetic feeds of 20 and promoted, so each feed pays for real
    ranking."""
    rng = np.random.default_rng(3)
    rows = rng.random((20_000, len(FEATURE_NAMES))).astype(np.float32)
    relevance = np.digitize(rows[:, 0] + 0.3 * rng.random(len(rows)), [0.6, 0.9, 1.1])
    now = datetime.now(UTC)
    data = Impressions(
        features=rows,
        relevance=relevance.astype(np.int32),
        labels=(relevance >= 2).astype(np.int8),
        watch_s=np.zeros(len(rows)),
        groups=np.full(len(rows) // 20, 20, dtype=np.int64),
        served=[now] * (len(rows) // 20),
    )
    client = connect(settings)
    info = registry.save(client, registry.artefact(fit(data), len(rows), 0, None, now, now))
    registry.promote(client, info.version, "benchmark")
    return info.version


def learned_users(settings: Settings, users: int, dim: int) -> None:
    """Vectors for `users` users, as the embeddings flow would have written them."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(users, dim)).astype(np.float32)
    vectors[:, -1] = 1.0
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    now = datetime.now(UTC)
    connect(settings).insert(
        "user_embeddings",
        [[f"bench-u{k}", 1, now, vectors[k].tolist()] for k in range(users)],
        column_names=["user_id", "version", "updated_at", "vector"],
    )


def cpu_s(pid: int) -> float:
    """CPU seconds a process has used (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def spawned(pid: int) -> int:
    """The one child process of a process (`swipeloop up`'s broker)."""
    (child,) = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    return int(child)


def rss_mb(pid: int | str = "self", field: str = "VmRSS") -> float:
    """A process's resident set in MB (`VmHWM`: the most it has held)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def state_memory(settings: Settings, items: int) -> dict[str, Any]:
    """What each part of a serving state bootstrapped from `settings`' ClickHouse holds (MB, and
    in all per 100,000 items), and the resident growth of this process that it caused."""
    before = rss_mb()
    state = ServingState(settings, connect(settings))
    state.bootstrap()
    state.index.wait_ready()
    state.refresh()
    parts = {part: round(size / 2**20, 1) for part, size in state.memory().items()}
    return {
        **parts,
        "total": round(sum(parts.values()), 1),
        "total_per_100k_items": round(sum(parts.values()) / (items / 100_000), 1),
        "rss_growth": round(rss_mb() - before, 1),
    }


NO_METRICS = {"SWIPELOOP_METRICS_PORT": "0"}  # `swipeloop up`'s flow metrics server: off


class Api:
    """One API process started from the command line on a copy of the data directory's
    ClickHouse data (the model registry with it; the copy's models directory is its own cache)."""

    def __init__(self, data: Path, copy: Path, command: list[str], env: dict[str, str]) -> None:
        copy.mkdir(parents=True)
        skip = shutil.ignore_patterns("tmp*", "status")  # chdb's scratch and lock files
        shutil.copytree(data / "clickhouse", copy / "clickhouse", symlinks=True, ignore=skip)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = (copy / "api.log").open("wb")
        self.process = subprocess.Popen(
            [*command, "--port", str(self.port)],
            env={**os.environ, **env, "SWIPELOOP_DATA_DIR": str(copy), **NO_METRICS},
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        """Block until it is ready and its index has no build running; its index's state."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the API at {self.url} exited; see {self._log.name}")
            try:
                with urllib.request.urlopen(f"{self.url}/health/ready", timeout=5) as r:
                    body: dict[str, Any] = json.load(r)
                if body["index"]["building_nlist"] is None:
                    return body["index"]  # type: ignore[no-any-return]
            except (OSError, KeyError):
                pass
            time.sleep(1)
        raise TimeoutError(f"the API at {self.url} was not ready in {timeout_s} s")

    def rss_mb(self) -> float:
        return rss_mb(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()


def load_generator() -> ProcessPoolExecutor:
    """The process the clients run in (one for every phase)."""
    # spawn: forking a process that runs the broker client's and the engine's threads is unsafe
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


def load(
    pool: ProcessPoolExecutor, urls: list[str], seconds: float, clients: int, explain: bool
) -> tuple[list[dict[str, Any]], float]:
    """`feeds` in the load generator's process: its records, and the CPU seconds it spent."""
    return pool.submit(run_feeds, urls, seconds, clients, explain).result()


def run_feeds(
    urls: list[str], seconds: float, clients: int, explain: bool
) -> tuple[list[dict[str, Any]], float]:
    cpu = time.process_time()
    records = asyncio.run(feeds(urls, seconds, clients, explain))
    return records, time.process_time() - cpu


async def feeds(
    urls: list[str], seconds: float, clients: int, explain: bool
) -> list[dict[str, Any]]:
    """Requests from `clients` keep-alive clients for `seconds`, client c to urls[c mod
    len(urls)]; one record per response."""
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
            async with http.get(f"{urls[c % len(urls)]}/v1/feed", params=params) as r:
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
    parser.add_argument("--replicas", type=int, default=2, help="feed API processes")
    parser.add_argument("--clients", type=int, default=0, help="default: 1 per API process")
    parser.add_argument(
        "--with-flows", action="store_true", help="`swipeloop up`: flows and API in one process"
    )
    args = parser.parse_args()
    items = args.items or (200_000 if args.quick else 1_000_000)
    replicas = 1 if args.with_flows else args.replicas
    clients = args.clients or replicas
    phase = 5.0 if args.quick else 30.0
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as tmp:
        settings = Settings(data_dir=Path(tmp) / "bench", seed_items=0)
        stack = Stack(settings, schedule_training=False, run_flows=False).start()
        apis: list[Api] = []
        try:
            preload_s = preload(stack.settings, items, settings.embedding_dim)
            model = ranking_model(stack.settings)
            learned_users(stack.settings, 2_000, settings.embedding_dim)
            t0 = time.perf_counter()
            swipeloop = str(Path(sys.executable).with_name("swipeloop"))
            if args.with_flows:
                command, env = [swipeloop, "up"], {}
            else:
                command = [swipeloop, "api", "--role", "feed"]
                env = {
                    "SWIPELOOP_KAFKA_BOOTSTRAP": stack.settings.kafka_bootstrap or "",
                    "SWIPELOOP_BROKER_EPOCH": stack.settings.broker_epoch,
                }
            for k in range(replicas):
                apis.append(Api(settings.data_dir, Path(tmp) / f"api{k}", command, env))
            index = [api.wait_ready(600) for api in apis][-1]
            bootstrap_s = time.perf_counter() - t0
            bootstrapped_mb = max(api.rss_mb() for api in apis)
            urls = [api.url for api in apis]
            pids = [api.process.pid for api in apis]
            assert stack.broker is not None, "the benchmark spawns its broker"
            broker = stack.broker.pid if not args.with_flows else spawned(pids[0])
            with load_generator() as pool:
                load(pool, urls, 1.0, clients, False)  # warm-up
                api_cpu, broker_cpu = sum(map(cpu_s, pids)), cpu_s(broker)
                plain, client_cpu = load(pool, urls, phase, clients, False)
                api_cpu = sum(map(cpu_s, pids)) - api_cpu
                broker_cpu = cpu_s(broker) - broker_cpu
                loaded_mb = max(api.rss_mb() for api in apis)
                peak_mb = max(rss_mb(api.process.pid, "VmHWM") for api in apis)
                explained, _ = load(pool, urls, phase / 2, clients, True)
            for api in apis:
                api.stop()
            state_mb = state_memory(stack.settings, items)
        finally:
            for api in apis:
                api.stop()
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
                "broker_cpu_ms_per_feed": round(1000 * broker_cpu / max(len(plain), 1), 2),
                "p50_ms": p(ms, 50),
                "p99_ms": p(ms, 99),
                "server_p99_ms": p([r["stages"]["feed"] for r in plain], 99),
                "stage_p99_ms": {s: p([r["stages"][s] for r in plain], 99) for s in STAGES},
                "wait_p99_ms": p([r["stages"]["wait"] for r in plain], 99),
                "p99_ms_explain": p([r["ms"] for r in explained], 99),
                "index": {k: v for k, v in index.items() if k in ("kind", "nlist", "vectors")},
                "api_rss_mb": round(loaded_mb),
                "replica_rss_mb": {
                    "bootstrapped": round(bootstrapped_mb),
                    "after_run": round(loaded_mb),
                    "peak": round(peak_mb),
                },
                "replica_rss_mb_per_100k_items": round(loaded_mb / (items / 100_000), 1),
                "replica_rss_mb_per_100k_items_bootstrapped": round(
                    bootstrapped_mb / (items / 100_000), 1
                ),
                "replica_state_mb": state_mb,
                "preload_s": round(preload_s, 1),
                "api_bootstrap_s": round(bootstrap_s, 1),
                "replicas": replicas,
                "clients": clients,
                "ann_oversample": settings.ann_oversample,
                "flows_in_process": args.with_flows,
                "seconds": round(time.perf_counter() - started, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
