"""Who gets in, against a running stack: keys per role, a rate limit per key, body limits,
CORS closed unless configured, /metrics and the admin routes behind an admin key."""

from __future__ import annotations

import concurrent.futures
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack
from tests.conftest import isolated
from tests.support.auth import bearer

pytestmark = pytest.mark.integration

APP, OTHER_APP, ADMIN = "app-key-1", "app-key-2", "admin-key-1"
ORIGIN = "https://app.example"
LIMIT = 20  # requests per second per key, low enough for a test to cross


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory, chdb_path: Path) -> Iterator[Stack]:
    settings = isolated(
        chdb_path,
        tmp_path_factory.mktemp("security"),
        seed_items=50,
        app_keys=f"{APP}, {OTHER_APP}",
        admin_keys=ADMIN,
        rate_limit_per_s=LIMIT,
        cors_origins=ORIGIN,
    )
    with Stack(settings, schedule_training=False, run_flows=False) as stack:
        stack.serve_in_thread()
        yield stack


def test_keys_open_their_own_routes_only(running: Stack) -> None:
    http = httpx.Client(base_url=running.url, timeout=10)
    feed = "/v1/feed?user_id=u1&n=3"
    assert http.get(feed).status_code == 401
    assert "Bearer" in http.get(feed).json()["detail"]
    assert http.get(feed, headers=bearer("app-key-")).status_code == 401  # a prefix is no key
    assert http.get(feed, headers=bearer(APP)).status_code == 200
    assert http.get(feed, headers=bearer(ADMIN)).status_code == 200  # admin holds app's role
    assert http.post("/v1/events", json={"events": []}, headers=bearer(APP)).status_code == 202

    # admin routes: an app key is known but not enough
    for method, path in [
        ("GET", "/metrics"),
        ("POST", "/admin/train"),
        ("GET", "/admin/sql/dlq_reasons"),
        ("DELETE", "/v1/items/v00001"),
    ]:
        assert http.request(method, path).status_code == 401, path
        assert http.request(method, path, headers=bearer(APP)).status_code == 403, path
    assert http.get("/metrics", headers=bearer(ADMIN)).status_code == 200
    assert http.get("/admin/sql/dlq_reasons", headers=bearer(ADMIN)).status_code == 200
    assert http.get("/health/ready").status_code in (200, 503)  # probes need no key


def test_a_key_over_its_rate_gets_429_with_retry_after_and_others_do_not(running: Stack) -> None:
    url = f"{running.url}/v1/events"

    def post(key: str) -> httpx.Response:
        return httpx.post(url, json={"events": []}, headers=bearer(key), timeout=10)

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        burst = list(pool.map(post, [OTHER_APP] * (LIMIT * 3)))
    limited = [r for r in burst if r.status_code == 429]
    assert limited, [r.status_code for r in burst]
    assert {r.status_code for r in burst} <= {202, 429}
    assert all(1 <= int(r.headers["retry-after"]) <= 1 for r in limited)
    assert "rate limit" in limited[0].json()["detail"]
    assert post(APP).status_code == 202, "another key keeps its own budget"


def test_body_over_the_limit_is_413_before_it_is_read(running: Stack) -> None:
    huge = b'{"events": [' + b" " * (running.settings.max_body_bytes + 10) + b"]}"
    r = httpx.post(
        f"{running.url}/v1/events",
        content=huge,
        headers={**bearer(APP), "Content-Type": "application/json"},
    )
    assert r.status_code == 413


def test_cors_answers_only_the_configured_origin(running: Stack) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(
            f"{running.url}/v1/feed",
            headers={
                "Origin": origin,
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "authorization",
            },
        )

    allowed = preflight(ORIGIN)
    assert allowed.status_code in (200, 204)
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    refused = preflight("https://evil.example")
    assert refused.headers.get("access-control-allow-origin") != "https://evil.example"
    assert "access-control-allow-origin" not in refused.headers


def test_without_cors_origins_no_browser_origin_is_allowed(tmp_path: Path, chdb_path: Path) -> None:
    """The default: no CORS headers at all, so browsers refuse cross-origin calls."""
    settings = isolated(chdb_path, tmp_path)
    with Stack(settings, schedule_training=False, run_flows=False) as stack:
        stack.serve_in_thread()
        r = httpx.get(
            f"{stack.url}/v1/feed?user_id=u1&n=1", headers={"Origin": "https://app.example"}
        )
        assert r.status_code == 200  # loopback, no keys configured: the open local default
        assert "access-control-allow-origin" not in r.headers
