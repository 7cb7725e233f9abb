"""Scale-out benchmark: a flow as one process, and as a Bytewax cluster of two, on the same events.

    python bench/scale.py --quick      # < 90 s; prints one JSON object

For each flow (features, embeddings) and each shape (1 process of 1 worker; 2 processes of 1
worker on 127.0.0.1), a fresh embedded broker gets the 10,000-item catalog and the same
`--events` events (bench.features' generator, same seed), then `swipeloop flows run FLOW`
runs in each process of the shape, each on its own chdb path (chdb opens a path from one
process only; a ClickHouse server would be shared). Throughput is counted from the flow's
own counter (`swipeloop_feature_events_total` / `swipeloop_embedding_events_total`, read
from every process's /metrics), from its first counted event to the last: process start-up
is not in it. The broker, the processes and this script share the machine's cores.

`replica_rss_mb_per_100k_items` is the resident memory a feed replica's serving state takes
(bench.feed's `state_memory`: bootstrapped from ClickHouse, index built) over `--items` items
with vectors, per 100,000 items; `replica_state_mb_per_100k_items` what its parts hold.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.features import produce_events, produce_items
from swipeloop import topics
from swipeloop.broker import EmbeddedBroker, free_port
from swipeloop.settings import Settings
from swipeloop.waiting import wait_for

COUNTERS = {
    "features": "swipeloop_feature_events_total",
    "embeddings": "swipeloop_embedding_events_total",
}


def counted(ports: list[int], counter: str) -> float:
    """The counter summed over every process's /metrics (0 where one does not answer yet)."""
    total = 0.0
    for port in ports:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as page:
                text = page.read().decode()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith(counter + " "):
                total += float(line.split()[1])
    return total


def cluster_envs(
    live: Settings, root: Path, processes: int
) -> tuple[list[dict[str, str]], list[int]]:
    """Each process's environment (own data dir and chdb path) and its metrics port."""
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    ports = [free_port() for _ in range(processes)]
    envs = []
    for i, port in enumerate(ports):
        envs.append(
            {
                **os.environ,
                "SWIPELOOP_KAFKA_BOOTSTRAP": live.kafka_bootstrap or "",
                "SWIPELOOP_BROKER_EPOCH": live.broker_epoch,
                "SWIPELOOP_DATA_DIR": str(root / f"p{i}"),
                "SWIPELOOP_CLICKHOUSE_URL": f"chdb://{root / f'p{i}' / 'clickhouse'}",
                "SWIPELOOP_METRICS_PORT": str(port),
                "SWIPELOOP_FLOW_PROCESSES": str(processes),
                "SWIPELOOP_FLOW_PROCESS_ID": str(i),
                "SWIPELOOP_FLOW_ADDRESSES": addresses,
                "SWIPELOOP_EMBEDDING_DIM": "32",
            }
        )
    return envs, ports


def swipeloop(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as err:
        return subprocess.Popen(
            [sys.executable, "-m", "cli.app", *args], env=env, stdout=subprocess.DEVNULL, stderr=err
        )


def measure(flow: str, processes: int, events: int, tmp: Path) -> dict[str, Any]:
    """Events/s of `flow` as `processes` processes over `events` events on a fresh broker."""
    root = tmp / f"{flow}-{processes}"
    root.mkdir()
    with EmbeddedBroker(root / "broker.log") as broker:
        live = Settings(
            kafka_bootstrap=broker.bootstrap, broker_epoch=broker.epoch, topic_partitions=4
        )
        topics.ensure_topics(live)
        produce_items(live, 10_000, random.Random(1))
        produce_events(live, events, 10_000, 0.0, random.Random(2))
        envs, ports = cluster_envs(live, root, processes)
        for env in envs:
            migrated = swipeloop(env, "migrate", log=root / "migrate.log")
            assert migrated.wait(120) == 0, (root / "migrate.log").read_text()[-2000:]
        running = [
            swipeloop(env, "flows", "run", flow, log=root / f"p{i}.log")
            for i, env in enumerate(envs)
        ]
        samples: list[tuple[float, float]] = []

        def done() -> bool:
            for process in running:
                if process.poll() is not None:
                    raise RuntimeError(f"{flow} exited: {(root / 'p0.log').read_text()[-2000:]}")
            samples.append((time.perf_counter(), counted(ports, COUNTERS[flow])))
            return samples[-1][1] >= events

        try:
            if not wait_for(done, 300, every_s=0.05):
                raise RuntimeError(f"{flow} x{processes}: {samples[-1][1]:.0f} of {events} counted")
        finally:
            for process in running:
                process.kill()
                process.wait()
        first = next(t for t, n in samples if n > 0)
        before = max((t for t, n in samples if n == 0), default=first)
        seconds = samples[-1][0] - (first + before) / 2  # (the first count fell between polls)
    return {
        "events_per_s": round(events / seconds),
        "seconds": round(seconds, 2),
    }


def replica_memory(items: int, tmp: Path) -> dict[str, float]:
    """A feed replica's serving state over `items` items with vectors, per 100,000 items: the
    resident growth of bootstrapping it, and what its parts hold (bench.feed's measure)."""
    from bench.e2e import preload
    from bench.feed import state_memory
    from cli.stack import Stack

    settings = Settings(data_dir=tmp / "replica", seed_items=0, metrics_port=0)
    stack = Stack(settings, schedule_training=False, run_flows=False).start()
    try:
        preload(stack.settings, items, settings.embedding_dim)
        state = state_memory(stack.settings, items)
    finally:
        stack.stop()
    per_100k = items / 100_000
    return {
        "replica_rss_mb_per_100k_items": round(state["rss_growth"] / per_100k, 1),
        "replica_state_mb_per_100k_items": state["total_per_100k_items"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer events (< 90 s in all)")
    parser.add_argument("--events", type=int, default=None)
    parser.add_argument("--items", type=int, default=100_000, help="replica memory: items")
    args = parser.parse_args()
    events = args.events or (300_000 if args.quick else 1_500_000)
    out: dict[str, Any] = {"events": events, "cores": os.cpu_count()}
    with tempfile.TemporaryDirectory(prefix="swipeloop-scale-") as tmp:
        for flow, single in (("features", "1_process"), ("embeddings", "1_worker")):
            one = measure(flow, 1, events, Path(tmp))
            two = measure(flow, 2, events, Path(tmp))
            out[f"{flow}_seconds"] = [one["seconds"], two["seconds"]]
            out[f"{flow}_events_per_s_{single}"] = one["events_per_s"]
            out[f"{flow}_events_per_s_2_processes"] = two["events_per_s"]
            out[f"{flow}_scaling_ratio"] = round(two["events_per_s"] / one["events_per_s"], 2)
        out.update(replica_memory(args.items, Path(tmp)))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
