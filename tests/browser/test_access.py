"""Who opens the console, without a browser or a stack: its pages answer an admin key (in the
header, or the cookie its sign-in form sets) and send anyone else to that form; its JSON
routes take the key as every admin route does; its files ship with the package."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.datastructures import State
from litestar.testing import TestClient

from api.console import STATIC, TEMPLATES, Console
from api.console.access import COOKIE, PASS_S, console_pass, is_console_pass
from api.security import Keys
from swipeloop.settings import Settings

KEY = "console-test-admin-key"


def console_alone(admin_keys: str) -> Litestar:
    """The console's routes on an app of their own (no services: these pages need none)."""
    keys = Keys(Settings(admin_keys=admin_keys))
    return Litestar(plugins=[Console()], state=State({"keys": keys}))


@pytest.fixture
def client() -> Iterator[TestClient[Litestar]]:
    """A remote caller (not loopback) of a console with one admin key."""
    with TestClient(console_alone(KEY)) as test_client:
        test_client.follow_redirects = False
        yield test_client


def test_the_pages_need_an_admin_key(client: TestClient[Litestar]) -> None:
    for page in ("/console/playground", "/console/operations"):
        answer = client.get(page)
        assert answer.status_code in (302, 307) and answer.headers["location"] == "/console/login"
        assert client.get(page, headers={"Authorization": f"Bearer {KEY}"}).status_code == 200
        assert client.get(page, headers={"Authorization": "Bearer nope"}).status_code != 200


def test_the_sign_in_form_sets_a_cookie_for_the_pages_only(client: TestClient[Litestar]) -> None:
    wrong = client.post("/console/login", data={"key": "nope"})
    assert wrong.status_code == 401 and "not an admin key" in wrong.text
    assert COOKIE not in wrong.cookies
    right = client.post("/console/login", data={"key": KEY})
    assert right.status_code == 303 and right.headers["location"] == "/console/playground"
    cookie = right.headers["set-cookie"]
    assert KEY not in cookie, "the cookie holds a pass, never the key"
    assert "HttpOnly" in cookie and "Path=/console" in cookie and "SameSite=strict" in cookie
    assert client.get("/console/playground").status_code == 200  # (the client keeps it)
    # the cookie opens pages, not API routes: those take the key as every client sends it
    assert client.get("/console/api/users").status_code == 401
    client.get("/console/logout")
    assert client.get("/console/playground").status_code in (302, 307)


def test_a_pass_opens_the_pages_while_unexpired_and_its_key_configured() -> None:
    keys, now = Keys(Settings(admin_keys=f"{KEY},other")), 1_000_000.0
    issued = console_pass(KEY, now)
    assert is_console_pass(keys, issued, now) and is_console_pass(keys, issued, now + PASS_S - 1)
    assert not is_console_pass(keys, issued, now + PASS_S)  # expired
    expires, _, signature = issued.partition(".")
    later = str(int(expires) + 3600)
    assert not is_console_pass(keys, f"{later}.{signature}", now)  # a longer life, forged
    assert not is_console_pass(keys, console_pass("not-a-key", now), now)
    assert not is_console_pass(keys, "", now) and not is_console_pass(keys, "x.y", now)
    assert not is_console_pass(Keys(Settings(admin_keys="other")), issued, now)  # key removed


def test_without_admin_keys_only_loopback_callers_get_in() -> None:
    with TestClient(console_alone("")) as remote:
        remote.follow_redirects = False
        assert remote.get("/console/playground").status_code in (302, 307)
        assert "callers on this machine only" in remote.get("/console/login").text
        assert remote.get("/console/api/users").status_code == 401


def test_templates_and_scripts_are_package_data() -> None:
    import glob
    import tomllib

    root = Path(__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())
    patterns = project["tool"]["setuptools"]["package-data"]["api.console"]
    package = TEMPLATES.parent
    shipped = {f for p in patterns for f in glob.glob(p, root_dir=package)}
    present = {
        str(p.relative_to(package)) for d in (TEMPLATES, STATIC) for p in d.iterdir() if p.is_file()
    }
    assert present and present <= shipped, sorted(present - shipped)
