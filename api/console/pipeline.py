"""Pipeline health for the operations page, from what is already measured: the flows'
consumer lag and the feed side's feature and vector freshness (the gauges and histograms
`/metrics` exports: this process's own, or with `prometheus_url` set, every role's as that
Prometheus scraped them), the dead letters by reason (the `dlq_reasons` analysis, as
`swipeloop sql` runs it) and the training runs with their skew check (`model_runs`)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from prometheus_client import Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample

from api.console import prometheus
from api.security import admin_key
from api.services import Services
from swipeloop import analysis
from swipeloop.metrics import CONSUMER_LAG, FEATURE_LAG, VECTOR_LAG
from swipeloop.settings import Settings

RUNS = 20
FRESHNESS = (FEATURE_LAG, ""), (VECTOR_LAG, "kind")  # histogram, the label it is split by
RUNS_SQL = """
SELECT run_at, version, promoted, reason, production_version, rows, ndcg_at_10,
       production_ndcg_at_10, auc, skew_sampled, skew_mismatch_rate
FROM model_runs
ORDER BY run_at DESC
LIMIT {limit:UInt32}
"""


class Lag(msgspec.Struct, frozen=True):
    """Messages a flow's source has yet to read from a topic (all its partitions)."""

    step: str
    topic: str
    partitions: int
    messages: int


class Freshness(msgspec.Struct, frozen=True):
    """A freshness histogram of this process: how many arrivals, their mean, and the bucket
    bounds that hold half and 99 % of them (None: none yet, or past the last bucket)."""

    what: str
    arrivals: int
    mean_s: float | None
    p50_s: float | None
    p99_s: float | None


class Run(msgspec.Struct, frozen=True, kw_only=True):
    """One training run: the candidate, the gate's verdict, its metrics and skew."""

    run_at: datetime
    version: str
    promoted: bool
    reason: str
    production_version: str
    rows: int
    ndcg_at_10: float | None
    production_ndcg_at_10: float | None
    auc: float | None
    skew_sampled: int
    skew_mismatch_rate: float | None


class Pipeline(msgspec.Struct, frozen=True, kw_only=True):
    """Where the pipeline stands, as this process or the stack's Prometheus sees it."""

    measured_by: str  # "this process", or the Prometheus the figures were read from
    problem: str | None  # why lag and freshness are missing (that Prometheus did not answer)
    lag: list[Lag]  # empty where no flow runs in what measured it
    freshness: list[Freshness]
    dead_letters: dict[str, Any]  # the dlq_reasons analysis: {"columns", "rows"}
    runs: list[Run]


def consumer_lag(samples: Iterable[Sample]) -> list[Lag]:
    """The lag gauge's samples summed per flow step and topic."""
    totals: dict[tuple[str, str], tuple[int, int]] = {}
    for sample in samples:
        key = (sample.labels["step"], sample.labels["topic"])
        partitions, messages = totals.get(key, (0, 0))
        totals[key] = (partitions + 1, messages + int(sample.value))
    return [Lag(step, topic, p, m) for (step, topic), (p, m) in sorted(totals.items())]


def freshness(name: str, samples: Iterable[Sample], label: str = "") -> list[Freshness]:
    """Histogram `name`'s arrivals, mean and bucket-bound quantiles (per value of `label`)."""
    series: dict[str, dict[str, Any]] = {}
    for sample in samples:
        if not sample.name.startswith(name):
            continue
        part = series.setdefault(sample.labels.get(label, ""), {"buckets": []})
        if sample.name.endswith("_bucket"):
            part["buckets"].append((float(sample.labels["le"]), sample.value))
        elif sample.name.endswith("_count"):
            part["count"] = int(sample.value)
        elif sample.name.endswith("_sum"):
            part["sum"] = sample.value
    out = []
    for value, part in sorted(series.items()):
        count = part.get("count", 0)
        buckets = sorted(part["buckets"])
        out.append(
            Freshness(
                what=f"{name} {value}".strip(),
                arrivals=count,
                mean_s=round(part.get("sum", 0.0) / count, 3) if count else None,
                p50_s=_bound(buckets, 0.5 * count) if count else None,
                p99_s=_bound(buckets, 0.99 * count) if count else None,
            )
        )
    return out


def measured(settings: Settings) -> tuple[str, str | None, list[Lag], list[Freshness]]:
    """Who measured, what went wrong, consumer lag and freshness: from the Prometheus of
    `prometheus_url` (every flow process and API replica it scrapes), else this process."""
    if not settings.prometheus_url:
        lag, histograms = _samples(CONSUMER_LAG), [s for h, _ in FRESHNESS for s in _samples(h)]
        return "this process", None, consumer_lag(lag), _freshness(histograms)
    url = settings.prometheus_url
    names = "|".join(_family(h).name for h, _ in FRESHNESS)
    try:
        lag = prometheus.instant(url, _family(CONSUMER_LAG).name)
        histograms = prometheus.instant(url, f'{{__name__=~"({names})_(bucket|count|sum)"}}')
    except prometheus.Unreachable as exc:
        return f"Prometheus at {url}", str(exc), [], []
    lag = prometheus.merged(lag, same="max")  # a partition is one process's
    histograms = prometheus.merged(histograms)  # arrivals at every replica, together
    return f"Prometheus at {url}", None, consumer_lag(lag), _freshness(histograms)


def _freshness(samples: list[Sample]) -> list[Freshness]:
    return [f for h, label in FRESHNESS for f in freshness(_family(h).name, samples, label)]


def _family(collector: Collector) -> Metric:
    """The one metric family a gauge or histogram of this process collects."""
    return next(iter(collector.collect()))


def _samples(collector: Collector) -> list[Sample]:
    return list(_family(collector).samples)


def _run(row: dict[str, Any]) -> Run:
    return Run(**{**row, "promoted": bool(row["promoted"])})


def _bound(buckets: list[tuple[float, float]], rank: float) -> float | None:
    """The upper bound of the first cumulative bucket that holds `rank` arrivals."""
    bound = next((le for le, cumulative in buckets if cumulative >= rank), None)
    return None if bound is None or bound == float("inf") else bound


class PipelineController(Controller):
    """GET /console/api/pipeline (admin key, as /admin)."""

    path = "/console/api"
    guards = [admin_key]
    include_in_schema = False

    @get("/pipeline", sync_to_thread=True)
    def pipeline(self, state: State) -> Pipeline:
        """Consumer lag, freshness, dead letters of the last day and the last training runs."""
        services: Services = state.services
        with services.clickhouse() as client:
            columns, rows = analysis.run(client, analysis.load("dlq_reasons"), {"hours": "24"})
            runs = client.query(RUNS_SQL, parameters={"limit": RUNS})
        source, problem, lag, fresh = measured(services.settings)
        return Pipeline(
            measured_by=source,
            problem=problem,
            lag=lag,
            freshness=fresh,
            dead_letters={"columns": columns, "rows": rows},
            runs=[_run(dict(zip(runs.column_names, row, strict=True))) for row in runs.result_rows],
        )
