"""The nightly schedule: retrain the ranker at the times of a cron expression."""

from __future__ import annotations

import logging
import threading
from datetime import UTC, datetime

from croniter import croniter

from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
from training import canary
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


def judge_canary(settings: Settings) -> canary.Verdict | None:
    """Judge the running canary, if any; a failure is logged (the next check tries again)."""
    try:
        return canary.judge(connect(settings), settings)
    except Exception:
        log.exception("judging the canary failed; it keeps serving its share")
        return None


def run_schedule(settings: Settings, stop: threading.Event) -> None:
    """Sleep until each cron time, train, repeat until stopped; between runs, judge the
    running canary every `canary_check_s`."""
    schedule = croniter(settings.train_cron, datetime.now(UTC))
    due: datetime = schedule.get_next(datetime)
    log.info("next training run at %s", due.isoformat())
    while not stop.is_set():
        wait = min((due - datetime.now(UTC)).total_seconds(), settings.canary_check_s)
        if stop.wait(max(wait, 0)):
            return
        if datetime.now(UTC) >= due:
            try:
                train_once(settings)
            except Exception:
                log.exception("training run failed; the current model keeps serving")
            due = schedule.get_next(datetime)
            log.info("next training run at %s", due.isoformat())
        judge_canary(settings)
