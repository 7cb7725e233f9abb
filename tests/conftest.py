"""Shared fixtures: one chdb engine path per test process (chdb's rule), a database per test."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from swipeloop.broker import EmbeddedBroker, free_port
from swipeloop.settings import Settings


@pytest.fixture(scope="session")
def chdb_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The one embedded ClickHouse data path this test process may open."""
    return tmp_path_factory.mktemp("clickhouse")


@pytest.fixture
def broker() -> Iterator[EmbeddedBroker]:
    """A fresh memory-only Tansu broker (starts in ~0.1 s)."""
    with EmbeddedBroker() as running:
        yield running


@pytest.fixture
def settings(tmp_path: Path, chdb_path: Path) -> Settings:
    """Settings of an isolated test: own database, own data dir, free API port."""
    return Settings(
        clickhouse_url=f"chdb://{chdb_path}",
        clickhouse_database=f"t_{uuid.uuid4().hex[:10]}",
        data_dir=tmp_path,
        api_port=free_port(),
        seed_items=0,
        feature_lateness_s=2,
        publish_interval_s=0.5,
        model_poll_s=0.5,
    )


def swipeloop_process(*args: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """`swipeloop ARGS` in its own process (its own chdb path: one per process), stderr kept."""
    return subprocess.Popen(
        [sys.executable, "-m", "swipeloop.cli", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_until(check: Callable[[], bool], timeout_s: float = 30.0, what: str = "condition") -> None:
    """Poll until check() is true; fail the test with `what` after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")
