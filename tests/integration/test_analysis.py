"""Analysis on what the simulator made: every named query (from `swipeloop sql` directly, and
through the running stack's admin API) and every Grafana panel's ClickHouse query, with the
panel macros expanded, runs on the embedded engine and returns rows; every Prometheus panel
reads metrics the processes export."""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from cli.app import app
from cli.stack import RUNNING, Stack
from sim.simulator import simulate
from sim.world import World, one_burst
from swipeloop import analysis, topics
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
from swipeloop.tokens import Credentials
from swipeloop.waiting import wait_for
from tests.conftest import isolated, scalar
from tests.support.auth import TOKENS
from training.ranker import train

# parameters whose defaults are too wide for a short run
GIVEN = {"top_rising_creators": {"min_plays": "1"}, "experiment_arms": {"experiment": "sim-exp"}}


def under_experiment(stack: Stack) -> None:
    """A short experiment after the simulation: 20 people's feeds under it, each page's first
    item watched."""
    api = httpx.Client(base_url=stack.url, timeout=30)  # admin routes: loopback, no keys set
    people = Credentials(stack.settings)
    r = api.post("/admin/experiments", json={"name": "sim-exp", "arms": "realtime:50,batch:50"})
    assert r.status_code == 201, r.text
    events = []
    for k in range(20):
        mine = people.user(f"exp-{k}")
        page = api.get("/v1/feed", params={"user_id": f"exp-{k}", "n": 5}, headers=mine).json()
        first = page["items"][0]["item_id"]
        events.append(
            {
                "event_id": str(uuid.uuid4()),
                "user_id": f"exp-{k}",
                "item_id": first,
                "kind": "watch",
                "watch_ms": 9_000,
                "client_ts": datetime.now(UTC).isoformat(),
                "session_id": f"exp-{k}",
                "seq": 0,
                "request_id": page["request_id"],
            }
        )
        sent = api.post("/v1/events", json={"events": events[-1:]}, headers=mine)
        assert sent.status_code == 202, sent.text
    assert api.post("/admin/experiments/sim-exp/stop").status_code == 200
    client = connect(stack.settings)
    assert wait_for(
        lambda: (
            scalar(client, "SELECT count() FROM events WHERE user_id LIKE 'exp-%'") == 20
            and scalar(client, "SELECT count() FROM impressions WHERE experiment = 'sim-exp'")
            == 100
        ),
        60,
    )


