"""One job at a time on a thread: a sink goes on with the flow while its insert runs."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class OneInFlight(Generic[T]):
    """Runs jobs on a thread, one at a time: the caller goes on while a job runs, and waits
    for it only when it starts the next one or asks for its result (`settle`)."""

    def __init__(self, name: str) -> None:
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._job: Future[T] | None = None

    def submit(self, job: Callable[..., T], *args: Any) -> T | None:
        """Start `job(*args)` after the one in flight has finished; that one's result."""
        done = self.settle()
        self._job = self._pool.submit(job, *args)
        return done

    def settle(self) -> T | None:
        """Wait for the job in flight: its result (None if there was none)."""
        job, self._job = self._job, None
        return None if job is None else job.result()

    def close(self) -> T | None:
        done = self.settle()
        self._pool.shutdown()
        return done
