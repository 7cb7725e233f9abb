"""The console in a real browser: Debian's chromium driven by Playwright (never a downloaded
browser) against one embedded stack per module, with a demo catalog already served."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from cli.stack import Stack
from sim.demo_catalog import demo_catalog
from sim.simulator import msgspec_item
from swipeloop.broker import free_port
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
from tests.conftest import wait_until

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ITEMS = 1_000
WAIT_MS = 30_000  # what a page waits for its condition before the test fails
DOCS = Path(__file__).resolve().parents[2] / "docs"


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, chdb_path: Path) -> Iterator[Stack]:
    """The whole system in this process, serving a 1,000-video demo catalog."""
    settings = Settings(
        clickhouse_url=f"chdb://{chdb_path}",
        clickhouse_database=f"t_{uuid.uuid4().hex[:10]}",
        data_dir=tmp_path_factory.mktemp("console"),
        api_port=free_port(),
        seed_items=0,
        feature_lateness_s=2,
        embedding_min_count=1,
        publish_interval_s=0.3,
        flow_epoch_s=1.0,
        model_poll_s=0.5,
    )
    with Stack(settings, schedule_training=False) as running:
        running.serve_in_thread()
        api = httpx.Client(base_url=running.url, timeout=30)
        items = [msgspec_item(it) for it in demo_catalog(ITEMS, seed=11)]
        for at in range(0, ITEMS, 500):
            assert api.post("/v1/items", json={"items": items[at : at + 500]}).status_code == 202
        state = running.services.feed.state
        wait_until(lambda: len(state.catalog_order()) == ITEMS, 60, "the API's whole catalog")
        client = connect(settings)
        wait_until(
            lambda: client.command("SELECT count() FROM items FINAL") == ITEMS,
            60,
            "the catalog in ClickHouse",
        )
        yield running


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    """Debian's chromium, headless; a missing one fails the test saying what to install."""
    if not (Path(CHROMIUM).is_file() and shutil.which(CHROMIUM)):
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium (`apt-get install chromium`, "
            "or `bash .ci/deps.sh`, which installs it); the browser tests never download one"
        )
    with sync_playwright() as playwright:
        browser = _launch(playwright)
        yield browser
        browser.close()


def _launch(playwright: Playwright) -> Browser:
    return playwright.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)


@pytest.fixture
def browser_page(chromium: Browser) -> Iterator[Page]:
    """A fresh tab of its own (own storage), waiting up to WAIT_MS for each condition."""
    context = chromium.new_context(viewport={"width": 1440, "height": 1000})
    context.set_default_timeout(WAIT_MS)
    page = context.new_page()
    yield page
    context.close()


class Shots:
    """Screenshots of a test under its tmp_path; with SWIPELOOP_SCREENSHOTS=docs, the ones
    named for the README also land in docs/."""

    def __init__(self, tmp_path: Path) -> None:
        self.dir = tmp_path / "screenshots"
        self.dir.mkdir()
        self.docs = os.environ.get("SWIPELOOP_SCREENSHOTS") == "docs"

    def take(self, page: Page, name: str, readme: bool = False) -> Path:
        path = self.dir / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        if readme and self.docs:
            DOCS.mkdir(exist_ok=True)
            shutil.copyfile(path, DOCS / f"{name}.png")
        return path


@pytest.fixture
def shots(tmp_path: Path) -> Shots:
    """Where this test's screenshots go."""
    return Shots(tmp_path)


def cards(page: Page) -> list[dict[str, Any]]:
    """The cards on the page: item, creator and tags of each."""
    found: list[dict[str, Any]] = page.eval_on_selector_all(
        "#cards .card",
        "nodes => nodes.map(n => ({item: n.dataset.item, creator: n.dataset.creator,"
        " tags: n.dataset.tags ? n.dataset.tags.split(' ') : []}))",
    )
    return found
