"""Pipeline health for the operations page, from what the process already measures: the
flows' consumer lag and the feed side's feature and vector freshness (the gauges and
histograms `/metrics` exports), the dead letters by reason (the `dlq_reasons` analysis, as
`swipeloop sql` runs it) and the training runs with their skew check (`model_runs`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, get
from litestar.datastructures import State
from prometheus_client import Metric
from prometheus_client.registry import Collector

from api.security import admin_key
from api.services import Services
from swipeloop import analysis
from swipeloop.metrics import CONSUMER_LAG, FEATURE_LAG, VECTOR_LAG

RUNS = 20
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
    """Where the pipeline stands, as this process sees it."""

    lag: list[Lag]  # empty where the flows run in other processes
    freshness: list[Freshness]
    dead_letters: dict[str, Any]  # the dlq_reasons analysis: {"columns", "rows"}
    runs: list[Run]


def consumer_lag(metric: Metric) -> list[Lag]:
    """The lag gauge's samples summed per flow step and topic."""
    totals: dict[tuple[str, str], tuple[int, int]] = {}
    for sample in metric.samples:
        key = (sample.labels["step"], sample.labels["topic"])
        partitions, messages = totals.get(key, (0, 0))
        totals[key] = (partitions + 1, messages + int(sample.value))
    return [Lag(step, topic, p, m) for (step, topic), (p, m) in sorted(totals.items())]


def freshness(metric: Metric, label: str = "") -> list[Freshness]:
    """A histogram's arrivals, mean and bucket-bound quantiles (per value of `label`)."""
    series: dict[str, dict[str, Any]] = {}
    for sample in metric.samples:
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
                what=f"{metric.name} {value}".strip(),
                arrivals=count,
                mean_s=round(part.get("sum", 0.0) / count, 3) if count else None,
                p50_s=_bound(buckets, 0.5 * count) if count else None,
                p99_s=_bound(buckets, 0.99 * count) if count else None,
            )
        )
    return out


def _metric(collector: Collector) -> Metric:
    """The one metric family a gauge or histogram of this process collects."""
    return next(iter(collector.collect()))


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
        return Pipeline(
            lag=consumer_lag(_metric(CONSUMER_LAG)),
            freshness=[
                *freshness(_metric(FEATURE_LAG)),
                *freshness(_metric(VECTOR_LAG), "kind"),
            ],
            dead_letters={"columns": columns, "rows": rows},
            runs=[_run(dict(zip(runs.column_names, row, strict=True))) for row in runs.result_rows],
        )
