"""Canary promotion on the running stack: a candidate ranks a sticky share of users' feeds
beside production; the judge waits for enough sessions, then drops a canary whose people
watch less and promotes one whose people watch as much or more, saying why; the command
line starts one and judges it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest
from typer.testing import CliRunner

from cli.app import app
from cli.stack import Stack
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
from tests.conftest import scalar, wait_until
from tests.support.models import trained
from training import canary, registry

pytestmark = pytest.mark.integration
USERS = 40


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    live = settings.with_(seed_items=400, canary_sessions=10, canary_margin=0.1)
    with Stack(live, schedule_training=False) as running:
        running.serve_in_thread()
        yield running


def session(api: httpx.Client, user: str, name: str, watch_ms: int) -> tuple[str, int]:
    """One page for `user`, every item watched `watch_ms`; the version that ranked it and the
    events sent."""
    page = api.get("/v1/feed", params={"user_id": user, "n": 4}).json()
    events = [
        {
            "event_id": str(uuid.uuid4()),
            "user_id": user,
            "item_id": item["item_id"],
            "kind": "watch",
            "watch_ms": watch_ms,
            "client_ts": datetime.now(UTC).isoformat(),
            "session_id": f"{name}-{user}",
            "seq": k,
            "request_id": page["request_id"],
        }
        for k, item in enumerate(page["items"])
    ]
    assert api.post("/v1/events", json={"events": events}).status_code == 202
    return str(page["model_version"]), len(events)


def run_sessions(stack: Stack, name: str, watch: dict[str, int]) -> dict[str, str]:
    """A session per user; the users of each version watch what `watch` says. Waits until
    every event is in ClickHouse; returns the version each user was served."""
    api = httpx.Client(base_url=stack.url, timeout=30)
    client = connect(stack.settings)
    before = scalar(client, "SELECT count() FROM events")
    served, sent = {}, 0
    for k in range(USERS):
        user = f"u{k}"
        version = str(api.get("/v1/feed", params={"user_id": user, "n": 1}).json()["model_version"])
        served[user], n = session(api, user, name, watch[version])
        assert served[user] == version  # sticky
        sent += n
    wait_until(
        lambda: scalar(client, "SELECT count() FROM events") == before + sent,
        60,
        f"the {name} sessions' events in ClickHouse",
    )
    return served


def test_a_canary_that_loses_is_dropped_and_one_that_holds_is_promoted(stack: Stack) -> None:
    s = stack.settings
    client = connect(s)
    api = httpx.Client(base_url=stack.url, timeout=30)
    wait_until(
        lambda: api.get("/v1/feed", params={"user_id": "probe", "n": 1}).json()["items"],
        30,
        "the seeded catalog in the feed",
    )
    v1, v2, v3 = (trained(client, seed) for seed in range(3))
    assert api.post(f"/admin/models/{v1}/promote").status_code == 200
    r = api.post(f"/admin/models/{v2}/canary", params={"share": 50})
    assert r.status_code == 200 and r.json()["production"] == v1, r.text
    waiting = api.post("/admin/models/canary/judge").json()
    assert waiting["state"] == "running" and waiting["reason"].startswith("waiting: 0 canary")

    served = run_sessions(stack, "one", {v1: 15_000, v2: 2_000})  # the canary's people leave
    assert set(served.values()) == {v1, v2}
    running = canary.running(client)
    assert running is not None
    assert all((v == v2) == canary.serves(running, u) for u, v in served.items())
    verdict = api.post("/admin/models/canary/judge").json()
    assert verdict["state"] == "dropped", verdict
    assert verdict["reason"].startswith("canary failed: below the bar by 46.0 s")
    assert "watch 8.0 s per session" in verdict["reason"]
    assert registry.production(client) == v1
    assert canary.listing(client)[-1].state == "dropped"
    page = api.get("/v1/feed", params={"user_id": "u0", "n": 1}).json()
    assert page["model_version"] == v1  # everyone on production again

    # the command line, beside the stack (direct to ClickHouse)
    env = {
        "SWIPELOOP_CLICKHOUSE_URL": s.clickhouse_url or "",
        "SWIPELOOP_CLICKHOUSE_DATABASE": s.clickhouse_database,
        "SWIPELOOP_DATA_DIR": str(s.data_dir / "cli"),
    }
    started = CliRunner().invoke(app, ["model", "canary", v3, "--share", "50"], env=env)
    assert started.exit_code == 0, started.output
    stack.services.feed.models.refresh()  # (rather than wait for its poll)
    run_sessions(stack, "two", {v1: 10_000, v3: 12_000})
    judged = CliRunner().invoke(
        app,
        ["model", "canary", "--judge"],
        env={**env, "SWIPELOOP_CANARY_SESSIONS": "10", "SWIPELOOP_CANARY_MARGIN": "0.1"},
    )
    assert judged.exit_code == 0, judged.output
    assert "promoted" in judged.output and "canary passed" in judged.output
    assert registry.production(client) == v3
    stack.services.feed.models.refresh()
    assert api.get("/v1/feed", params={"user_id": "u1", "n": 1}).json()["model_version"] == v3
    listed = CliRunner().invoke(app, ["model", "canary"], env=env)
    assert listed.exit_code == 0 and "dropped" in listed.output and "promoted" in listed.output
    assert api.post("/admin/models/canary/judge").status_code == 409  # none running
