"""The features flow killed -9 ten times mid-stream ends with the tables of a run that was
never interrupted."""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path
from typing import Any

import pytest

from swipeloop import topics
from swipeloop.broker import EmbeddedBroker
from swipeloop.settings import Settings
from tests.conftest import drain, json_of, produce, role_env, swipeloop_process
from tests.integration.test_features import _READ_TABLES, LATENESS, catalog, stream

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _role(live: Settings, data_dir: Path, database: str) -> dict[str, str]:
    return role_env(live, data_dir, database, feature_lateness_s=str(LATENESS))


def _tables(env: dict[str, str]) -> dict[str, Any]:
    return dict(json_of(_READ_TABLES, env))


def test_kill_9_mid_stream_ends_with_the_features_of_an_uninterrupted_run(
    settings: Settings, broker: EmbeddedBroker, tmp_path: Path
) -> None:
    live = settings.with_(kafka_bootstrap=broker.bootstrap, broker_epoch=broker.epoch)
    topics.ensure_topics(live)
    rng = random.Random(11)
    events, _ = stream(rng, 40_000)
    chunks = [events[i : i + 3_000] for i in range(0, len(events), 3_000)]  # 14
    produce(live, catalog(rng), chunks[0])

    calm = _role(live, tmp_path / "calm", "calm")
    killed = _role(live, tmp_path / "killed", "killed")
    for env in (calm, killed):
        assert swipeloop_process("migrate", env=env).wait(60) == 0
    # Killed ten times while events keep coming, with recovery snapshots every 0.3 s: each
    # restart resumes from its last snapshot, mid-stream.
    for chunk in chunks[1:11]:
        flow = swipeloop_process("flows", "run", "features", env=killed)
        time.sleep(2.5)  # start-up
        produce(live, [], chunk)
        time.sleep(rng.uniform(0.3, 1.5))
        flow.send_signal(signal.SIGKILL)
        flow.communicate(timeout=10)
    for chunk in chunks[11:]:
        produce(live, [], chunk)
    drain("features", killed)
    drain("features", calm)  # both runs write their own database on one chdb path, in turn

    expected, got = _tables(calm), _tables(killed)
    assert len(expected["item_features"]) > 1000 and expected["late_events"] > 0
    assert got["late_events"] == expected["late_events"]
    for table in ("item_features", "creator_features", "user_features", "user_affinity"):
        assert len(got[table]) == len(expected[table]), table
        for mine, theirs in zip(got[table], expected[table], strict=True):
            keys = [v for v in theirs if not isinstance(v, float)]
            assert [v for v in mine if not isinstance(v, float)] == keys, table
            values = [v for v in theirs if isinstance(v, float)]
            assert [v for v in mine if isinstance(v, float)] == pytest.approx(values, abs=1e-9), (
                keys
            )
