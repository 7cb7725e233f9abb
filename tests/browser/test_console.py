"""The console, clicked through in Debian's chromium on the embedded stack: what a phone's
gestures do to the next page, a block that holds, promote and roll back, an erasure that
leaves nothing, and bad input answered with the API's own words."""

from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
from playwright.sync_api import Page, expect

from api.console.pipeline import consumer_lag
from cli.stack import Stack
from swipeloop.clickhouse import connect
from swipeloop.erasure import remaining
from swipeloop.metrics import CONSUMER_LAG
from tests.browser.conftest import Shots, cards
from tests.conftest import wait_until
from tests.support.flow_processes import settled
from tests.support.models import trained

pytestmark = [pytest.mark.integration, pytest.mark.browser]


def playground(page: Page, stack: Stack, user: str) -> None:
    """The playground with `user`'s first page on it."""
    page.goto(f"{stack.url}/console/playground?user_id={user}")
    expect(page.locator("#cards .card").first).to_be_visible()


def next_page(page: Page) -> None:
    """Ask for the next page and wait until it is drawn."""
    before = page.get_attribute("#page-meta", "data-request")
    page.click("#load-feed")
    page.wait_for_function(
        "old => document.querySelector('#page-meta').dataset.request !== old", arg=before
    )


def gesture(page: Page, item: str, kind: str) -> None:
    """Press a card's button (a phone's gesture) and wait until the API accepted its event."""
    card = page.locator(f'#cards .card[data-item="{item}"]')
    card.locator(f'.actions button[data-kind="{kind}"]').click()
    expect(card.locator(f'.done [data-kind="{kind}"]')).to_be_visible()


def share(page: Page, tag: str) -> float:
    """The share of this page's cards that carry `tag`, as the page counts it."""
    box = page.locator("#tag-share")
    total = int(box.get_attribute("data-total") or 0)
    found = box.locator(f'[data-tag="{tag}"]')
    count = int(found.get_attribute("data-count") or 0) if found.count() else 0
    return count / total if total else 0.0


def signal(page: Page, selector: str) -> Callable[[], bool]:
    """A check that the live-signals panel shows `selector` (it refreshes every 2 s)."""
    return lambda: page.locator(f"#signals {selector}").count() > 0


def test_liking_one_tag_raises_its_share_of_the_next_page(
    stack: Stack, browser_page: Page, shots: Shots
) -> None:
    page = browser_page
    playground(page, stack, "liker")
    tag = cards(page)[0]["tags"][0]
    before = share(page, tag)
    liked = 0
    for _ in range(6):  # like what carries the tag, page after page, until three are liked
        for card in cards(page):
            if tag in card["tags"] and liked < 3:
                gesture(page, card["item"], "like")
                liked += 1
        if liked == 3:
            break
        next_page(page)
    assert liked == 3, f"fewer than three {tag} videos in six pages"
    page.wait_for_function(  # the replica's affinity, as the side panel shows it
        "tag => Number(document.querySelector(`#signals tr[data-tag='${tag}']`)"
        "?.dataset.score) >= 2.5",
        arg=tag,
    )
    next_page(page)
    after = share(page, tag)
    shots.take(page, "console-playground", readme=True)
    assert after > before and after >= 0.5, (tag, before, after, cards(page))


def test_a_block_removes_the_creator_from_every_later_page(
    stack: Stack, browser_page: Page, shots: Shots
) -> None:
    page = browser_page
    playground(page, stack, "blocker")
    first = cards(page)[0]
    creator = first["creator"]
    gesture(page, first["item"], "follow")  # their videos now come first...
    wait_until(signal(page, f'[data-followed="{creator}"]'), 30, "the follow in the panel")
    next_page(page)
    theirs = [c for c in cards(page) if c["creator"] == creator]
    assert theirs, "a followed creator's videos are on the next page"
    gesture(page, theirs[0]["item"], "block")  # ...until they are blocked
    wait_until(signal(page, f'[data-blocked="{creator}"]'), 30, "the block in the panel")
    for _ in range(4):
        next_page(page)
        shown = cards(page)
        assert shown and all(c["creator"] != creator for c in shown), shown
    shots.take(page, "blocked")


