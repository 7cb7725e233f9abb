"""The embeddings flow killed -9 ten times mid-stream loses no vector and counts every event
once: the ids it admits equal those of a run that was never interrupted."""

from __future__ import annotations

import random
from datetime import timedelta
from pathlib import Path

import pytest

from swipeloop.settings import Settings
from tests.conftest import json_of, role_env
from tests.support.embedding_stream import READ_IDS, START, catalog, event
from tests.support.flow_processes import kill_9_mid_stream

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _own_ids(env: dict[str, str]) -> dict[str, list[str]]:
    return dict(json_of(READ_IDS, env))


def _role(live: Settings, data_dir: Path, database: str) -> dict[str, str]:
    return role_env(live, data_dir, database, embedding_dim="16")


def test_kill_9_mid_stream_resumes_learning_and_loses_no_vector(
    live: Settings, tmp_path: Path
) -> None:
    rng = random.Random(17)
    # many ids near the admission count (5): a lost or twice-counted event changes who has a
    # vector, so the admitted sets of both runs are equal only if each event counted once
    events = [
        event(
            f"u{rng.randrange(3_000)}",
            f"i{rng.randrange(4_000)}",
            rng.choice(["impression", "impression", "watch", "like", "skip"]),
            START + timedelta(milliseconds=20 * k),
            rng.choice([500, 9_000]),
        )
        for k in range(40_000)
    ]
    calm = _role(live, tmp_path / "calm", "calm")
    killed = _role(live, tmp_path / "killed", "killed")
    had: set[str] = set()

    def nothing_lost() -> None:
        now = set(_own_ids(killed)["item_embeddings"])
        assert had <= now, f"vectors lost after a kill: {sorted(had - now)[:5]}"
        had.update(now)

    roles = (calm, killed)
    kill_9_mid_stream(live, "embeddings", roles, catalog(4_000), events, rng, nothing_lost)

    expected, got = _own_ids(calm), _own_ids(killed)
    assert len(expected["item_embeddings"]) > 1_000 and len(expected["user_embeddings"]) > 1_000
    assert had <= set(got["item_embeddings"])
    assert got == expected  # the same ids admitted: every event counted once
