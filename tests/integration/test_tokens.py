"""Per-user tokens against a running stack: a token opens events and feeds for its own user
only, a batch with anyone else's event is refused whole and nothing of it reaches the broker,
keys keep the server routes, and a person can erase themselves."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import jwt
import pytest
from confluent_kafka import Consumer

from cli.stack import Stack
from swipeloop import topics
from swipeloop.kafka import client_config
from swipeloop.tokens import mint
from tests.conftest import isolated
from tests.support.auth import TOKENS, bearer
from tests.support.ingest_events import api_event

pytestmark = pytest.mark.integration

APP, ADMIN = "tokens-app-key", "tokens-admin-key"
SECRET, ISSUER = TOKENS["jwt_secret"], TOKENS["jwt_issuer"]


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, chdb_path: Path) -> Iterator[Stack]:
    settings = isolated(
        chdb_path,
        tmp_path_factory.mktemp("tokens"),
        seed_items=50,
        app_keys=APP,
        admin_keys=ADMIN,
        **TOKENS,
    )
    with Stack(settings, schedule_training=False, run_flows=False) as stack:
        stack.serve_in_thread()
        yield stack


@pytest.fixture
def http(running: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=running.url, timeout=30) as client:
        yield client


def token(running: Stack, user: str) -> dict[str, str]:
    return bearer(mint(running.settings, user))


def event_ids_on_the_broker(running: Stack, until: str) -> set[str]:
    """Every event id the actions and context topics hold, read up to the event `until`."""
    consumer = Consumer(
        client_config(
            running.settings.kafka_bootstrap,
            **{"group.id": f"check-{uuid.uuid4()}", "auto.offset.reset": "earliest"},
        )
    )
    consumer.subscribe(list(topics.EVENT_TOPICS))
    seen: set[str] = set()
    deadline = time.monotonic() + 60
    try:
        while until not in seen and time.monotonic() < deadline:
            message = consumer.poll(0.5)
            if message is not None and not message.error():
                seen.add(str(json.loads(message.value() or b"{}")["event_id"]))
    finally:
        consumer.close()
    assert until in seen, "the accepted event never showed up on the broker"
    return seen


def test_a_token_acts_for_its_own_user_only_and_a_mixed_batch_leaves_nothing(
    running: Stack, http: httpx.Client
) -> None:
    alice = token(running, "alice")
    own_feed = http.get("/v1/feed", params={"user_id": "alice", "n": 3}, headers=alice)
    assert own_feed.status_code == 200
    other = http.get("/v1/feed", params={"user_id": "bob", "n": 3}, headers=alice)
    assert other.status_code == 403
    assert "the token is for user 'alice', not 'bob' - at user_id" in other.json()["detail"]

    own, foreign = api_event("alice", 1), api_event("bob", 2)
    mixed = http.post("/v1/events", json={"events": [own, foreign]}, headers=alice)
    assert mixed.status_code == 403
    assert "at $.events[1].user_id" in mixed.json()["detail"]
    sentinel = api_event("alice", 3)
    accepted = http.post("/v1/events", json={"events": [sentinel]}, headers=alice)
    assert accepted.status_code == 202
    on_broker = event_ids_on_the_broker(running, sentinel["event_id"])
    assert own["event_id"] not in on_broker and foreign["event_id"] not in on_broker


def test_keys_keep_the_server_routes_and_an_app_key_no_longer_speaks_for_users(
    running: Stack, http: httpx.Client
) -> None:
    alice = token(running, "alice")
    batch = {"events": [api_event("carol", 1)]}
    feed: dict[str, str | int] = {"user_id": "carol", "n": 2}
    # the app key ships inside the phone app: once tokens are on it opens no user's data
    assert http.post("/v1/events", json=batch, headers=bearer(APP)).status_code == 403
    assert http.get("/v1/feed", params=feed, headers=bearer(APP)).status_code == 403
    # an admin key acts for anyone (replays, backfills, load tests)
    assert http.post("/v1/events", json=batch, headers=bearer(ADMIN)).status_code == 202
    assert http.get("/v1/feed", params=feed, headers=bearer(ADMIN)).status_code == 200
    # uploads are a server's: keys, never a person's token
    item = {
        "item_id": "t-item-1",
        "creator_id": "c1",
        "created_at": "2026-01-01T00:00:00Z",
        "duration_ms": 15_000,
    }
    assert http.post("/v1/items", json={"items": [item]}, headers=bearer(APP)).status_code == 202
    assert http.post("/v1/items", json={"items": [item]}, headers=alice).status_code == 403
    for method, path in [("GET", "/metrics"), ("POST", "/admin/train")]:
        assert http.request(method, path, headers=alice).status_code == 403, path


def test_a_token_that_does_not_hold_gets_401_saying_why(running: Stack, http: httpx.Client) -> None:
    feed: dict[str, str | int] = {"user_id": "alice", "n": 1}
    expired = mint(running.settings, "alice", ttl_s=-120)
    r = http.get("/v1/feed", params=feed, headers=bearer(expired))
    assert r.status_code == 401 and "expired" in r.json()["detail"]
    foreign = jwt.encode(
        {"sub": "alice", "iss": ISSUER, "aud": "another-app", "exp": time.time() + 60}, SECRET
    )
    r = http.get("/v1/feed", params=feed, headers=bearer(foreign))
    assert r.status_code == 401 and "Audience" in r.json()["detail"]
    r = http.get("/v1/feed", params=feed)
    assert r.status_code == 401 and "user token" in r.json()["detail"]


def test_a_person_erases_themselves_and_only_with_their_token(
    running: Stack, http: httpx.Client
) -> None:
    dave = token(running, "dave")
    assert http.post("/v1/events", json={"events": [api_event("dave", 1)]}, headers=dave).is_success
    assert http.delete("/v1/users/me").status_code == 401
    assert http.delete("/v1/users/me", headers=bearer(ADMIN)).status_code == 403  # names nobody
    gone = http.delete("/v1/users/me", headers=dave)
    assert gone.status_code == 202, gone.text
    assert gone.json()["user_id"] == "dave"
    # the admin route beside it still erases anyone, and only with an admin key
    assert http.delete("/v1/users/erin", headers=dave).status_code == 403
    assert http.delete("/v1/users/erin", headers=bearer(ADMIN)).json()["user_id"] == "erin"