def test_bad_input_shows_the_api_error_not_a_stack_trace(
    stack: Stack, browser_page: Page, shots: Shots
) -> None:
    page = browser_page
    api = httpx.Client(base_url=stack.url, timeout=30)

    def says(response: httpx.Response) -> str:
        """What the page must show: the API's status and its own words."""
        assert response.status_code >= 400, response.text
        return f"{response.status_code}: {response.json()['detail']}"

    page.goto(f"{stack.url}/console/playground")
    page.fill("#user-id", "typo")
    page.fill("#page-size", "500")
    page.click("#load-feed")
    error = page.locator("#error")
    expect(error).to_have_text(says(api.get("/v1/feed", params={"user_id": "typo", "n": 500})))

    page.goto(f"{stack.url}/console/operations")
    form = page.locator('form.analysis[data-name="daily_engagement"]')
    form.locator('input[name="days"]').fill("a week")
    form.locator('button[type="submit"]').click()
    expect(error).to_have_text(says(api.get("/admin/sql/daily_engagement?days=a week")))
    page.fill("#experiment-name", "half")
    page.fill("#experiment-arms", "realtime:50")
    page.click('#start-experiment button[type="submit"]')
    bad_arms = {"name": "half", "arms": "realtime:50"}
    expect(error).to_have_text(says(api.post("/admin/experiments", json=bad_arms)))
    shots.take(page, "bad-input")
    assert not re.search(r"Traceback|File \"", page.content())


def test_a_user_erased_from_the_page_leaves_nothing_behind(
    stack: Stack, browser_page: Page, shots: Shots
) -> None:
    page, user = browser_page, "erase-me"
    client = connect(stack.settings)
    state = stack.services.feed.state
    playground(page, stack, user)
    for card, kind in zip(cards(page), ["like", "watch", "loop", "share"], strict=False):
        gesture(page, card["item"], kind)
    landed = {"events": 4, "impressions": 10, "user_embeddings": 1}  # four gestures, one page
    wait_until(
        lambda: all(remaining(client, user)[table] >= n for table, n in landed.items()),
        60,
        "the user's four events, ten impressions and vector in ClickHouse",
    )
    wait_until(lambda: user in state.user_vectors, 30, "the user's vector in the feed replica")

    page.goto(f"{stack.url}/console/operations")
    page.fill("#erase-user-id", user)
    page.once("dialog", lambda dialog: dialog.accept())
    page.click('#erase-user button[type="submit"]')
    erased = page.locator(f'#erased [data-erased="{user}"]')
    expect(erased).to_be_visible()
    assert int(erased.get_attribute("data-rows") or 0) >= 4 + 10  # events, impressions
    shots.take(page, "erased")

    for flow in ("ingest", "features", "embeddings"):  # each past everything the user sent
        wait_until(settled(stack.settings, flow), 60, f"the {flow} flow to read all that was sent")
    held = remaining(client, user)
    assert held == dict.fromkeys(held, 0), held
    assert user not in state.user_vectors
    assert not state.users.get(user) or not state.users[user].positives


def test_promote_and_roll_back_from_the_page_change_the_served_model(
    stack: Stack, browser_page: Page, shots: Shots
) -> None:
    client = connect(stack.settings)
    first, second = trained(client, seed=3), trained(client, seed=4)
    operations = browser_page
    feed = operations.context.new_page()
    playground(feed, stack, "ranked")
    # this process runs the flows (`swipeloop up`): their lag is its own gauge
    wait_until(
        lambda: any(consumer_lag(m.samples) for m in CONSUMER_LAG.collect()),
        30,
        "a flow's first poll",
    )
    operations.goto(f"{stack.url}/console/operations")
    expect(operations.locator("#measured-by")).to_have_attribute("data-by", "this process")
    expect(operations.locator("#lag tbody td").first).not_to_have_class("muted")

    def serves(version: str) -> None:
        expect(operations.locator("#serving")).to_have_attribute("data-version", version)
        next_page(feed)
        expect(feed.locator("#model-version")).to_have_attribute("data-version", version)

    operations.click(f'button[data-promote="{first}"]')
    serves(first)
    operations.click(f'button[data-promote="{second}"]')
    serves(second)
    operations.click("#rollback")
    expect(operations.locator("#notice")).to_have_text(f"rolled back: serving {first}")
    serves(first)
    # a played video, so that the analysis in the screenshot has a row to show
    gesture(feed, cards(feed)[0]["item"], "watch")
    wait_until(lambda: remaining(client, "ranked")["events"] > 0, 30, "the play in ClickHouse")
    analysis = operations.locator('form.analysis[data-name="daily_engagement"]')
    analysis.locator("button").click()
    expect(analysis.locator(".result table")).to_be_visible()
    shots.take(operations, "console-operations", readme=True)
