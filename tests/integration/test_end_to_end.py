"""The whole loop on the embedded stack: events in → ClickHouse, features, vectors → feed →
train → a feed ranked by the new model, every stage checked where it lands."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import httpx
import pytest

from cli.stack import Stack
from sim.demo_catalog import demo_catalog
from sim.simulator import msgspec_item
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def stack(settings: Settings) -> Iterator[Stack]:
    with Stack(settings, schedule_training=False) as running:
        running.serve_in_thread()
        yield running


def ev(
    user: str, item: str, kind: str, seq: int, watch_ms: int = 0, request_id: str | None = None
) -> dict[str, object]:
    return {
        "event_id": str(uuid.uuid4()),
        "user_id": user,
        "item_id": item,
        "kind": kind,
        "watch_ms": watch_ms,
        "client_ts": datetime.now(UTC).isoformat(),
        "session_id": "s-" + user,
        "seq": seq,
        "request_id": request_id,
    }


def count(settings: Settings, sql: str) -> int:
    return int(connect(settings).query(sql).result_rows[0][0])


def test_swipes_to_ranked_feed(stack: Stack) -> None:
    s = stack.settings
    api = httpx.Client(base_url=stack.url, timeout=30)
    catalog = demo_catalog(400, seed=3)
    by_id = {it.item_id: it for it in catalog}
    r = api.post("/v1/items", json={"items": [msgspec_item(it) for it in catalog]})
    assert r.status_code == 202, r.text
    wait_until(lambda: api.get("/health/ready").status_code == 200, what="API ready")
    wait_until(
        lambda: count(s, "SELECT count() FROM items FINAL") == 400, what="items in ClickHouse"
    )
    # (ready needs no catalog: the API follows the items topic on its own time)
    wait_until(
        lambda: api.get("/health/ready").json()["catalog_items"] == 400, what="the API's catalog"
    )

    # A cold-start user gets a feed, not an error.
    cold = api.get("/v1/feed", params={"user_id": "nobody", "n": 20}).json()
    assert len(cold["items"]) == 20 and cold["model_version"] == "none"

    # A bad event rejects its whole batch, naming the field and its index.
    bad = api.post(
        "/v1/events",
        json={"events": [ev("u0", "v000001", "like", 1), ev("u0", "v000002", "teleport", 2)]},
    )
    assert bad.status_code == 422 and "$.events[1].kind" in bad.json()["detail"]

    # Users who love comedy: they watch and like comedy items, skip the rest.
    posted = 0
    for round_ in range(6):
        for u in range(12):
            user = f"u{u}"
            feed = api.get("/v1/feed", params={"user_id": user, "n": 20}).json()
            events = []
            for i, entry in enumerate(feed["items"]):
                item = by_id[entry["item_id"]]
                if "comedy" in item.tags or "pets" in item.tags:
                    events += [
                        ev(user, item.item_id, "watch", i, item.duration_ms, feed["request_id"]),
                        ev(user, item.item_id, "like", i, 0, feed["request_id"]),
                    ]
                else:
                    events.append(ev(user, item.item_id, "skip", i, 800, feed["request_id"]))
            r = api.post("/v1/events", json={"events": events})
            assert r.status_code == 202, r.text
            assert r.json() == {"accepted": len(events)}
            posted += len(events)
        if round_ == 0:
            # The first round shaped the features and the vectors; wait until both exist.
            wait_until(
                lambda: count(s, "SELECT count() FROM item_features") > 0,
                what="windowed item features in ClickHouse",
            )
            wait_until(
                lambda: count(s, "SELECT count() FROM item_embeddings") > 0,
                what="online item vectors in ClickHouse",
            )

    wait_until(
        lambda: count(s, "SELECT count() FROM events FINAL") == posted,
        60,
        what=f"{posted} events in ClickHouse",
    )
    wait_until(
        lambda: count(s, "SELECT count() FROM impressions") >= 12 * 6 * 20 + 20,
        60,
        what="every served impression in ClickHouse",
    )
    # The bad batch left nothing behind.
    assert (
        count(
            s,
            "SELECT count() FROM events WHERE user_id = 'u0' AND item_id = 'v000001' "
            "AND kind = 'like' AND request_id = ''",
        )
        == 0
    )
    liked = count(s, "SELECT sum(likes) FROM item_features")
    assert liked > 0

    # Feeds never repeat what this user was already shown.
    shown: set[str] = set()
    for _ in range(5):
        page = api.get("/v1/feed", params={"user_id": "u1", "n": 10}).json()
        ids = {i["item_id"] for i in page["items"]}
        assert not ids & shown
        shown |= ids

    # A new fan likes three comedy/pets items that have vectors: ANN retrieves their neighbours,
    # which the co-engagement made mostly comedy/pets too.
    with_vectors = [
        r[0] for r in connect(s).query("SELECT item_id FROM item_embeddings FINAL").result_rows
    ]
    loved = [i for i in with_vectors if {"comedy", "pets"} & set(by_id[i].tags)][:3]
    assert len(loved) == 3
    r = api.post(
        "/v1/events", json={"events": [ev("fan", i, "like", n) for n, i in enumerate(loved)]}
    )
    assert r.status_code == 202
    wait_until(
        lambda: count(s, "SELECT count() FROM events WHERE user_id = 'fan'") == 3,
        what="the fan's likes in ClickHouse",
    )
    fan = api.get("/v1/feed", params={"user_id": "fan", "n": 20}).json()
    ann = [i["item_id"] for i in fan["items"] if i["source"] in ("ann", "ann_short", "similar")]
    assert ann, f"no ANN candidates for a user with likes: {fan['items']}"
    on_taste = sum(bool({"comedy", "pets"} & set(by_id[i].tags)) for i in ann) / len(ann)
    base_rate = sum(bool({"comedy", "pets"} & set(it.tags)) for it in catalog) / len(catalog)
    assert on_taste > base_rate, (on_taste, base_rate)

    # Train inside the running stack (as `swipeloop train` does), then the feed uses the model.
    trained = api.post("/admin/train")
    assert trained.status_code == 200, trained.text
    version = trained.json()["version"]
    assert trained.json()["rows"] > 100 and trained.json()["positives"] > 0
    ranked = api.get("/v1/feed", params={"user_id": "u3", "n": 20}).json()
    assert ranked["model_version"] == version
    assert ranked["candidates"] == 400 - 6 * 20  # the catalog less what u3 was shown
    scores = [i["score"] for i in ranked["items"]]
    assert len(set(scores)) > 1
    wait_until(
        lambda: (
            count(
                s,
                f"SELECT count() FROM impressions WHERE request_id = "
                f"'{ranked['request_id']}' AND model_version = '{version}'",
            )
            == 20
        ),
        what="impressions logged with the model version and features",
    )
    features = (
        connect(s)
        .query(
            f"SELECT features FROM impressions WHERE request_id = '{ranked['request_id']}' LIMIT 1"
        )
        .result_rows[0][0]
    )
    assert len(features) == len(trained.json()["feature_names"])

    # A video taken down leaves the catalog, ClickHouse's current items and every feed.
    gone = ranked["items"][0]["item_id"]
    assert api.delete(f"/v1/items/{gone}").status_code == 202
    assert api.delete("/v1/items/no-such-item").status_code == 404
    wait_until(
        lambda: count(s, f"SELECT countIf(deleted) FROM items FINAL WHERE item_id = '{gone}'") == 1,
        what="the deletion in ClickHouse",
    )
    for user in ("u5", "new-user"):
        page = api.get("/v1/feed", params={"user_id": user, "n": 50}).json()
        assert gone not in {i["item_id"] for i in page["items"]}
