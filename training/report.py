"""A training run's report: the registry version it made, the offline metrics, the gate's verdict,
the skew check and the timings.

One struct for every reader: `train` returns it, the admin route answers with it, `swipeloop
train` prints it, the model's registry row (its `report`) and the run's `model_runs` row are
written from it. Its JSON is flat: the registry's `ModelRecord` fields, then the run's own.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
from clickhouse_connect.driver.client import Client

from training.registry import ModelRecord
from training.skew import Skew


class Metrics(msgspec.Struct, frozen=True):
    """One ranker's offline metrics on the holdout (None: the holdout cannot judge it)."""

    ndcg_at_10: float | None
    auc: float | None
    watch_s_at_10: float | None


class Evaluation(msgspec.Struct, frozen=True):
    """The three rankers judged on the same holdout."""

    candidate: Metrics
    production: Metrics | None  # none serves, or it cannot score this holdout
    popularity: Metrics


class TrainingReport(ModelRecord, frozen=True, kw_only=True):
    """One training run: its registry record, the gate's verdict and what each part took."""

    metrics: Evaluation
    promoted: bool
    reason: str
    canary: bool = False  # it passed the gate and serves a share of users first (training.canary)
    production_version: str  # "" when no model served
    holdout_rows: int
    query_s: float
    train_s: float
    eval_s: float
    skew: Skew
    skew_s: float


def record(client: Client, report: TrainingReport) -> None:
    """A `model_runs` row of a run's report."""
    row: dict[str, Any] = {
        "run_at": datetime.now(UTC),
        "version": report.version,
        "promoted": int(report.promoted),
        "reason": report.reason,
        "production_version": report.production_version,
        "rows": report.rows,
        "holdout_rows": report.holdout_rows,
        "query_s": report.query_s,
        "data_from": datetime.fromisoformat(report.data_from),
        "data_to": datetime.fromisoformat(report.data_to),
        "train_s": report.train_s,
        "eval_s": report.eval_s,
        "skew_sampled": report.skew.sampled,
        "skew_mismatch_rate": report.skew.mismatch_rate,
    }
    evaluation = report.metrics
    for metrics, prefix in (
        (evaluation.candidate, ""),
        (evaluation.production, "production_"),
        (evaluation.popularity, "popularity_"),
    ):
        for name in Metrics.__struct_fields__:
            row[prefix + name] = None if metrics is None else getattr(metrics, name)
    client.insert("model_runs", [list(row.values())], column_names=list(row))
