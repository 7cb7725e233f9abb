"""A flow in its own process, as the fault tests start, kill -9 and wait on it."""

from __future__ import annotations

import random
import signal
import subprocess
import time
from collections.abc import Callable

from dataflows.runner import status
from swipeloop.contracts import Item, ReceivedEvent
from swipeloop.settings import Settings
from tests.conftest import drain, produce, swipeloop_process, wait_until


def started(flow: str, env: dict[str, str], timeout_s: float = 60.0) -> subprocess.Popen[bytes]:
    """`swipeloop flows run FLOW` in its own process, returned once it runs: its recovery
    store holds a new execution and an epoch committed since."""
    settings = Settings.from_env(env)
    before = status(settings, flow)
    process = swipeloop_process("flows", "run", flow, env=env)

    def running() -> bool:
        if process.poll() is not None:
            _, err = process.communicate()
            raise AssertionError(f"flow {flow} exited at start: {err.decode()[-2000:]}")
        now = status(settings, flow)
        committed = -1 if now.committed_epoch is None else now.committed_epoch
        was = -1 if before.committed_epoch is None else before.committed_epoch
        return now.executions > before.executions and committed > was

    try:
        wait_until(running, timeout_s, f"flow {flow} running")
    except BaseException:
        process.kill()  # none left running after the test
        process.communicate()
        raise
    return process


def kill_9(process: subprocess.Popen[bytes]) -> bytes:
    """Kill the process at once (no snapshot, no flush); what it wrote to stderr."""
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate(timeout=10)
    return err


def kill_9_mid_stream(
    live: Settings,
    flow: str,
    roles: tuple[dict[str, str], dict[str, str]],
    items: list[Item],
    events: list[ReceivedEvent],
    rng: random.Random,
    after_kill: Callable[[], None] = lambda: None,
) -> None:
    """The same stream through `flow` in two roles, each on its own database and recovery
    store: the killed one runs while the events come in chunks and is killed -9 at a random
    moment of each of ten (`after_kill` after each), resuming from its last snapshot; the calm
    one reads it all at the end. Both drained to the end of every partition."""
    calm, killed = roles
    for env in roles:
        assert swipeloop_process("migrate", env=env).wait(60) == 0
    chunks = [events[i : i + 3_000] for i in range(0, len(events), 3_000)]
    produce(live, items, chunks[0])
    for chunk in chunks[1:11]:
        process = started(flow, killed)
        produce(live, [], chunk)
        time.sleep(rng.uniform(0.3, 1.5))  # the scenario: killed at a random point of the chunk
        kill_9(process)
        after_kill()
    for chunk in chunks[11:]:
        produce(live, [], chunk)
    drain(flow, killed)
    drain(flow, calm)  # both write their own database on one chdb path, in turn


def settled(settings: Settings, flow: str, epochs: int = 2) -> Callable[[], bool]:
    """A check for `wait_until`: `flow` (its recovery store under `settings`) has committed
    `epochs` epochs in a row without reading a new message, so what was sent before is in
    its sinks. (The broker's high watermarks cannot say it: the embedded broker reports the
    first offset of a partition's last batch plus one.)"""
    since: list[tuple[int, dict[str, int]]] = []  # (committed epoch, offsets) when last moved

    def check() -> bool:
        now = status(settings, flow)
        if now.committed_epoch is None:
            return False
        if not since or since[0][1] != now.offsets:
            since[:] = [(now.committed_epoch, now.offsets)]
            return False
        return now.committed_epoch >= since[0][0] + epochs

    return check
