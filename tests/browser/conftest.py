"""The console in a real browser: Debian's chromium driven by Playwright (never a downloaded
browser) against one embedded stack per module, with a demo catalog already served."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, Playwright, sync_playwright

from cli.stack import Stack
from tests.support.catalog_stack import catalog_stack

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
    with catalog_stack(
        chdb_path,
        tmp_path_factory.mktemp("console"),
        ITEMS,
        seed=11,
        feature_lateness_s=2,
        embedding_min_count=1,
        publish_interval_s=0.3,
        flow_epoch_s=1.0,
        model_poll_s=0.5,
    ) as running:
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
