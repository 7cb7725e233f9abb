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
from dataflows.catalog import Catalog
from dataflows.store_reader import read_parts
from swipeloop.metrics import serve_metrics
from swipeloop.settings import Settings

log = logging.getLogger(__name__)

# name -> (build(settings, stop, **options), recovery on, reads the item catalog)
FLOWS: dict[str, tuple[Callable[..., Dataflow], bool, bool]] = {
    "ingest": (ingest.build_flow, True, False),
    "features": (features.build_flow, True, True),
    "embeddings": (embeddings.build_flow, True, True),
}


def describe(name: str) -> str:
    """The first line of the flow's module docstring."""
    module = FLOWS[name][0].__module__
    doc = sys.modules[module].__doc__ or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""


class PeerLost(RuntimeError):
    """A process of the flow's cluster stopped, so the whole cluster did."""


class ClusterShapeError(RuntimeError):
    """A recovery store made for another cluster shape (processes x workers)."""


def recovery_dir(settings: Settings, name: str) -> Path:
    """Where this process's snapshots of the flow live for the current broker (in a cluster,
    each process keeps its own workers' partitions: a folder per process)."""
    store = settings.data_dir / "recovery" / f"{name}-{settings.broker_epoch or 'default'}"
    if settings.flow_processes > 1:
        return store / f"process-{settings.flow_process_id}-of-{settings.flow_processes}"
    return store


def recovery_parts(settings: Settings) -> range:
    """The recovery partitions this process keeps: one per worker of the cluster, numbered
    in process order (Bytewax routes each key's snapshots to the worker holding its part)."""
    workers = settings.flow_workers
    return range(settings.flow_process_id * workers, (settings.flow_process_id + 1) * workers)


def recovery_config(settings: Settings, name: str, path: Path | None = None) -> RecoveryConfig:
    """The flow's recovery store (`recovery_dir`, or `path`), created on first use with a
    partition per worker of the cluster, of which this process keeps its own; the stores of
    older embedded brokers are removed."""
    if path is None:
        path = recovery_dir(settings, name)
        if settings.broker_epoch:  # an embedded broker's earlier runs are gone with offsets
            top = settings.data_dir / "recovery"
            for stale in [*top.glob(f"{name}-*"), *top.glob(f".{name}-*.making")]:
                if stale not in (path, *path.parents):
                    shutil.rmtree(stale, ignore_errors=True)
    mine = recovery_parts(settings)
    if not any(path.glob("*.sqlite3")):
        _create_parts(path, settings.flow_processes * settings.flow_workers, mine)
        log.info("%s: created recovery partitions %s in %s", name, list(mine), path)
    elif settings.flow_processes > 1:
        found = sorted(_part_number(f) for f in path.glob("part-*.sqlite3"))
        if found != list(mine):
            raise ClusterShapeError(
                f"{path} holds recovery partitions {found}, but process "
                f"{settings.flow_process_id} of {settings.flow_processes} with "
                f"{settings.flow_workers} worker(s) keeps {list(mine)}: it was made for another "
                "cluster shape (keep the shape, or start the flow from a new store)"
            )
    dropped = drop_uncommitted(path)
    if dropped:
        log.info("%s: dropped %d snapshots a killed run left past its last commit", name, dropped)
    return RecoveryConfig(str(path))  # type: ignore[no-untyped-call]


def _create_parts(path: Path, count: int, mine: range) -> None:
    """`path` with this process's partitions of a store of `count`, made whole beside it and
    then renamed into place: a reader (`status`) or a process killed half-way never sees
    another process's partition in it, or only some of its own."""
    making = path.parent / f".{path.name}.making"
    shutil.rmtree(making, ignore_errors=True)  # what a process killed while making it left
    making.mkdir(parents=True)
    init_db_dir(making, count)  # type: ignore[no-untyped-call]
    for file in making.glob("part-*.sqlite3"):
        if _part_number(file) not in mine:  # another process's
            file.unlink()
    with contextlib.suppress(FileNotFoundError):
        path.rmdir()  # it held no partition; when it holds something else, OSError says so
    making.rename(path)


def _part_number(file: Path) -> int:
    return int(file.stem.removeprefix("part-"))


def resume_epoch(dbs: list[sqlite3.Connection]) -> int | None:
    """The epoch Bytewax resumes from, read from the progress its partitions hold (its own
    rule: the slowest worker's frontier in the last execution, or where that execution itself
    resumed if it got no further). None when none of them holds the progress: in a cluster,
    one partition holds it, which may be another process's."""
    executions = [
        row
        for db in dbs
        for row in db.execute("SELECT ex_num, worker_count, resume_epoch FROM exs")
    ]
    if not executions:
        return None
    ex_num, workers, resumed = max(executions)
    fronts: dict[int, int] = {}
    for db in dbs:
        for worker, front in db.execute(
            "SELECT worker_index, MAX(worker_frontier) FROM fronts WHERE ex_num = ? "
            "GROUP BY worker_index",
            (ex_num,),
        ):
            fronts[worker] = max(front, fronts.get(worker, front))
    return int(min(max(fronts.get(w, resumed), resumed) for w in range(workers)))


