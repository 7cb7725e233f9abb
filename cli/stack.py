"""The whole system in one process: broker (embedded or not), migrations, flows, trainer, API."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from types import TracebackType

import uvicorn
from litestar import Litestar

from api.app import create_app
from api.services import Services
from cli.seed import seed_catalog
from dataflows.runner import FLOWS, run_in_thread
from swipeloop import topics
from swipeloop.broker import EmbeddedBroker
from swipeloop.clickhouse import connect
from swipeloop.migrations import migrate
from swipeloop.retention import apply_retention
from swipeloop.settings import Settings
from swipeloop.waiting import wait_for
from training.schedule import run_schedule

log = logging.getLogger(__name__)
RUNNING = "running.json"


class Stack:
    """Start in dependency order, stop in reverse; `serve()` blocks in the API until Ctrl-C."""

    def __init__(
        self, settings: Settings, schedule_training: bool = True, run_flows: bool = True
    ) -> None:
        self.settings = settings
        self._schedule_training = schedule_training
        self._run_flows = run_flows
        self._broker: EmbeddedBroker | None = None
        self._stop = threading.Event()
        self._threads: dict[str, threading.Thread] = {}
        self._failed: dict[str, str] = {}
        self.server: uvicorn.Server | None = None
        self._app: Litestar | None = None
        self._server_thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """Where the API listens."""
        return f"http://{self.settings.api_host}:{self.settings.api_port}"

    @property
    def services(self) -> Services:
        """What the API holds (its feed side's caches, model, producer), once it serves."""
        assert self._app is not None, "the API is not serving"
        services: Services = self._app.state.services
        return services

    @property
    def broker(self) -> EmbeddedBroker | None:
        """The broker this stack spawned (none when it uses a broker server)."""
        return self._broker

    def start(self) -> Stack:
        """Broker, topics, migrations, demo catalog, flows, trainer; serve() adds the API."""
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        if self.settings.embedded_broker:
            self._broker = EmbeddedBroker(self.settings.data_dir / "broker.log").start()
            self.settings = self.settings.with_(
                kafka_bootstrap=self._broker.bootstrap, broker_epoch=self._broker.epoch
            )
        topics.ensure_topics(self.settings)
        client = connect(self.settings)
        migrate(client, cluster=self.settings.clickhouse_cluster)
        apply_retention(client, self.settings)
        if self.settings.seed_items and not client.query("SELECT 1 FROM items LIMIT 1").result_rows:
            seed_catalog(self.settings, self.settings.seed_items)
        for name in FLOWS if self._run_flows else ():
            self._threads[name] = run_in_thread(
                name, self.settings, self._stop, partial(self._flow_failed, name)
            )
        if self._schedule_training:
            self._threads["trainer"] = threading.Thread(
                target=run_schedule, args=(self.settings, self._stop), name="trainer", daemon=True
            )
            self._threads["trainer"].start()
        return self

    def _flow_failed(self, name: str, exc: BaseException) -> None:
        self._failed[name] = repr(exc)

    def health(self) -> dict[str, bool]:
        """Each flow thread alive and not failed."""
        return {
            f"flow:{n}": t.is_alive() and n not in self._failed
            for n, t in self._threads.items()
            if n in FLOWS
        }

    def _server(self) -> uvicorn.Server:
        app = self._app = create_app(self.settings, extra_checks=self.health)
        config = uvicorn.Config(
            app,
            host=self.settings.api_host,
            port=self.settings.api_port,
            log_level="warning",
            access_log=False,
            lifespan="on",
        )
        self.server = uvicorn.Server(config)
        return self.server

    def serve(self) -> None:
        """Run the API in this thread until interrupted; advertise it to other CLI commands."""
        marker = self.settings.data_dir / RUNNING
        marker.write_text(json.dumps({"url": self.url, "pid": os.getpid()}))
        try:
            self._server().run()
        finally:
            marker.unlink(missing_ok=True)

    def serve_in_thread(self, timeout_s: float = 30.0) -> None:
        """Run the API in a background thread and return once it accepts requests."""
        server = self._server()
        self._server_thread = threading.Thread(target=server.run, name="api", daemon=True)
        self._server_thread.start()
        if not wait_for(lambda: server.started, timeout_s):
            raise RuntimeError(f"the API did not start on {self.url} in {timeout_s} s")

    def stop_api(self) -> None:
        """Stop the API (its caches go with it); `serve_in_thread` starts a fresh one."""
        if self.server is not None:
            self.server.should_exit = True
        if self._server_thread is not None:
            self._server_thread.join(timeout=10)
        self.server = self._server_thread = self._app = None

    def stop(self) -> None:
        """Stop the API, the flows and the trainer, then the embedded broker."""
        self.stop_api()
        self._stop.set()
        for name, thread in self._threads.items():
            thread.join(timeout=10)
            if thread.is_alive():
                log.warning("%s did not stop within 10 s", name)
        if self._broker is not None:
            self._broker.stop()

    def __enter__(self) -> Stack:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def running_url(settings: Settings) -> str | None:
    """The API URL of a `swipeloop up` that owns this data directory, if one is running."""
    marker = settings.data_dir / RUNNING
    if settings.clickhouse_url or not marker.is_file():
        return None
    info = json.loads(marker.read_text())
    try:
        os.kill(int(info["pid"]), 0)
    except (OSError, ValueError):
        return None
    return str(info["url"])


@contextmanager
def fresh_stack(settings: Settings) -> Iterator[Stack]:
    """A stack of its own with an empty catalog and no schedule, serving: what a replay runs on."""
    with Stack(settings.with_(seed_items=0), schedule_training=False) as stack:
        stack.serve_in_thread()
        yield stack
