"""The README's first-swipe walk-through, run as written (bash and curl) against a running
stack: a feed, a like, and the next feed without what was shown and shaped by the like."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import Stack
from swipeloop.waiting import wait_for
from tests.conftest import isolated

pytestmark = pytest.mark.integration
README = Path(__file__).resolve().parents[2] / "README.md"


def walkthrough() -> str:
    """The shell block under the README's `<!-- walkthrough` marker."""
    after = README.read_text().split("<!-- walkthrough", 1)[1]
    return after.split("```sh\n", 1)[1].split("```", 1)[0]


def documents(text: str) -> list[Any]:
    """The JSON documents curl printed one after another."""
    decoder, found, at = json.JSONDecoder(), [], 0
    while at < len(text):
        if text[at].isspace():
            at += 1
            continue
        document, at = decoder.raw_decode(text, at)
        found.append(document)
    return found


def test_the_first_swipe_walkthrough_runs_as_written(tmp_path: Path, chdb_path: Path) -> None:
    for tool in ("bash", "curl"):
        assert shutil.which(tool), f"{tool} is missing: `bash .ci/deps.sh` installs it"
    script = walkthrough()
    assert "http://127.0.0.1:8000" in script
    with Stack(isolated(chdb_path, tmp_path, seed_items=300), schedule_training=False) as stack:
        stack.serve_in_thread()
        feed = f"{stack.url}/v1/feed"
        assert wait_for(lambda: httpx.get(feed, params={"user_id": "x"}).json()["items"], 60)
        ran = subprocess.run(
            ["bash", "-euo", "pipefail", "-c", script.replace("http://127.0.0.1:8000", stack.url)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        first, accepted, after = documents(ran.stdout)
        assert len(first["items"]) == 3 and accepted == {"accepted": 1}
        assert after["explain"] is not None and len(after["items"]) == 3
        shown = {i["item_id"] for i in first["items"]}
        assert not shown & {i["item_id"] for i in after["items"]}, "shown again"

        def shaped_by_the_like() -> bool:  # (the README waits 3 s; a slow machine may need more)
            r = httpx.get(feed, params={"user_id": "bob", "n": 3, "explain": "true"}).json()
            top = r["explain"]["items"][0]
            return bool(r["explain"]["dropped"].get("seen", 0) >= 4 and top["prerank"] > 0)

        assert wait_for(shaped_by_the_like, 30), "the like never reached bob's feed"
