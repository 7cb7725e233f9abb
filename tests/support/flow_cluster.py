"""A flow as a Bytewax cluster of processes on 127.0.0.1, as the cluster tests start, kill -9
and read it.

chdb opens a data path from one process only, so each process of a cluster writes its own
chdb path (its own data directory and recovery store too, as on separate machines): what the
cluster stored is the union of its processes' tables. A ClickHouse server would hold one
copy for all; what these tests prove is that each row is written by exactly one process,
once, and that the union equals what one uninterrupted process stores.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from dataflows.runner import FlowStatus, status
from swipeloop.broker import free_port
from swipeloop.settings import Settings
from tests.conftest import role_env, wait_until


def cluster_envs(
    live: Settings, root: Path, database: str, processes: int = 2, **extra: str
) -> list[dict[str, str]]:
    """The environment of each process of one cluster: the same shape and addresses, its
    own id, data directory and chdb path under `root/p<id>`."""
    addresses = ";".join(f"127.0.0.1:{free_port()}" for _ in range(processes))
    return [
        role_env(
            live,
            root / f"p{i}" / "data",
            database,
            flow_processes=str(processes),
            flow_process_id=str(i),
            flow_addresses=addresses,
            **extra,
        )
        for i in range(processes)
    ]


def start_cluster(flow: str, envs: list[dict[str, str]]) -> list[subprocess.Popen[bytes]]:
    """Every process of the cluster, returned once each runs (its recovery store holds a new
    execution and an epoch committed since)."""
    settings = [Settings.from_env(env) for env in envs]
    before = [status(s, flow) for s in settings]
    processes = [_spawn(flow, env) for env in envs]

    def running() -> bool:
        for process in processes:
            if process.poll() is not None:
                raise AssertionError(f"a process of {flow} exited at start: {_stderr(process)}")
        now = [status(s, flow) for s in settings]
        # (each execution is recorded in one partition of the cluster, of either process)
        if max(n.executions for n in now) <= max(b.executions for b in before):
            return False
        return all(_epoch(n) > _epoch(b) for n, b in zip(now, before, strict=True))

    try:
        wait_until(running, 90, f"every process of {flow} running")
    except BaseException:
        stop_all(processes, timeout_s=0)  # none left running after the test
        raise
    return processes


_LOGS: dict[int, Path] = {}  # pid -> the file its stderr goes to


def _spawn(flow: str, env: dict[str, str], *flags: str) -> subprocess.Popen[bytes]:
    """`swipeloop flows run FLOW` with its stderr appended to a file in its data directory
    (a pipe nobody reads while it runs would fill up and block it)."""
    log = Path(env["SWIPELOOP_DATA_DIR"]) / "flow.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as err:
        process = subprocess.Popen(
            [sys.executable, "-m", "cli.app", "flows", "run", flow, *flags],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
    _LOGS[process.pid] = log
    return process


def _stderr(process: subprocess.Popen[bytes]) -> str:
    """The end of what the process wrote to its log."""
    return _LOGS[process.pid].read_bytes().decode(errors="replace")[-2000:]


def _epoch(status: FlowStatus) -> int:
    return -1 if status.committed_epoch is None else status.committed_epoch


def stop_all(processes: list[subprocess.Popen[bytes]], timeout_s: float = 60.0) -> list[int]:
    """Wait for every process to exit, killing -9 any still running after `timeout_s`
    (a process whose peer died exits by itself; its supervisor would restart it)."""
    codes = []
    for process in processes:
        try:
            process.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.communicate(timeout=10)
        codes.append(process.returncode)
    return codes


def drain_cluster(flow: str, envs: list[dict[str, str]], timeout_s: float = 180.0) -> None:
    """`swipeloop flows run FLOW --drain` in every process at once, to the end of every
    partition; each must exit cleanly (one that fails fails the test with its stderr, the
    others killed: they would wait for it forever)."""
    processes = [_spawn(flow, env, "--drain") for env in envs]

    def ended() -> bool:
        for process in processes:
            if process.poll() not in (None, 0):
                stop_all(processes, timeout_s=0)
                raise AssertionError(f"a process of {flow} failed: {_stderr(process)}")
        return all(p.poll() == 0 for p in processes)

    try:
        wait_until(ended, timeout_s, f"every process of {flow} drained")
    finally:
        stop_all(processes, timeout_s=0)
