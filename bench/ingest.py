"""Ingest benchmark: ack latency and throughput of POST /v1/events, then the ingest flow.

    python bench/ingest.py --quick      # < 60 s; prints one JSON object

1. single: one event per request at a fixed rate (open loop, default 2,000 req/s). Latency is
   measured from when each request was due, so a stalled server shows up in full (no
   coordinated omission).
   `broker_ack_*` is the same open loop straight into the API's producer class, in this
   process, with no HTTP: the floor that the broker round trip alone sets.
2. batch: batches of 100-500 events from a few keep-alive connections, as fast as acked.
3. tokens: the per-user token check's cost on the same API (issue 25): the light open loop and
   one-user batches with the admin key (`tokens_off_*`) and with each user's own token
   (`tokens_on_*`): single requests interleaved, batches in alternating phases (off, on, on,
   off, twice; medians); `tokens_batch_ratio` is on / off;
   `token_check_us_per_request` (first sight), `token_check_remembered_us_per_request` and
   `key_check_us_per_request` time the check alone.
4. flow: the ingest flow (one worker) reads everything the API acknowledged, plus
   `--flow-events` produced straight to the broker, into ClickHouse and exits when caught up
   (`--drain`); then every acked event_id is looked up: `false_acks` counts those missing.

The API runs as its own process (`swipeloop api --role ingest`, the stateless front door, as
in production) on the embedded broker;
the load generator is this script's own asyncio HTTP/1.1 client (raw keep-alive sockets on
uvloop), on the same 2 cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import msgspec
from prometheus_client import Counter

from dataflows.runner import run
from swipeloop.broker import EmbeddedBroker, free_port
from swipeloop.clickhouse import connect
from swipeloop.contracts import Event, stamp, topic_for
from swipeloop.kafka import AsyncProducer, durable_producer
from swipeloop.metrics import INGESTED_ROWS
from swipeloop.migrations import migrate
from swipeloop.settings import Settings
from swipeloop.tokens import Credentials, mint
from swipeloop.topics import ensure_topics

ADMIN_KEY = "bench-admin-key"  # acts for any user: what the load sends when tokens are off


def body(events: list[dict[str, Any]]) -> bytes:
    return json.dumps({"events": events}).encode()


def make_event(i: int) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": f"u{i % 5000}",
        "item_id": f"i{i % 20000}",
        "kind": "watch" if i % 5 else "like",
        "watch_ms": 4000,
        "client_ts": datetime.now(UTC).isoformat(),
        "session_id": f"s{i % 5000}",
        "seq": i // 5000,
    }


class Auth:
    """The Authorization header line each request carries: the admin key (which acts for any
    user), or, `per_user`, the token of the request's user (swipeloop.tokens.Credentials:
    minted once per user)."""

    def __init__(self, settings: Settings, per_user: bool) -> None:
        self._settings = settings.with_(admin_keys=ADMIN_KEY)
        self._credentials = Credentials(self._settings) if per_user else None

    def header(self, user_id: str) -> str:
        sent = (
            self._credentials.user(user_id)
            if self._credentials
            else self._settings.bearer("user")  # tokens on: the admin key
        )
        return f"Authorization: {sent['Authorization']}\r\n"


def request(port: int, payload: bytes, auth: str) -> bytes:
    head = (
        f"POST /v1/events HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
    )
    return head.encode() + payload


async def exchange(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes) -> int:
    """Send one request on a keep-alive connection; return the status code."""
    writer.write(raw)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    if length:
        await reader.readexactly(length)
    return status


async def open_loop(rate: float, total: int) -> AsyncIterator[tuple[int, float]]:
    """(i, due) for i in range(total), each yielded at its due time start + i / rate,
    whatever happened to the ones before (no coordinated omission)."""
    start = time.perf_counter()
    for i in range(total):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        yield i, due


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def single_ack(
    port: int, rate: int, seconds: float, conns: int, auth: Auth, other: Auth | None = None
) -> dict[str, Any]:
    """Open loop: request i is due at start + i/rate, whatever happened to the ones before.
    With `other`, odd requests carry its credential instead: `other_ack_p50_ms` and
    `other_ack_p99_ms` are theirs, the rest the even ones' (both sides at the same moments)."""
    total = int(rate * seconds)
    events = [make_event(i) for i in range(total)]
    arms = (auth, other or auth)
    raws = [
        request(port, body([e]), arms[i % 2].header(e["user_id"])) for i, e in enumerate(events)
    ]
    per_arm: tuple[list[float], list[float]] = ([], [])
    due_queue: asyncio.Queue[tuple[int, float]] = asyncio.Queue()
    latencies: list[float] = []
    service: list[float] = []
    acked: list[str] = []
    statuses: dict[int, int] = {}

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        while True:
            i, due = await due_queue.get()
            if i < 0:
                writer.close()
                return
            sent = time.perf_counter()
            status = await exchange(reader, writer, raws[i])
            done = time.perf_counter()
            latencies.append((done - due) * 1000)
            per_arm[i % 2 if other else 0].append((done - due) * 1000)
            service.append((done - sent) * 1000)
            statuses[status] = statuses.get(status, 0) + 1
            if status == 202:
                acked.append(events[i]["event_id"])

    workers = [asyncio.create_task(worker()) for _ in range(conns)]
    await asyncio.sleep(0.2)
    start = time.perf_counter()
    async for i, due in open_loop(rate, total):
        due_queue.put_nowait((i, due))
    for _ in workers:
        due_queue.put_nowait((-1, 0.0))
    await asyncio.gather(*workers)
    elapsed = time.perf_counter() - start
    if other is not None:
        return {
            "single_ack_p50_ms": round(percentile(per_arm[0], 0.50), 3),
            "single_ack_p99_ms": round(percentile(per_arm[0], 0.99), 3),
            "other_ack_p50_ms": round(percentile(per_arm[1], 0.50), 3),
            "other_ack_p99_ms": round(percentile(per_arm[1], 0.99), 3),
            "_acked": acked,
        }
    return {
        "single_ack_p50_ms": round(percentile(latencies, 0.50), 3),
        "single_ack_p99_ms": round(percentile(latencies, 0.99), 3),
        "single_ack_max_ms": round(max(latencies), 3),
        "single_service_p99_ms": round(percentile(service, 0.99), 3),
        "single_target_rps": rate,
        "single_achieved_rps": round(total / elapsed),
        "single_statuses": statuses,
        "_acked": acked,
    }


