"""Running a flow: in its own process (one container per role) or in a thread of `swipeloop up`.

Flows with recovery snapshot their state and source offsets every `flow_epoch_s` into SQLite
files under `data_dir/recovery/<flow>-<broker epoch>`; a restart resumes from the last one.
A memory-only embedded broker gets a new epoch at every start (its offsets restart at 0), so
its flows start a fresh recovery store too.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import pickle
import shutil
import signal
import sqlite3
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from types import FrameType
from typing import Any

from bytewax._bytewax import cli_main, run_main
from bytewax.dataflow import Dataflow
from bytewax.recovery import RecoveryConfig, init_db_dir

from dataflows import embeddings, features, ingest
from swipeloop.metrics import serve_metrics
from swipeloop.settings import Settings

log = logging.getLogger(__name__)

# name -> (build(settings, stop, **options), recovery on)
FLOWS: dict[str, tuple[Callable[..., Dataflow], bool]] = {
    "ingest": (ingest.build_flow, True),
    "features": (features.build_flow, True),
    "embeddings": (embeddings.build_flow, True),
}


def describe(name: str) -> str:
    """The first line of the flow's module docstring."""
    module = FLOWS[name][0].__module__
    doc = sys.modules[module].__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


def recovery_dir(settings: Settings, name: str) -> Path:
    """Where this flow's snapshots live for the current broker."""
    return settings.data_dir / "recovery" / f"{name}-{settings.broker_epoch or 'default'}"


def recovery_config(
    settings: Settings, name: str, path: Path | None = None, partitions: int = 1
) -> RecoveryConfig:
    """The flow's recovery store (`recovery_dir`, or `path`), created on first use with
    `partitions` partitions; the stores of older embedded brokers are removed."""
    if path is None:
        path = recovery_dir(settings, name)
        if settings.broker_epoch:  # an embedded broker's earlier runs are gone with offsets
            for stale in path.parent.glob(f"{name}-*"):
                if stale != path:
                    shutil.rmtree(stale, ignore_errors=True)
    if not any(path.glob("*.sqlite3")):
        path.mkdir(parents=True, exist_ok=True)
        init_db_dir(path, partitions)  # type: ignore[no-untyped-call]
        log.info("%s: created %d recovery partition(s) in %s", name, partitions, path)
    dropped = drop_uncommitted(path)
    if dropped:
        log.info("%s: dropped %d snapshots a killed run left past its last commit", name, dropped)
    return RecoveryConfig(str(path))  # type: ignore[no-untyped-call]


def resume_epoch(db: sqlite3.Connection) -> int | None:
    """The epoch Bytewax resumes from (its own rule: the slowest worker's frontier in the
    last execution, or where that execution itself resumed if it got no further)."""
    last = db.execute(
        "SELECT ex_num, worker_count, resume_epoch FROM exs ORDER BY ex_num DESC LIMIT 1"
    ).fetchone()
    if last is None:
        return None
    ex_num, workers, resumed = last
    fronts = dict(
        db.execute(
            "SELECT worker_index, MAX(worker_frontier) FROM fronts WHERE ex_num = ? "
            "GROUP BY worker_index",
            (ex_num,),
        ).fetchall()
    )
    return int(min(max(fronts.get(w, resumed), resumed) for w in range(workers)))


def drop_uncommitted(path: Path) -> int:
    """Delete the snapshots at or past the resume epoch: a run killed mid-way leaves some,
    and Bytewax would later read them as the newest state of keys that the next run did not
    snapshot again, mixing two runs' states. The next run writes those epochs anew."""
    dropped = 0
    for file in sorted(path.glob("*.sqlite3")):
        with contextlib.closing(sqlite3.connect(file)) as db, db:
            epoch = resume_epoch(db)
            if epoch is not None:
                dropped += db.execute("DELETE FROM snaps WHERE snap_epoch >= ?", (epoch,)).rowcount
    return dropped


