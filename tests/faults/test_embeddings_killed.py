"""The embeddings flow killed -9 ten times mid-stream loses no vector and counts every event
once: the ids it admits equal those of a run that was never interrupted."""

from __future__ import annotations

import random
import signal
import time
from datetime import timedelta
from pathlib import Path

import pytest

from swipeloop import topics
from swipeloop.broker import EmbeddedBroker
from swipeloop.settings import Settings
from tests.conftest import drain, json_of, produce, role_env, swipeloop_process
from tests.integration.test_embeddings import _READ_IDS, START, catalog, event

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _own_ids(env: dict[str, str]) -> dict[str, list[str]]:
    return dict(json_of(_READ_IDS, env))


def _role(live: Settings, data_dir: Path, database: str) -> dict[str, str]:
    return role_env(live, data_dir, database, embedding_dim="16")


def test_kill_9_mid_stream_resumes_learning_and_loses_no_vector(
    settings: Settings, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    live = settings.with_(kafka_bootstrap=broker.bootstrap, broker_epoch=broker.epoch)
    topics.ensure_topics(live)
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
    chunks = [events[i : i + 3_000] for i in range(0, len(events), 3_000)]  # 14
    produce(live, catalog(4_000), chunks[0])
    calm = _role(live, tmp_path / "calm", "calm")
    killed = _role(live, tmp_path / "killed", "killed")
    for env in (calm, killed):
        assert swipeloop_process("migrate", env=env).wait(60) == 0
    had: set[str] = set()
    for chunk in chunks[1:11]:  # killed ten times while events keep coming
        flow = swipeloop_process("flows", "run", "embeddings", env=killed)
        time.sleep(3.0)  # start-up
        produce(live, [], chunk)
        time.sleep(rng.uniform(0.5, 1.5))
        flow.send_signal(signal.SIGKILL)
        flow.communicate(timeout=10)
        now = set(_own_ids(killed)["item_embeddings"])
        assert had <= now, f"vectors lost after a kill: {sorted(had - now)[:5]}"
        had = now
    for chunk in chunks[11:]:
        produce(live, [], chunk)
    drain("embeddings", killed)
    drain("embeddings", calm)

    expected, got = _own_ids(calm), _own_ids(killed)
    assert len(expected["item_embeddings"]) > 1_000 and len(expected["user_embeddings"]) > 1_000
    assert had <= set(got["item_embeddings"])
    assert got == expected  # the same ids admitted: every event counted once