_EVENT = (
    b'{"event_id":"%s","user_id":"u%d","item_id":"i%d","kind":"watch","watch_ms":4000,'
    b'"client_ts":"%s","session_id":"s%d","seq":%d}'
)


def batch_pool(
    port: int, events: int, auth: Auth, one_user: bool = False
) -> list[tuple[list[str], bytes]]:
    """Requests of 100-500 distinct events each, `events` in all: (event ids, raw request).
    `one_user`: each request is one user's (as a phone with its token sends them)."""
    rng = random.Random(1)
    now = datetime.now(UTC).isoformat().encode()
    pool: list[tuple[list[str], bytes]] = []
    made = 0
    while made < events:
        size = rng.randint(100, 500)
        ids = [str(uuid.uuid4()) for _ in range(size)]
        user = len(pool) % 5000
        rows = [
            _EVENT
            % (
                ids[j].encode(),
                user if one_user else (made + j) % 5000,
                (made + j) % 20000,
                now,
                (made + j) % 5000,
                1_000 + (made + j) // 5000,
            )
            for j in range(size)
        ]
        raw = b'{"events":[' + b",".join(rows) + b"]}"
        pool.append((ids, request(port, raw, auth.header(f"u{user}"))))
        made += size
    return pool


async def batches(
    port: int, pool: list[tuple[list[str], bytes]], seconds: float, conns: int
) -> dict[str, Any]:
    """Closed loop: each connection posts a 100-500 event batch as soon as the last is acked."""
    acked: list[str] = []
    latencies: list[float] = []
    sent_events = 0
    stop_at = time.perf_counter() + seconds

    async def worker(k: int) -> None:
        nonlocal sent_events
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        i = k
        while time.perf_counter() < stop_at:
            if i >= len(pool):  # every batch is sent once: ids stay unique
                break
            ids, raw = pool[i]
            i += conns
            t0 = time.perf_counter()
            status = await exchange(reader, writer, raw)
            latencies.append((time.perf_counter() - t0) * 1000)
            if status == 202:
                acked.extend(ids)
                sent_events += len(ids)
        writer.close()

    start = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(conns)))
    elapsed = time.perf_counter() - start
    return {
        "batch_events_per_s": round(sent_events / elapsed),
        "batch_request_p50_ms": round(percentile(latencies, 0.5), 2),
        "batch_request_p99_ms": round(percentile(latencies, 0.99), 2),
        "batch_events_acked": sent_events,
        "_acked": acked,
    }


