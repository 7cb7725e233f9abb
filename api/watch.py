"""Something a replica keeps as ClickHouse last said (the serving model, the running
experiment): a watcher thread asks again every `poll_s`, so a request never asks; `refresh`
asks at once (after an admin route changed it)."""

from __future__ import annotations

import logging
import threading

log = logging.getLogger(__name__)


class Watched:
    """Subclasses say how to `refresh`; a failed refresh keeps what was there and is logged."""

    def __init__(self, name: str, poll_s: float) -> None:
        self._name = name
        self._poll_s = poll_s
        self._lock = threading.Lock()  # the watcher and the admin routes may refresh at once
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name=f"{name}-watch", daemon=True)

    def refresh(self) -> None:
        """Ask ClickHouse now."""
        raise NotImplementedError

    def start(self) -> None:
        """Refresh, then keep watching."""
        self.refresh()
        self._thread.start()

    def stop(self) -> None:
        """Stop watching."""
        self._stop.set()
        self._thread.join(timeout=2)

    def _watch(self) -> None:
        while not self._stop.wait(self._poll_s):
            try:
                self.refresh()
            except Exception:  # ClickHouse away: serve on with what was seen; ask again
                log.exception("refreshing the %s failed", self._name)
