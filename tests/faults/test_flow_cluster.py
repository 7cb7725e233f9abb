"""A flow as a two-process Bytewax cluster, one process killed -9 mid-stream and the cluster
restarted, ends with the tables of one process that was never interrupted.

Each process writes its own chdb path (tests.support.flow_cluster says why and what that
proves); the cluster's tables are the union of its processes'.
"""

from __future__ import annotations

import random
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from swipeloop.settings import Settings
from tests.conftest import drain, json_of, produce, role_env, swipeloop_process
from tests.support import feature_stream
from tests.support.flow_cluster import cluster_envs, drain_cluster, start_cluster, stop_all
from tests.support.flow_processes import kill_9

pytestmark = [pytest.mark.integration, pytest.mark.faults]

_READ_EVENTS = """
import json
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
client = connect(Settings.from_env())
out = {}
for table, key in (("events", "toString(event_id)"), ("items", "item_id")):
    out[table] = [r[0] for r in client.query(f"SELECT {key} FROM {table}").result_rows]
print(json.dumps(out))
"""


def _union(envs: list[dict[str, str]], code: str) -> dict[str, Any]:
    """Each table's rows from every process's database, together, sorted."""
    parts = [json_of(code, env) for env in envs]
    out: dict[str, Any] = {}
    for table in parts[0]:
        values = [part[table] for part in parts]
        if isinstance(values[0], list):
            out[table] = sorted((row for v in values for row in v), key=repr)
        else:
            out[table] = sum(values)
    return out


def _keys(row: list[Any]) -> str:
    return repr([v for v in row if not isinstance(v, float)])


def _killed_mid_stream(
    live: Settings,
    flow: str,
    envs: list[dict[str, str]],
    chunks: list[list[Any]],
    rng: random.Random,
) -> list[int]:
    """Each chunk produced while the cluster runs; one process, chosen at random, killed -9
    at a random moment; the other exits by itself (its peer is gone) or is killed too; then
    the cluster starts again from its snapshots. The processes that wrote each round."""
    writers = []
    for chunk in chunks:
        processes = start_cluster(flow, envs)
        produce(live, [], chunk)
        time.sleep(rng.uniform(0.3, 1.5))  # the scenario: killed at a random point of the chunk
        victim = rng.randrange(len(processes))
        kill_9(processes[victim])
        stop_all([p for i, p in enumerate(processes) if i != victim], timeout_s=30)
        writers.append(victim)
    return writers


@pytest.mark.parametrize("flow", ["ingest", "features"])
def test_a_cluster_killed_mid_stream_ends_with_the_tables_of_one_calm_process(
    live: Settings, tmp_path: Path, flow: str
) -> None:
    rng = random.Random(23)
    lateness = str(feature_stream.LATENESS)
    events, _ = feature_stream.stream(rng, 24_000)
    items = feature_stream.catalog(rng)
    calm = role_env(live, tmp_path / "calm" / "data", "calm", feature_lateness_s=lateness)
    envs = cluster_envs(live, tmp_path, "killed", feature_lateness_s=lateness)
    for env in (calm, *envs):
        assert swipeloop_process("migrate", env=env).wait(60) == 0
    chunks = [events[i : i + 3_000] for i in range(0, len(events), 3_000)]
    produce(live, items, chunks[0])
    _killed_mid_stream(live, flow, envs, chunks[1:4], rng)
    for chunk in chunks[4:]:
        produce(live, [], chunk)
    drain_cluster(flow, envs)
    drain(flow, calm)

    read = _READ_EVENTS if flow == "ingest" else feature_stream.READ_TABLES
    expected, got = json_of(read, calm), _union(envs, read)
    per_process = [json_of(read, env) for env in envs]
    if flow == "ingest":
        assert len(expected["events"]) == len(events)
        assert Counter(got["events"]) == Counter(expected["events"])  # each once, none lost
        assert sorted(got["items"]) == sorted(expected["items"])
        assert all(part["events"] for part in per_process), "every process stored a share"
        return
    assert len(expected["item_features"]) > 500 and expected["late_events"] > 0
    assert got["late_events"] == expected["late_events"]
    for table in ("item_features", "creator_features", "user_features", "user_affinity"):
        mine, theirs = sorted(got[table], key=_keys), sorted(expected[table], key=_keys)
        assert len(mine) == len(theirs), table
        for row, calm_row in zip(mine, theirs, strict=True):
            keys = [v for v in calm_row if not isinstance(v, float)]
            assert [v for v in row if not isinstance(v, float)] == keys, table
            values = [v for v in calm_row if isinstance(v, float)]
            assert [v for v in row if isinstance(v, float)] == pytest.approx(values, abs=1e-9)
    shares = {t: [len(part[t]) for part in per_process] for t in ("item_features", "user_features")}
    assert all(all(counts) for counts in shares.values()), f"every process stored a share: {shares}"