def quiet_gc() -> None:
    """Fewer, shorter cyclic collections: what exists at start is frozen out of them, and the
    youngest generation is collected every 50,000 allocations instead of 700. A flow's
    batches allocate many short-lived lists and tuples, and at the default thresholds the
    collector ran often enough to take a fifth of the features flow's time; what a flow keeps
    is mostly numpy arrays and dicts of strings, which the collector does not traverse."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 20)


def run(
    name: str,
    settings: Settings,
    stop: threading.Event | None = None,
    in_thread: bool = False,
    workers: int = 1,
    recovery: Path | None = None,
    **options: Any,
) -> None:
    """Run one flow until its sources end (`stop` set, or drained); blocks. `workers` in this
    process (not in a thread); recovery in `recovery` instead of `recovery_dir`."""
    make, recover = FLOWS[name]
    flow = make(settings, stop, **options)
    quiet_gc()
    kwargs: dict[str, Any] = {"epoch_interval": timedelta(seconds=settings.flow_epoch_s)}
    if recover:
        kwargs["recovery_config"] = recovery_config(settings, name, recovery, workers)
    if in_thread:
        run_main(flow, **kwargs)  # type: ignore[no-untyped-call]  # one worker, this thread
    else:
        cli_main(flow, workers_per_process=workers, **kwargs)  # type: ignore[no-untyped-call]


def run_process(name: str, settings: Settings, **options: Any) -> None:
    """`swipeloop flows run NAME`: run in the foreground; SIGTERM or Ctrl-C stops it cleanly.
    With `flow_api_port`, Bytewax's dataflow API server answers on it: /dataflow (the graph)
    and /metrics (Bytewax's own and this process's: swipeloop.metrics)."""
    stop = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping flow %s after the current batch", signum, name)
        stop.set()

    handlers = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    if settings.flow_api_port:
        os.environ["BYTEWAX_DATAFLOW_API_ENABLED"] = "true"
        os.environ["BYTEWAX_DATAFLOW_API_PORT"] = str(settings.flow_api_port)
        # the server writes the graph it serves to dataflow.json in this directory (by
        # default the working directory): keep it with the flow's data
        cache = settings.data_dir / "dataflow" / name
        cache.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("BYTEWAX_DATAFLOW_API_CACHE_PATH", str(cache))
    serve_metrics(settings, session_gaps=name == "ingest")
    try:
        run(name, settings, stop, **options)
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)


def run_in_thread(
    name: str,
    settings: Settings,
    stop: threading.Event,
    on_error: Callable[[BaseException], None],
) -> threading.Thread:
    """Run a flow in a daemon thread (one process, embedded mode)."""

    def target() -> None:
        try:
            run(name, settings, stop, in_thread=True)
        except BaseException as exc:
            log.exception("dataflow %s stopped with an error", name)
            on_error(exc)

    thread = threading.Thread(target=target, name=f"flow-{name}", daemon=True)
    thread.start()
    return thread


@dataclass(frozen=True)
class FlowStatus:
    """Where one flow's recovery store says it is."""

    name: str
    store: Path
    partitions: int  # recovery partitions (0: never ran here)
    executions: int  # runs that started from this store (restarts included)
    committed_epoch: int | None  # the newest epoch every partition has committed
    snapshot_at: float | None  # when the store was last written (Unix time)
    offsets: dict[str, int]  # "topic:partition" -> the next offset to read, as snapshotted


def status(settings: Settings, name: str) -> FlowStatus:
    """Read `name`'s recovery store (not its running process): its partitions, restarts,
    last committed epoch and the source offsets its last snapshot holds."""
    store = recovery_dir(settings, name)
    files = sorted(store.glob("*.sqlite3"))
    executions, commits, offsets = 0, [], {}
    for file in files:
        with contextlib.closing(sqlite3.connect(f"file:{file}?mode=ro", uri=True)) as db:
            executions = max(executions, db.execute("SELECT COUNT(*) FROM exs").fetchone()[0])
            commits.append(db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()[0])
            rows = db.execute(
                "SELECT state_key, ser_change FROM snaps AS s WHERE ser_change IS NOT NULL "
                "AND state_key LIKE '%:%' AND snap_epoch = (SELECT MAX(snap_epoch) FROM snaps "
                "WHERE step_id = s.step_id AND state_key = s.state_key)"
            ).fetchall()
            for key, blob in rows:
                value = pickle.loads(blob)  # (Bytewax pickles state; this store is our own)
                if isinstance(value, int):
                    offsets[key] = value
    return FlowStatus(
        name,
        store,
        len(files),
        executions,
        None if not commits or None in commits else min(commits),
        max((f.stat().st_mtime for f in files), default=None),
        offsets,
    )
