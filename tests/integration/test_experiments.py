"""Online experiments on the running stack: users split between feed policies by a hash,
sticky; every impression says which experiment and arm; the named query compares the arms
with intervals and p-values; a stop gives everyone the real-time feed again; bad arms are
refused with what is wrong, from the admin route and from the command line."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from api.experiments import Arm, assign
from cli.app import app
from cli.stack import Stack
from swipeloop import analysis
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
from tests.conftest import scalar, wait_until

pytestmark = pytest.mark.integration
USERS = 40
ARMS = [Arm("realtime", 50), Arm("batch", 50)]


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    with Stack(settings.with_(seed_items=400), schedule_training=False) as running:
        running.serve_in_thread()
        yield running


def swipes(user: str, page: dict[str, Any]) -> list[dict[str, Any]]:
    """What a phone sends for a page: the first item watched to the end and liked, the
    others skipped early."""
    out: list[dict[str, Any]] = []
    for k, item in enumerate(page["items"]):
        kinds = [("watch", 15_000), ("like", 0)] if k == 0 else [("skip", 500)]
        for kind, watch_ms in kinds:
            out.append(
                {
                    "event_id": str(uuid.uuid4()),
                    "user_id": user,
                    "item_id": item["item_id"],
                    "kind": kind,
                    "watch_ms": watch_ms,
                    "client_ts": datetime.now(UTC).isoformat(),
                    "session_id": f"s-{user}",
                    "seq": len(out),
                    "request_id": page["request_id"],
                }
            )
    return out


def test_an_experiment_splits_users_logs_arms_and_compares_them(stack: Stack) -> None:
    api = httpx.Client(base_url=stack.url, timeout=30)
    wait_until(
        lambda: api.get("/v1/feed", params={"user_id": "probe", "n": 1}).json()["items"],
        30,
        "the seeded catalog in the feed",
    )
    bad = api.post("/admin/experiments", json={"name": "e1", "arms": "realtime:60,batch:30"})
    assert bad.status_code == 422 and "add up to 100" in bad.json()["detail"], bad.text
    r = api.post("/admin/experiments", json={"name": "e1", "arms": "realtime:50,batch:50"})
    assert r.status_code == 201, r.text
    again = api.post("/admin/experiments", json={"name": "e2", "arms": "realtime:50,random:50"})
    assert again.status_code == 409 and "'e1' is running" in again.json()["detail"]

    users = [f"u{k}" for k in range(USERS)]
    arms = {u: assign("e1", u, ARMS) for u in users}
    assert set(arms.values()) == {"realtime", "batch"}  # both arms get users
    events = []
    for user in users:
        for _ in range(2):  # sticky: the same arm page after page
            page = api.get("/v1/feed", params={"user_id": user, "n": 5}).json()
            sources = {i["source"] for i in page["items"]}
            assert (sources == {"batch"}) == (arms[user] == "batch"), (user, sources)
            events += swipes(user, page)
    for at in range(0, len(events), 500):
        assert api.post("/v1/events", json={"events": events[at : at + 500]}).status_code == 202
    # an explicit policy is outside the experiment
    assert api.get("/v1/feed", params={"user_id": "u0", "n": 2, "policy": "random"}).is_success

    client = connect(stack.settings)
    wait_until(
        lambda: (
            scalar(client, "SELECT count() FROM impressions WHERE experiment = 'e1'")
            == USERS * 2 * 5
            and scalar(client, "SELECT count() FROM events WHERE user_id LIKE 'u%'") == len(events)
        ),
        60,
        "the experiment's impressions and the swipes in ClickHouse",
    )
    logged = client.query(
        "SELECT user_id, groupUniqArray(arm) FROM impressions WHERE experiment = 'e1' "
        "GROUP BY user_id"
    ).result_rows
    assert {u: a for u, (a,) in ((u, arms) for u, arms in logged)} == arms

    columns, rows = analysis.run(client, analysis.load("experiment_arms"), {"experiment": "e1"})
    table = [dict(zip(columns, row, strict=True)) for row in rows]
    assert [t["arm"] for t in table] == ["realtime", "batch"]  # the control first
    for t in table:
        mine = sum(1 for a in arms.values() if a == t["arm"])
        assert t["users"] == mine and t["sessions"] == mine
        assert t["impressions"] == mine * 2 * 5
        assert t["watch_s_per_session"] == pytest.approx(2 * 15.0 + 8 * 0.5, abs=0.01)
        assert t["early_skip_rate"] == pytest.approx(0.8)
        assert t["likes_per_impression"] == pytest.approx(0.2)
    assert table[0]["watch_p_value"] is None and table[0]["likes_p_value"] is None
    assert table[1]["likes_p_value"] == pytest.approx(1.0)  # the same behaviour in both arms

    stopped = api.post("/admin/experiments/e1/stop")
    assert stopped.status_code == 200 and stopped.json()["stopped_at"]
    batch_user = next(u for u, a in arms.items() if a == "batch")
    page = api.get("/v1/feed", params={"user_id": batch_user, "n": 5}).json()
    assert "batch" not in {i["source"] for i in page["items"]}  # the real-time feed again
    assert api.post("/admin/experiments/nope/stop").status_code == 404

    # the command line, beside the stack (direct to ClickHouse)
    s = stack.settings
    env = {
        "SWIPELOOP_CLICKHOUSE_URL": s.clickhouse_url or "",
        "SWIPELOOP_CLICKHOUSE_DATABASE": s.clickhouse_database,
        "SWIPELOOP_DATA_DIR": str(s.data_dir / "cli"),
    }
    listed = CliRunner().invoke(app, ["experiment", "list"], env=env)
    assert listed.exit_code == 0 and "e1" in listed.output and "realtime:50" in listed.output
    started = CliRunner().invoke(
        app, ["experiment", "start", "e2", "--arms", "realtime:90,random:10"], env=env
    )
    assert started.exit_code == 0, started.output
    wrong = CliRunner().invoke(app, ["experiment", "start", "e3", "--arms", "realtime:90,fast:10"])
    assert wrong.exit_code == 2 and "the policy is one of" in " ".join(wrong.output.split())
    assert CliRunner().invoke(app, ["experiment", "stop", "e2"], env=env).exit_code == 0
