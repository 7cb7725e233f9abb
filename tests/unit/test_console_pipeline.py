"""The console's pipeline figures from metric samples: consumer lag per flow step and topic,
freshness quantiles from histogram buckets, and several targets' series made one."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Histogram
from prometheus_client.samples import Sample

from api.console.pipeline import Freshness, Lag, consumer_lag, freshness
from api.console.prometheus import merged
from swipeloop.metrics import FRESHNESS_BUCKETS
from swipeloop.settings import Settings, SettingsError


def lag(step: str, topic: str, partition: int, value: float) -> Sample:
    labels = {"step": step, "topic": topic, "partition": str(partition)}
    return Sample("swipeloop_consumer_lag", labels, value)


def histogram_samples(values: list[float], name: str = "lag_seconds") -> list[Sample]:
    registry = CollectorRegistry()
    histogram = Histogram(name, "", buckets=FRESHNESS_BUCKETS, registry=registry)
    for value in values:
        histogram.observe(value)
    return [s for family in registry.collect() for s in family.samples]


def test_lag_adds_up_partitions_per_step_and_topic() -> None:
    samples = [lag("in", "events", 0, 5), lag("in", "events", 1, 7), lag("in", "items", 0, 1)]
    assert consumer_lag(samples) == [Lag("in", "events", 2, 12), Lag("in", "items", 1, 1)]
    assert consumer_lag([]) == []


def test_freshness_reads_arrivals_mean_and_the_buckets_that_hold_half_and_most() -> None:
    (fresh,) = freshness("lag_seconds", histogram_samples([0.2, 0.3, 0.3, 4.0]))
    assert fresh == Freshness("lag_seconds", 4, 1.2, 0.5, 5.0)
    (late,) = freshness("lag_seconds", histogram_samples([400.0]))  # past the last bound
    assert late.p50_s is None and late.arrivals == 1
    (none,) = freshness("lag_seconds", histogram_samples([]))
    assert none.arrivals == 0 and none.mean_s is none.p50_s is None


def test_histograms_of_several_targets_merge_into_the_one_that_saw_everything() -> None:
    first, second = histogram_samples([0.2, 0.3]), histogram_samples([4.0, 0.05])
    together = freshness("lag_seconds", merged([*first, *second]))
    assert together == freshness("lag_seconds", histogram_samples([0.2, 0.3, 4.0, 0.05]))


def test_a_gauge_two_targets_reported_counts_once_at_its_largest() -> None:
    twice = [lag("in", "events", 0, 5), lag("in", "events", 0, 9), lag("in", "events", 1, 1)]
    assert consumer_lag(merged(twice, same="max")) == [Lag("in", "events", 2, 10)]


def test_the_prometheus_address_is_checked_with_its_variable_named() -> None:
    with pytest.raises(SettingsError, match="SWIPELOOP_PROMETHEUS_URL='prometheus:9090'"):
        Settings.from_env({"SWIPELOOP_PROMETHEUS_URL": "prometheus:9090"})
    assert Settings(prometheus_url="http://prometheus:9090").prometheus_url
