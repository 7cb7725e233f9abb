"""The console's pipeline figures as a real Prometheus (Debian's) holds them: two scrape
targets stand for the flow processes and API replicas of a production stack, each exporting
its share of the consumer lag and of the freshness histograms; the console shows them
together, follows them as they change, and says so plainly when Prometheus is gone."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, Gauge, Histogram, start_http_server

from api.console.pipeline import Lag, freshness, measured
from swipeloop.broker import free_port
from swipeloop.metrics import FRESHNESS_BUCKETS
from swipeloop.settings import Settings
from tests.conftest import wait_until

pytestmark = pytest.mark.integration

LAG = "swipeloop_consumer_lag"
FEATURES, VECTORS = "swipeloop_feature_lag_seconds", "swipeloop_vector_lag_seconds"


class Target:
    """A role's /metrics on 127.0.0.1: the metric families our flows and API export."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.lag = Gauge(LAG, "", ["step", "topic", "partition"], registry=self.registry)
        self.features = Histogram(FEATURES, "", buckets=FRESHNESS_BUCKETS, registry=self.registry)
        self.vectors = Histogram(
            VECTORS, "", ["kind"], buckets=FRESHNESS_BUCKETS, registry=self.registry
        )
        self.port = free_port()
        self.server, _ = start_http_server(self.port, "127.0.0.1", self.registry)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def targets() -> Iterator[list[Target]]:
    made = [Target(), Target()]
    yield made
    for target in made:
        target.close()


def start_prometheus(tmp_path: Path, targets: list[Target]) -> tuple[subprocess.Popen[bytes], str]:
    binary = shutil.which("prometheus")
    assert binary, "Prometheus is missing: `bash .ci/deps.sh` installs Debian's prometheus"
    config = tmp_path / "prometheus.yml"
    scraped = ", ".join(f'"127.0.0.1:{t.port}"' for t in targets)
    config.write_text(
        "global: {scrape_interval: 1s}\n"
        f"scrape_configs: [{{job_name: roles, static_configs: [{{targets: [{scraped}]}}]}}]\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return process, f"http://127.0.0.1:{port}"


def test_lag_and_freshness_of_every_target_as_prometheus_scraped_them(
    tmp_path: Path, targets: list[Target]
) -> None:
    flow, replica = targets
    flow.lag.labels("ingest.source", "events", "0").set(5)
    flow.lag.labels("ingest.source", "events", "1").set(7)
    replica.lag.labels("features.source", "events", "0").set(3)
    for seconds in (0.2, 0.3):
        flow.features.observe(seconds)
    replica.features.observe(4.0)
    replica.vectors.labels("user").observe(0.7)

    prometheus, url = start_prometheus(tmp_path, targets)
    try:
        settings = Settings(prometheus_url=url)
        wait_until(lambda: len(measured(settings)[2]) == 2, 60, "both targets' lag in Prometheus")
        source, problem, lag, fresh = measured(settings)
        assert (source, problem) == (f"Prometheus at {url}", None)
        assert lag == [
            Lag("features.source", "events", 1, 3),
            Lag("ingest.source", "events", 2, 12),
        ]
        # the features histogram as one process that saw every arrival would show it
        one = Histogram("one", "", buckets=FRESHNESS_BUCKETS, registry=CollectorRegistry())
        for seconds in (0.2, 0.3, 4.0):
            one.observe(seconds)
        (expected,) = freshness("one", list(next(iter(one.collect())).samples))
        features = next(f for f in fresh if f.what == FEATURES)
        assert (features.arrivals, features.mean_s, features.p50_s, features.p99_s) == (
            expected.arrivals,
            expected.mean_s,
            expected.p50_s,
            expected.p99_s,
        )
        assert [f.arrivals for f in fresh if f.what == f"{VECTORS} user"] == [1]

        flow.lag.labels("ingest.source", "events", "1").set(0)  # the flow caught up
        wait_until(
            lambda: Lag("ingest.source", "events", 2, 5) in measured(settings)[2],
            30,
            "the flow's new lag in Prometheus",
        )
    finally:
        prometheus.terminate()
        prometheus.wait(30)

    source, problem, lag, fresh = measured(settings)
    assert problem and problem.startswith(f"Prometheus at {url}:"), problem
    assert not lag and not fresh
    with pytest.raises(httpx.ConnectError):  # (gone, as the problem says)
        httpx.get(url)
