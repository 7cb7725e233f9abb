"""The features flow killed -9 ten times mid-stream ends with the tables of a run that was
never interrupted."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest

from swipeloop.settings import Settings
from tests.conftest import json_of, role_env
from tests.support.feature_stream import LATENESS, READ_TABLES, catalog, stream
from tests.support.flow_processes import kill_9_mid_stream

pytestmark = [pytest.mark.integration, pytest.mark.faults]


def _role(live: Settings, data_dir: Path, database: str) -> dict[str, str]:
    return role_env(live, data_dir, database, feature_lateness_s=str(LATENESS))


def _tables(env: dict[str, str]) -> dict[str, Any]:
    return dict(json_of(READ_TABLES, env))


def test_kill_9_mid_stream_ends_with_the_features_of_an_uninterrupted_run(
    live: Settings, tmp_path: Path
) -> None:
    rng = random.Random(11)
    events, _ = stream(rng, 40_000)
    items = catalog(rng)
    calm = _role(live, tmp_path / "calm", "calm")
    killed = _role(live, tmp_path / "killed", "killed")
    kill_9_mid_stream(live, "features", (calm, killed), items, events, rng)

    expected, got = _tables(calm), _tables(killed)
    assert len(expected["item_features"]) > 1000 and expected["late_events"] > 0
    assert got["late_events"] == expected["late_events"]
    for table in ("item_features", "creator_features", "user_features", "user_affinity"):
        # counters on `on_grid` add and subtract exactly: a recovered run writes the same bits
        assert got[table] == expected[table], table
