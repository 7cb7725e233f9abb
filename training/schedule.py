"""The nightly schedule: retrain the ranker at the times of a cron expression."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from croniter import croniter

from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
from training.ranker import NotEnoughData, train
from training.report import TrainingReport

log = logging.getLogger(__name__)


def train_once(settings: Settings) -> TrainingReport | None:
    """One training run; too little data is logged, not raised (the schedule keeps going)."""
    try:
        report = train(connect(settings), settings, say=log.info)
    except NotEnoughData as exc:
        log.warning("training skipped: %s", exc)
        return None
    log.info(
        "trained model %s on %d rows: %s (%s)",
        report.version,
        report.rows,
        "promoted" if report.promoted else "not promoted",
        report.reason,
    )
    return report


def run_schedule(settings: Settings, stop: threading.Event) -> None:
    """Sleep until each cron time, train, repeat until stopped."""
    schedule = croniter(settings.train_cron, datetime.now(UTC))
    while not stop.is_set():
        due: datetime = schedule.get_next(datetime)
        log.info("next training run at %s", due.isoformat())
        if stop.wait(max((due - datetime.now(UTC)).total_seconds(), 0)):
            return
        try:
            train_once(settings)
        except Exception:
            log.exception("training run failed; the current model keeps serving")