async def broker_ack(settings: Settings, rate: int, seconds: float) -> dict[str, Any]:
    """The single-event open loop without HTTP: produce, await the broker's ack."""
    producer = AsyncProducer(settings)
    await producer.produce_all([(topic_for("watch"), b"warm", b"{}")])
    latencies: list[float] = []

    async def one(i: int, due: float) -> None:
        value = msgspec.json.encode(make_event(i))
        await producer.produce_all([(topic_for("watch"), b"u%d" % (i % 5000), value)])
        latencies.append((time.perf_counter() - due) * 1000)

    tasks = [
        asyncio.create_task(one(i, due)) async for i, due in open_loop(rate, int(rate * seconds))
    ]
    await asyncio.gather(*tasks)
    producer.close()
    return {
        "broker_ack_p50_ms": round(percentile(latencies, 0.50), 3),
        "broker_ack_p99_ms": round(percentile(latencies, 0.99), 3),
    }


def start_api(
    settings: Settings, data_dir: Path, port: int, workers: int
) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SWIPELOOP_KAFKA_BOOTSTRAP": settings.kafka_bootstrap or "",
        "SWIPELOOP_BROKER_EPOCH": settings.broker_epoch,
        "SWIPELOOP_DATA_DIR": str(data_dir),
        "SWIPELOOP_SEED_ITEMS": "0",
        "SWIPELOOP_ADMIN_KEYS": ADMIN_KEY,
        "SWIPELOOP_JWT_SECRET": settings.jwt_secret,
        "SWIPELOOP_JWT_ISSUER": settings.jwt_issuer,
        "SWIPELOOP_JWT_AUDIENCE": settings.jwt_audience,
    }
    cli = [sys.executable, "-m", "cli.app"]
    subprocess.run([*cli, "migrate"], env=env, check=True, capture_output=True)
    proc = subprocess.Popen(
        [*cli, "api", "--port", str(port), "--role", "ingest", "--workers", str(workers)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/live", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the API did not start")


class CounterSampler(threading.Thread):
    """Watches a Prometheus counter: the rate from its first change to its last (a flow's
    steady rate, without its start-up or its final flush)."""

    def __init__(self, counter: Counter) -> None:
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.samples: list[tuple[float, float]] = []
        self._counter = counter
        self._base = self.value()

    def value(self) -> float:
        samples = (s for m in self._counter.collect() for s in m.samples)
        return sum(s.value for s in samples if s.name.endswith("_total"))

    def run(self) -> None:
        while not self.stop.wait(0.01):
            self.samples.append((time.perf_counter(), self.value()))

    def rate(self) -> int:
        moving = [(t, n) for t, n in self.samples if n > self._base]
        if len(moving) < 2:
            return 0
        t0, n0 = moving[0]
        n1 = moving[-1][1]
        t1 = next(t for t, n in moving if n == n1)  # the last change, not the end of sampling
        # from the first change to the last: n1 - n0 were counted in between
        return round((n1 - n0) / (t1 - t0)) if t1 > t0 else 0


def produce_direct(settings: Settings, count: int) -> None:
    """Events as the API would have stored them, straight onto the broker."""
    producer = durable_producer(
        settings, **{"linger.ms": 20, "queue.buffering.max.messages": 1_000_000}
    )
    now = datetime.now(UTC)
    for i in range(count):
        raw = make_event(20_000_000 + i)
        ev = stamp(msgspec.convert(raw, Event), now)
        producer.produce(topic_for(ev.kind), key=ev.user_id.encode(), value=msgspec.json.encode(ev))
        if i % 10_000 == 0:
            producer.poll(0)
    producer.flush(60)


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) of a process and its children so far."""
    tick = os.sysconf("SC_CLK_TCK")
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for each in [pid, *map(int, children)]:
        fields = Path(f"/proc/{each}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / tick


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class CpuMeter:
    """Where the CPU went during a phase: the API, the broker, this load generator."""

    def __init__(self, api_pid: int, broker_pid: int) -> None:
        self._pids = {"api": api_pid, "broker": broker_pid}
        self._start = {name: cpu_seconds(pid) for name, pid in self._pids.items()}
        self._own = own_cpu_seconds()

    def per(self, phase: str, unit: str, count: float) -> dict[str, float]:
        used = {name: cpu_seconds(pid) - self._start[name] for name, pid in self._pids.items()}
        used["loadgen"] = own_cpu_seconds() - self._own
        return {
            f"{phase}_{name}_cpu_us_per_{unit}": round(seconds / max(count, 1) * 1e6, 1)
            for name, seconds in used.items()
        }


def rss_peak_mb(pid: int) -> float:
    """Peak resident memory of a process and its children (the API's workers)."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    total = 0
    for each in [pid, *map(int, children)]:
        for line in Path(f"/proc/{each}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                total += int(line.split()[1])
    return round(total / 1024, 1)


def token_cost(
    port: int, settings: Settings, rate: int, seconds: float, conns: int, pids: tuple[int, int]
) -> tuple[dict[str, Any], list[str]]:
    """The per-user token check's price, on the same API process, against the admin key (tokens
    off: one constant-time compare); with tokens, each user's own token (HS256 verified, every
    event's user_id checked against it).

    - single: the light open loop with the two credentials interleaved request by request
      (both sides at the same moments);
    - batch: one-user batches, the two in alternating phases of `seconds` (off, on, on, off,
      twice: drift on a shared machine falls on both sides); medians over the four of each.
    """
    off, on = Auth(settings, per_user=False), Auth(settings, per_user=True)
    light = asyncio.run(single_ack(port, rate // 4, seconds * 2, conns=16, auth=off, other=on))
    acked: list[str] = light.pop("_acked")
    runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
    for tokens in (False, True, True, False) * 2:
        pool = batch_pool(port, int(150_000 * seconds), on if tokens else off, one_user=True)
        cpu = CpuMeter(*pids)
        batch = asyncio.run(batches(port, pool, seconds, conns=conns))
        batch.update(cpu.per("batch", "event", batch["batch_events_acked"]))
        acked += batch.pop("_acked")
        runs[tokens].append(batch)
    figures: dict[str, Any] = {
        "tokens_off_single_ack_p50_ms": light["single_ack_p50_ms"],
        "tokens_off_single_ack_p99_ms": light["single_ack_p99_ms"],
        "tokens_on_single_ack_p50_ms": light["other_ack_p50_ms"],
        "tokens_on_single_ack_p99_ms": light["other_ack_p99_ms"],
    }
    for tokens, label in ((False, "off"), (True, "on")):
        for name in ("batch_events_per_s", "batch_api_cpu_us_per_event"):
            figures[f"tokens_{label}_{name}"] = statistics.median(r[name] for r in runs[tokens])
        figures[f"tokens_{label}_batch_events_per_s_phases"] = [
            r["batch_events_per_s"] for r in runs[tokens]
        ]
    figures["tokens_batch_ratio"] = round(
        figures["tokens_on_batch_events_per_s"] / figures["tokens_off_batch_events_per_s"], 3
    )
    figures.update(check_cost(settings))
    return figures, acked


def check_cost(settings: Settings, n: int = 20_000) -> dict[str, float]:
    """What the API does per request to know its caller, timed alone: verify a user's token
    the first time (api.tokens: HS256 and the claims) and again (remembered: its expiry
    only), or compare a key (api.security.Keys.roles_of)."""
    from api.security import Keys

    keys = Keys(settings.with_(admin_keys=ADMIN_KEY))
    tokens = [mint(settings, f"u{i}") for i in range(n)]
    timed: list[float] = []
    for _ in range(2):  # first sight, then remembered
        started = time.perf_counter()
        for token in tokens:
            keys.tokens.subject_of(token)
        timed.append(time.perf_counter() - started)
    key = ADMIN_KEY.encode()
    started = time.perf_counter()
    for _ in range(n):
        keys.roles_of(key)
    compared = time.perf_counter() - started
    return {
        "token_check_us_per_request": round(timed[0] / n * 1e6, 1),
        "token_check_remembered_us_per_request": round(timed[1] / n * 1e6, 2),
        "key_check_us_per_request": round(compared / n * 1e6, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (< 60 s)")
    parser.add_argument("--rate", type=int, default=2000, help="single-event requests per second")
    parser.add_argument("--workers", type=int, default=2, help="API processes (--role ingest)")
    parser.add_argument("--batch-conns", type=int, default=4, help="connections posting batches")
    parser.add_argument(
        "--flow-events", type=int, default=100_000, help="extra events for the flow phase"
    )
    args = parser.parse_args()
    single_s, batch_s = (8.0, 4.0) if args.quick else (30.0, 20.0)
    if args.rate < 4:
        parser.error("--rate must be at least 4")

    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    tmp = Path(tempfile.mkdtemp(prefix="swipeloop-bench-"))
    with EmbeddedBroker(tmp / "broker.log") as broker:
        settings = Settings(
            kafka_bootstrap=broker.bootstrap,
            broker_epoch=broker.epoch,
            data_dir=tmp / "flow",
            seed_items=0,
            topic_partitions=3,
            jwt_secret="bench-ingest-secret-of-32-bytes-or-more",
            jwt_issuer="https://login.bench",
            jwt_audience="swipeloop",
        )
        ensure_topics(settings)
        port = free_port()
        api = start_api(settings, tmp / "api", port, args.workers)
        try:
            key = Auth(settings, per_user=False)
            # warm-up: connections, metadata
            asyncio.run(single_ack(port, 100, 2, conns=16, auth=key))
            # The same open loop at a quarter of the rate: ack latency when not saturated.
            light = asyncio.run(single_ack(port, args.rate // 4, single_s / 2, conns=16, auth=key))
            floor = asyncio.run(broker_ack(settings, args.rate, single_s / 2))
            cpu = CpuMeter(api.pid, broker.pid)
            single = asyncio.run(single_ack(port, args.rate, single_s, conns=64, auth=key))
            single.update(cpu.per("single", "request", args.rate * single_s))
            pool = batch_pool(port, int(150_000 * batch_s), key)
            cpu = CpuMeter(api.pid, broker.pid)
            batch = asyncio.run(batches(port, pool, batch_s, conns=args.batch_conns))
            del pool  # a million request bodies: not to be carried into the flow phase
            batch.update(cpu.per("batch", "event", batch["batch_events_acked"]))
            tokens, token_acked = token_cost(
                port, settings, args.rate, batch_s / 4, args.batch_conns, (api.pid, broker.pid)
            )
            api_rss = rss_peak_mb(api.pid)
        finally:
            api.terminate()
            api.wait(10)

        produce_direct(settings, args.flow_events)
        client = connect(settings)
        migrate(client)
        sampler = CounterSampler(INGESTED_ROWS)
        sampler.start()
        started = time.perf_counter()
        run("ingest", settings, in_thread=True, drain=True)
        flow_s = time.perf_counter() - started
        sampler.stop.set()
        sampler.join()
        stored = int(str(client.command("SELECT count() FROM events")))
        ids = {str(r[0]) for r in client.query("SELECT event_id FROM events").result_rows}

    acked = set(single.pop("_acked")) | set(batch.pop("_acked")) | set(light.pop("_acked"))
    acked |= set(token_acked)
    figures = {
        **{k.replace("single_", "light_"): v for k, v in light.items()},
        **single,
        **floor,
        **batch,
        **tokens,
        "flow_events": stored,
        "flow_seconds": round(flow_s, 2),
        "flow_events_per_s_with_startup": round(stored / flow_s),
        "flow_events_per_s_per_worker": sampler.rate(),
        "acked_events": len(acked),
        "false_acks": len(acked - ids),
        "duplicates": stored - len(ids),
        "api_rss_peak_mb": api_rss,
        "bench_rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "load_generator": "bench/ingest.py asyncio raw HTTP/1.1 keep-alive client on uvloop",
        "cpu_count": os.cpu_count(),
    }
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
