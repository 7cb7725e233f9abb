"""The ranker: training set from ClickHouse SQL, LightGBM lambdarank, offline gate, registry.

training_set   sql/training/training_set.sql → features as served, graded relevance,
               watch seconds, grouped by request (Arrow → numpy, no Python row loop)
split          time-ordered: the newest `HOLDOUT` of requests is the holdout
fit            lambdarank on the older part (one query = one feed request)
evaluate       candidate, production model and a popularity baseline on the same holdout:
               NDCG@10, AUC, watch seconds of the top 10
gate           promote only when the candidate beats production by `promote_margin`
skew           a sample of impressions' logged features against their recomputation from
               the events (training.skew); the mismatch rate goes in the report
record         registry version with its report (ClickHouse, training.registry), a
               `model_runs` row (training.report), the promotion
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import msgspec
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from models.features.ranking import FEATURE_NAMES, logged_rows
from models.rows import run_starts
from swipeloop import SQL
from swipeloop.arrays import Float32s, Floats
from swipeloop.settings import Settings
from training import canary, registry
from training.evaluation import auc, ndcg_at_k, watch_at_k
from training.registry import ModelRecord
from training.registry_import import adopt
from training.report import Evaluation, Metrics, TrainingReport, record
from training.skew import skew_check

TRAINING_SQL = SQL / "training" / "training_set.sql"
MIN_ROWS = 50
HOLDOUT = 0.2  # the newest share of requests held out for the gate
POPULARITY = FEATURE_NAMES.index("plays_24h")  # the baseline ranks by plays in the last day
PARAMS: dict[str, Any] = {
    "objective": "lambdarank",
    "lambdarank_truncation_level": 20,  # a page is 20 items
    "learning_rate": 0.1,
    "num_leaves": 31,
    "min_data_in_leaf": 10,
    "verbose": -1,
    "num_threads": 2,
    "seed": 7,
}
ROUNDS = 100
PROGRESS_EVERY = 25  # boosting rounds between progress lines


class NotEnoughData(RuntimeError):
    """Too few labelled impressions (or only one outcome) to learn anything."""


@dataclass(frozen=True)
class Ranker:
    """A loaded model: its version and a predict function over feature rows."""

    version: str
    booster: lgb.Booster

    def predict(self, rows: Float32s) -> npt.NDArray[np.float64]:
        """Scores for a matrix of ranking features (one row per candidate)."""
        return np.asarray(self.booster.predict(rows, num_threads=1), dtype=np.float64)

    def contributions(self, rows: Float32s) -> npt.NDArray[np.float64]:
        """Each feature's contribution to each row's raw score (SHAP values; the last
        column is the model's expected value)."""
        out = self.booster.predict(rows, pred_contrib=True, num_threads=1)
        return np.asarray(out, dtype=np.float64)


@dataclass(frozen=True)
class Impressions:
    """Labelled impressions, rows of one request consecutive, oldest request first."""

    features: Float32s
    relevance: npt.NDArray[np.int32]
    labels: npt.NDArray[np.int8]
    watch_s: Floats
    groups: npt.NDArray[np.int64]  # rows per request, in order
    served: list[datetime]  # per request

    def __len__(self) -> int:
        return len(self.labels)

    def requests(self, start: int, stop: int) -> Impressions:
        """Requests [start, stop) with their rows."""
        bounds = np.concatenate([[0], np.cumsum(self.groups)])
        a, b = int(bounds[start]), int(bounds[stop])
        return Impressions(
            self.features[a:b],
            self.relevance[a:b],
            self.labels[a:b],
            self.watch_s[a:b],
            self.groups[start:stop],
            self.served[start:stop],
        )


def training_set(client: Client, settings: Settings, now: datetime | None = None) -> Impressions:
    """Every labelled impression of the last `training_window_days`, grouped by request,
    oldest first."""
    since = (now or datetime.now(UTC)) - timedelta(days=settings.training_window_days)
    table = client.query_arrow(
        TRAINING_SQL.read_text(),
        parameters={
            "label_window_s": settings.label_window_s,
            "n_features": len(FEATURE_NAMES),
            "since": since,
        },
    )
    return from_arrow(table)


def from_arrow(table: pa.Table) -> Impressions:
    """The training query's result as arrays."""
    requests = table.column("request_id").to_numpy(zero_copy_only=False)
    starts = run_starts(requests) if len(requests) else np.zeros(0, np.int64)
    groups = np.diff(np.r_[starts, len(requests)]).astype(np.int64)
    served = table.column("served_at").to_pylist()
    return Impressions(
        logged_rows(table.column("features")),
        table.column("relevance").to_numpy().astype(np.int32),
        table.column("label").to_numpy().astype(np.int8),
        table.column("watch_s").to_numpy().astype(np.float64),
        groups,
        [served[int(i)] for i in starts],
    )


def fit(data: Impressions, say: Callable[[str], None] | None = None) -> lgb.Booster:
    """Lambdarank on graded relevance, one query per feed request; `say` hears the rounds."""
    if len(data) < MIN_ROWS or data.labels.min() == data.labels.max():
        raise NotEnoughData(
            f"{len(data)} labelled impressions, {int(data.labels.sum())} positive: need "
            f">= {MIN_ROWS} with both outcomes (run `swipeloop simulate` first)"
        )
    dataset = lgb.Dataset(
        data.features, data.relevance, group=data.groups, feature_name=list(FEATURE_NAMES)
    )
    callbacks = []
    if say is not None:

        def progress(env: lgb.callback.CallbackEnv) -> None:
            if (env.iteration + 1) % PROGRESS_EVERY == 0:
                say(f"boosting round {env.iteration + 1}/{ROUNDS}")

        callbacks.append(progress)
    return lgb.train(PARAMS, dataset, num_boost_round=ROUNDS, callbacks=callbacks)


def evaluate(scores: Floats, holdout: Impressions) -> Metrics:
    """The offline metrics of one ranker's scores on the holdout."""
    return Metrics(
        ndcg_at_10=ndcg_at_k(holdout.groups, holdout.relevance.astype(np.float64), scores),
        auc=auc(holdout.labels, scores),
        watch_s_at_10=watch_at_k(holdout.groups, holdout.watch_s, scores),
    )


def gate(candidate: Metrics, production: Metrics | None, margin: float) -> tuple[bool, str]:
    """Whether the candidate may serve, and why."""
    ours = candidate.ndcg_at_10
    if production is None:
        return True, "no model in production"
    if ours is None:
        return False, "the holdout has no relevant impressions to judge by"
    theirs = production.ndcg_at_10
    if theirs is None:
        return True, f"NDCG@10 {ours:.4f}; production cannot be judged on this holdout"
    if ours >= theirs + margin:
        return True, f"NDCG@10 {ours:.4f} >= production {theirs:.4f} + margin {margin}"
    return False, f"NDCG@10 {ours:.4f} < production {theirs:.4f} + margin {margin}"


def train(client: Client, settings: Settings, say: Callable[[str], None] = print) -> TrainingReport:
    """Build the training set, fit a candidate, judge it against production and popularity
    on the newest requests, record the run, promote if it wins. Returns the run's report."""
    adopt(client, settings.models_dir)  # an old models directory first: its model serves
    say("building the training set in ClickHouse")
    started = time.perf_counter()
    data = training_set(client, settings)
    query_s = time.perf_counter() - started
    cut = len(data.groups) - max(1, int(len(data.groups) * HOLDOUT))
    older, holdout = data.requests(0, cut), data.requests(cut, len(data.groups))
    say(f"{len(data)} impressions in {len(data.groups)} requests; fitting LightGBM lambdarank")
    started = time.perf_counter()
    booster = fit(older, say)
    train_s = time.perf_counter() - started
    say(f"evaluating on the newest {len(holdout)} impressions")
    started = time.perf_counter()
    current = registry.production(client)
    candidate = evaluate(_scores(booster, holdout.features), holdout)
    serving = None
    if current:
        try:
            serving = evaluate(
                _scores(registry.load(client, settings.models_dir, current), holdout.features),
                holdout,
            )
        except registry.RegistryError as exc:  # e.g. trained on other features: not comparable
            say(f"production model {current} cannot score this holdout ({exc}); judged alone")
    popularity = evaluate(holdout.features[:, POPULARITY].astype(np.float64), holdout)
    metrics = Evaluation(candidate, serving, popularity)
    eval_s = time.perf_counter() - started
    promoted, reason = gate(candidate, serving, settings.promote_margin)
    say("checking a sample of served features against the events (skew)")
    started = time.perf_counter()
    skew = skew_check(client)
    skew_s = time.perf_counter() - started
    made = registry.artefact(
        booster,
        len(older),
        int(older.labels.sum()),
        candidate.auc,
        data.served[0],
        data.served[-1],
        msgspec.to_builtins(metrics),
    )
    info = made.info
    record_of = {name: getattr(info, name) for name in ModelRecord.__struct_fields__}
    report = TrainingReport(
        **record_of,
        metrics=metrics,
        promoted=promoted,
        reason=reason,
        production_version=current or "",
        holdout_rows=len(holdout),
        query_s=round(query_s, 3),
        train_s=round(train_s, 3),
        eval_s=round(eval_s, 3),
        skew=skew,
        skew_s=round(skew_s, 3),
    )
    if promoted and settings.canary_share and current:  # live sessions decide (a canary)
        report = msgspec.structs.replace(
            report,
            promoted=False,
            canary=True,
            reason=f"canary on {settings.canary_share} % of users: {reason}",
        )
    registry.save(client, made, json.dumps(msgspec.to_builtins(report), indent=2))
    record(client, report)
    if report.canary:
        canary.start(client, info.version, settings.canary_share, reason)
    elif promoted:
        registry.promote(client, info.version, reason)
    registry.prune(client, settings.models_dir)  # rejected candidates count against the limit too
    verdict = "canary" if report.canary else "promoted" if promoted else "not promoted"
    say(f"model {info.version}: {verdict} ({report.reason})")
    return report


def load(client: Client, cache: Path, version: str) -> Ranker:
    """One registry version, ready to score (`cache`: this host's models directory)."""
    return Ranker(version, registry.load(client, cache, version))


def _scores(booster: lgb.Booster, features: Float32s) -> Floats:
    return np.asarray(booster.predict(features, num_threads=2), dtype=np.float64)