def drop_uncommitted(path: Path) -> int:
    """Delete the snapshots at or past the resume epoch: a run killed mid-way leaves some,
    and Bytewax would later read them as the newest state of keys that the next run did not
    snapshot again, mixing two runs' states. The next run writes those epochs anew.

    A process of a cluster whose partitions do not hold the progress goes by what each
    partition committed instead (Bytewax commits an epoch in every partition once the
    whole cluster is past it, so the resume epoch is the one after)."""
    files = sorted(path.glob("*.sqlite3"))
    with contextlib.ExitStack() as stack:
        dbs = [stack.enter_context(contextlib.closing(sqlite3.connect(f))) for f in files]
        epoch = resume_epoch(dbs)
        dropped = 0
        for db in dbs:
            with db:
                after = epoch
                if after is None:
                    committed = db.execute("SELECT MAX(commit_epoch) FROM commits").fetchone()[0]
                    after = None if committed is None else committed + 1
                if after is not None:
                    dropped += db.execute(
                        "DELETE FROM snaps WHERE snap_epoch >= ?", (after,)
                    ).rowcount
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
    recovery: Path | None = None,
    **options: Any,
) -> None:
    """Run one flow until its sources end (`stop` set, or drained); blocks. In a thread: one
    worker; else this process's part of the settings' cluster (`flow_processes` processes
    of `flow_workers` workers at `flow_addresses`). Recovery in `recovery` instead of
    `recovery_dir`."""
    make, recover, reads_catalog = FLOWS[name]
    with contextlib.ExitStack() as running:
        if reads_catalog and "catalog" not in options:
            catalog = Catalog(settings).start()  # followed while the flow runs, then closed
            running.callback(catalog.stop)
            options["catalog"] = catalog
        flow = make(settings, stop, **options)
        _execute(name, settings, flow, recover, in_thread, recovery)


def _execute(
    name: str,
    settings: Settings,
    flow: Dataflow,
    recover: bool,
    in_thread: bool,
    recovery: Path | None,
) -> None:
    """Bytewax runs the flow, with recovery if `recover`, here or as the settings' cluster."""
    quiet_gc()
    kwargs: dict[str, Any] = {"epoch_interval": timedelta(seconds=settings.flow_epoch_s)}
    if recover:
        kwargs["recovery_config"] = recovery_config(settings, name, recovery)
    if in_thread:
        run_main(flow, **kwargs)  # type: ignore[no-untyped-call]  # one worker, this thread
        return
    if settings.flow_processes > 1:
        kwargs["process_id"] = settings.flow_process_id
        kwargs["addresses"] = settings.flow_cluster_addresses
    try:
        cli_main(flow, workers_per_process=settings.flow_workers, **kwargs)  # type: ignore[no-untyped-call]
    except BaseException as exc:
        # (pyo3's PanicException, raised by Bytewax's runtime when a peer's connection drops)
        if settings.flow_processes == 1 or type(exc).__name__ != "PanicException":
            raise
        raise PeerLost(
            f"flow {name}: the cluster stopped (another process of it went away, or could not "
            "be reached); restart every process: each resumes from its last snapshot"
        ) from exc


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
    executions: int  # runs that started from this store (restarts included; in a cluster,
    # as far as this process's partitions know)
    committed_epoch: int | None  # the newest epoch every partition has committed
    snapshot_at: float | None  # when the store was last written (Unix time)
    offsets: dict[str, int]  # "topic:partition" -> the next offset to read, as snapshotted


def status(settings: Settings, name: str) -> FlowStatus:
    """Read `name`'s recovery store (not its running process): its partitions, restarts,
    last committed epoch and the source offsets its last snapshot holds."""
    store = recovery_dir(settings, name)
    files = sorted(store.glob("*.sqlite3"))
    executions, commits, offsets = 0, list[int | None](), dict[str, int]()
    for found in read_parts(files):  # (from a child process: this one may run the flow)
        if found is None:
            continue
        executions = max(executions, found[0])
        commits.append(found[1])
        offsets.update(found[2])
    return FlowStatus(
        name,
        store,
        len(files),
        executions,
        None if not commits or None in commits else min(c for c in commits if c is not None),
        max((f.stat().st_mtime for f in files), default=None),
        offsets,
    )
