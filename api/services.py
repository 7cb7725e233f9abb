"""What the API holds while it runs: producer, serving state, its feeder, the current model."""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from clickhouse_connect.driver.client import Client
from confluent_kafka.admin import AdminClient

from api.experiments import ExperimentHolder
from api.feeder import Feeder
from api.lists import REFRESH_S
from api.policies import Baselines
from api.state import ServingState
from api.watch import Watched
from swipeloop.clickhouse import connect
from swipeloop.kafka import AsyncProducer, client_config
from swipeloop.metrics import MODEL_CHANGES, MODEL_SERVING
from swipeloop.settings import Settings
from training.canary import Canary, serves
from training.canary import running as running_canary
from training.ranker import Ranker, load
from training.registry import log as registry_log
from training.registry import production
from training.registry_import import adopt

log = logging.getLogger(__name__)


class ModelHolder(Watched):
    """The production ranker; a watcher thread swaps in each newly promoted (or rolled back
    to) version without a restart: requests already scoring finish with the old one. The
    registry is in ClickHouse; this replica's models directory only caches the text."""

    def __init__(self, settings: Settings) -> None:
        super().__init__("model registry", settings.model_poll_s)
        self._settings = settings
        self.current: Ranker | None = None
        self.canary: tuple[Canary, Ranker] | None = None  # a candidate on a share of users
        self._client = connect(settings)

    def ranker_for(self, user_id: str) -> Ranker | None:
        """What ranks this user's real-time feed: the canary for its share of users, else
        production."""
        canary = self.canary
        if canary is not None and serves(canary[0], user_id):
            return canary[1]
        return self.current

    def refresh(self) -> None:
        """Load the production version if it is not the one serving, and the canary."""
        with self._lock:
            self._refresh_canary()
            newest = production(self._client)
            if newest is None or (self.current and self.current.version == newest):
                return
            try:
                loaded = load(self._client, self._settings.models_dir, newest)
            except Exception:
                log.exception("cannot load model %s; keeping the current one", newest)
                return
            previous, self.current = self.current, loaded
            log.info("serving model %s", newest)
            if previous is not None:
                MODEL_SERVING.labels(previous.version).set(0)
            MODEL_SERVING.labels(newest).set(1)
            changes = [c for c in registry_log(self._client) if c.version == newest]
            MODEL_CHANGES.labels(changes[-1].action if changes else "unknown").inc()

    def _refresh_canary(self) -> None:
        found = running_canary(self._client)
        if found is None or (self.canary and self.canary[0].version != found.version):
            self.canary = None
        if found is not None and self.canary is None:
            try:
                self.canary = (found, load(self._client, self._settings.models_dir, found.version))
                log.info("canary %s on %d %% of users", found.version, found.share)
            except Exception:
                log.exception("cannot load canary %s; production serves everyone", found.version)

    def start(self) -> None:
        """Import an old models directory (once), load what serves now and keep watching."""
        adopt(self._client, self._settings.models_dir)
        super().start()


class Serving:
    """The feed side: serving state, its feeder, its refresher, the current model."""

    def __init__(self, settings: Settings) -> None:
        self.state = ServingState(settings, connect(settings))
        self.feeder = Feeder(self.state, settings)
        self.models = ModelHolder(settings)
        self.experiments = ExperimentHolder(connect(settings), settings.model_poll_s)
        self.baselines = Baselines()  # what the experiment policies keep (api.policies)
        # its own producer: nothing waits on the impression log, so it may linger longer
        self.impressions = AsyncProducer(settings, linger_ms=settings.impression_linger_ms)
        # feeds built at once (the route waits for a slot, in its worker thread)
        self.slots = threading.BoundedSemaphore(
            settings.feed_concurrency or 2 * (os.cpu_count() or 1)
        )
        self._stop = threading.Event()
        self._refresher = threading.Thread(target=self._refresh, name="refresher", daemon=True)

    def start(self) -> None:
        """Bootstrap caches, then follow the topics and the model registry, and keep the
        shared lists (trending, fresh pool) fresh off the request path."""
        self.state.bootstrap()
        self.state.refresh()
        self.feeder.start()
        self.models.start()
        self.experiments.start()
        self._refresher.start()

    def stop(self) -> None:
        """Stop the background threads."""
        self._stop.set()
        self.feeder.stop()
        self.models.stop()
        self.experiments.stop()
        self._refresher.join(timeout=5)
        self.impressions.close()

    def _refresh(self) -> None:
        while not self._stop.wait(REFRESH_S):
            try:
                self.state.refresh()
                self.state.follow_erasures()
            except Exception:  # the lists stay as they were; requests recompute stale ones
                log.exception("refreshing the shared lists failed")


class Services:
    """Started in the app's lifespan, stopped at shutdown.

    An ingest-only API (`serve_feed=False`) holds just the producer: it is stateless, so it
    scales out freely and spends no CPU following the topics.
    """

    def __init__(
        self,
        settings: Settings,
        extra_checks: Callable[[], dict[str, bool]] | None = None,
        serve_feed: bool = True,
    ) -> None:
        self.settings = settings
        self.producer = AsyncProducer(settings)
        self.serving = Serving(settings) if serve_feed else None
        assert settings.kafka_bootstrap, "the API needs a broker address"
        self._admin = AdminClient(client_config(settings.kafka_bootstrap))
        # ClickHouse is the feed side's; an ingest-only API needs the broker alone (and with
        # chdb, only one process may open the data path).
        self._health_client = connect(settings) if serve_feed else None
        # admin and console requests share one client (each `connect` asks ClickHouse to
        # create the database, and a chdb client is kept for the process's life), in turn
        self._reads = connect(settings) if serve_feed else None
        self._reads_lock = threading.Lock()
        self._extra_checks = extra_checks

    @contextmanager
    def clickhouse(self) -> Iterator[Client]:
        """The feed side's ClickHouse client for an admin or console request, one at a time."""
        assert self._reads is not None, "this API does not serve feeds"
        with self._reads_lock:
            yield self._reads

    @property
    def feed(self) -> Serving:
        """The feed side (only routed to where it exists)."""
        assert self.serving is not None, "this API does not serve feeds"
        return self.serving

    def start(self) -> None:
        """Start the feed side, if any."""
        if self.serving:
            self.serving.start()

    def stop(self) -> None:
        """Flush the producer and stop the background threads."""
        if self.serving:
            self.serving.stop()
        self.producer.close()
        del self._admin  # no reconnect attempts to a broker that is going away

    def readiness(self) -> dict[str, bool]:
        """Each dependency and whether it answers now."""
        checks: dict[str, bool] = {}
        try:
            self._admin.list_topics(timeout=1)
            checks["broker"] = True
        except Exception:
            checks["broker"] = False
        if self._health_client is not None:
            try:
                self._health_client.query("SELECT 1")
                checks["clickhouse"] = True
            except Exception:
                checks["clickhouse"] = False
        # (an empty catalog is no check: a fresh install is ready before its first upload)
        if self._extra_checks:
            checks.update(self._extra_checks())
        return checks