@pytest.fixture(scope="module")
def simulated(chdb_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """An embedded stack after 20 s of simulated people on every policy arm, with two
    poison messages in the DLQ; yields its settings while its API still runs."""
    settings = isolated(  # with tokens on: each simulated person sends their own
        chdb_path,
        tmp_path_factory.mktemp("analysis"),
        metrics_port=0,
        **TOKENS,
    )
    world = World.create(3, users=40, videos=300, bursts=one_burst(3, 10, 5))
    with Stack(settings, schedule_training=False) as stack:
        stack.serve_in_thread()

        async def nightly() -> None:  # once the warm-up's impressions are in ClickHouse
            client = connect(stack.settings)
            counts = [-1, 0]
            while counts[-1] != counts[-2]:  # polled until a second adds none
                await asyncio.sleep(1.0)
                counts.append(scalar(client, "SELECT count() FROM impressions"))
            await asyncio.to_thread(train, client, stack.settings, lambda _line: None)
            stack.services.feed.models.refresh()

        people = Credentials(stack.settings)
        assert people.per_user
        asyncio.run(
            simulate(stack.url, world, 15, 8, nightly, concurrency=8, seed=3, credentials=people)
        )
        under_experiment(stack)
        producer = Producer({"bootstrap.servers": stack.settings.kafka_bootstrap})
        for poison in (b"\x00\xffnot json", b'{"event_id": 7}'):
            producer.produce(topics.EVENTS_ACTIONS, value=poison)
        assert producer.flush(10) == 0
        client = connect(stack.settings)
        assert wait_for(lambda: scalar(client, "SELECT count() FROM dlq") >= 2, 60)
        yield stack.settings


def test_every_named_query_runs_on_simulated_data_and_returns_rows(simulated: Settings) -> None:
    client = connect(simulated)
    queries = analysis.catalogue()
    assert {
        "daily_engagement",
        "retention_by_cohort",
        "top_rising_creators",
        "new_video_exposure",
        "model_comparison",
        "dlq_reasons",
        "context_completion",
    } <= set(queries)
    for name, query in queries.items():
        columns, rows = analysis.run(client, query, GIVEN.get(name, {}))
        assert columns and rows, name
    _, arms = analysis.run(client, queries["model_comparison"], {})
    assert {"realtime", "batch", "popularity", "random"} <= {row[1] for row in arms}
    _, funnel = analysis.run(client, queries["new_video_exposure"], {})
    steps = {row[0]: row[1] for row in funnel}
    assert steps["1 uploaded"] >= steps["2 shown"] >= steps["3 played"] > 0
    columns, by_context = analysis.run(client, queries["context_completion"], {})
    networks = {row[columns.index("network")] for row in by_context}
    assert networks == {"wifi", "cellular"}  # the simulated phones (sim.world.NETWORKS)


def test_swipeloop_sql_prints_json_csv_and_refuses_bad_parameters(simulated: Settings) -> None:
    env = {
        "SWIPELOOP_CLICKHOUSE_URL": simulated.clickhouse_url or "",
        "SWIPELOOP_CLICKHOUSE_DATABASE": simulated.clickhouse_database,
        "SWIPELOOP_DATA_DIR": str(simulated.data_dir / "elsewhere"),  # (no running stack)
    }
    runner = CliRunner()
    days = runner.invoke(app, ["sql", "daily_engagement", "-p", "days=2", "-f", "json"], env=env)
    assert days.exit_code == 0, days.output
    (today,) = json.loads(days.stdout)
    assert today["people"] > 0 and today["plays"] > 0
    csv = runner.invoke(app, ["sql", "dlq_reasons", "--format", "csv"], env=env)
    assert csv.exit_code == 0 and csv.stdout.splitlines()[0].startswith("topic,problem,field")
    bad = runner.invoke(app, ["sql", "daily_engagement", "-p", "days=-1"], env=env)
    assert bad.exit_code == 2 and "days='-1' is not a UInt32" in bad.output
    unknown = runner.invoke(app, ["sql", "no_such_query"], env=env)
    assert unknown.exit_code == 2 and "daily_engagement" in unknown.output
    listed = runner.invoke(app, ["sql", "--list"], env=env)
    assert listed.exit_code == 0 and "retention_by_cohort" in listed.stdout


def test_beside_a_running_stack_swipeloop_sql_asks_it(simulated: Settings) -> None:
    url = f"http://127.0.0.1:{simulated.api_port}"
    marker = simulated.data_dir / RUNNING  # as `swipeloop up` advertises itself
    marker.write_text(json.dumps({"url": url, "pid": os.getpid()}))
    try:
        env = {"SWIPELOOP_DATA_DIR": str(simulated.data_dir)}  # (the engine is not reachable)
        asked = CliRunner().invoke(app, ["sql", "retention_by_cohort", "-f", "json"], env=env)
        assert asked.exit_code == 0, asked.output
        assert json.loads(asked.stdout)[0]["people"] > 0
    finally:
        marker.unlink()
    bad = httpx.get(f"{url}/admin/sql/top_rising_creators", params={"top": "many"})
    assert bad.status_code == 400 and "top='many' is not a UInt32" in bad.json()["detail"]
    assert httpx.get(f"{url}/admin/sql/x").status_code == 400


ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = sorted((ROOT / "grafana" / "dashboards").glob("*.json"))


def expand(sql: str, start: datetime, end: datetime, interval_s: int = 10) -> str:
    """The Grafana ClickHouse plugin's macros, as it expands them for a time range."""
    since, until = int(start.timestamp()), int(end.timestamp())
    macros = {
        r"\$__timeFilter\(([^)]+)\)": rf"\1 >= toDateTime({since}) AND \1 <= toDateTime({until})",
        r"\$__timeInterval\(([^)]+)\)": rf"toStartOfInterval(\1, INTERVAL {interval_s} second)",
        r"\$__fromTime\b": f"toDateTime({since})",
        r"\$__toTime\b": f"toDateTime({until})",
        r"\$__interval_s\b": str(interval_s),
    }
    for pattern, replacement in macros.items():
        sql = re.sub(pattern, replacement, sql)
    assert "$__" not in sql, f"a macro this test does not expand: {sql}"
    return sql


def panels() -> list[tuple[str, dict[str, Any]]]:
    return [
        (path.stem, panel)
        for path in DASHBOARDS
        for panel in json.loads(path.read_text())["panels"]
    ]


def test_every_clickhouse_panel_returns_rows_on_simulated_data(simulated: Settings) -> None:
    client = connect(simulated)
    now = datetime.now(UTC)
    checked = 0
    for board, panel in panels():
        for target in panel["targets"]:
            if target["datasource"]["uid"] != "clickhouse":
                continue
            sql = expand(target["rawSql"], now - timedelta(hours=1), now + timedelta(minutes=1))
            rows = client.query(sql).result_rows
            assert rows, f"{board}: {panel['title']!r} returned no rows"
            checked += 1
    assert checked >= 15


def test_every_prometheus_panel_reads_exported_metrics(simulated: Settings) -> None:
    # the stack's API and flows share this process's registry: /metrics holds them all
    exported = httpx.get(f"http://127.0.0.1:{simulated.api_port}/metrics").text
    names = {line.split("{")[0].split(" ")[0] for line in exported.splitlines() if line[:1] != "#"}
    for board, panel in panels():
        for target in panel["targets"]:
            if target["datasource"]["uid"] != "prometheus":
                continue
            for metric in re.findall(r"swipeloop_\w+", target["expr"]):
                assert metric in names, f"{board}: {panel['title']!r} reads {metric}"


def test_dashboards_are_valid_models_with_known_datasources() -> None:
    provisioned = set()
    for path in (ROOT / "grafana" / "provisioning" / "datasources").glob("*.yaml"):
        provisioned |= set(re.findall(r"^\s+uid:\s*(\S+)", path.read_text(), re.MULTILINE))
    assert provisioned == {"clickhouse", "prometheus"}
    boards = [json.loads(path.read_text()) for path in DASHBOARDS]
    assert {b["title"].split(" / ")[1] for b in boards} >= {
        "Ingest",
        "Freshness",
        "Feed",
        "Engagement",
        "Model",
    }
    assert len({b["uid"] for b in boards}) == len(boards)
    for board in boards:
        ids = [p["id"] for p in board["panels"]]
        assert len(ids) == len(set(ids)), board["uid"]
        for panel in board["panels"]:
            assert panel["datasource"]["uid"] in provisioned
            assert panel["targets"] and all(
                t["datasource"]["uid"] in provisioned for t in panel["targets"]
            )
            grid = panel["gridPos"]
            assert grid["x"] + grid["w"] <= 24 and grid["h"] > 0
            assert panel["type"] in {"timeseries", "table", "stat"}
