"""The item catalog in memory, kept current from the compacted `items` topic by a thread."""

from __future__ import annotations

import atexit
import logging
import threading
import time
from dataclasses import dataclass

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from swipeloop import topics
from swipeloop.contracts import Item
from swipeloop.kafka import client_config
from swipeloop.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Known:
    """What the feature flows need of an item."""

    creator_id: str
    duration_ms: int
    tags: tuple[str, ...]
    deleted: bool = False


class Catalog:
    """item_id -> Known, read from the start of `items` and followed from then on.

    Items are registered before they are served, so by the time events about an item
    arrive the catalog knows it; `wait_caught_up` holds a flow's start until the topic has
    been read to where it ended when the flow started.
    """

    def __init__(self, settings: Settings) -> None:
        assert settings.kafka_bootstrap, "the catalog needs a broker address"
        self.items: dict[str, Known] = {}
        self.applied: list[str] = []  # every id applied, in order (see `changed`)
        self._settings = settings
        self._stop = threading.Event()
        self._caught_up = threading.Event()
        self._thread = threading.Thread(target=self._run, name="catalog", daemon=True)
        self._decoder = msgspec.json.Decoder(Item)

    def start(self) -> Catalog:
        """Start following the topic."""
        self._thread.start()
        return self

    def wait_caught_up(self, timeout_s: float = 60.0) -> bool:
        """Block until what the topic held at start has been read (False on timeout)."""
        return self._caught_up.wait(timeout_s)

    @classmethod
    def for_process(cls, settings: Settings) -> Catalog:
        """A catalog followed until the interpreter exits: for a process that is one flow
        (`python -m bytewax.run`); `dataflows.runner.run` follows one while its flow runs."""
        catalog = cls(settings).start()
        atexit.register(catalog.stop)
        return catalog

    def stop(self) -> None:
        """Stop following."""
        self._stop.set()
        self._thread.join(timeout=5)

    def get(self, item_id: str) -> Known | None:
        """The item, if registered."""
        return self.items.get(item_id)

    def changed(self, since: int) -> tuple[list[str], int]:
        """The ids applied since position `since` of the log, and the position after them
        (what a cache of items must re-read)."""
        new = self.applied[since:]
        return new, since + len(new)

    def _run(self) -> None:
        consumer = Consumer(
            client_config(
                self._settings,
                **{"group.id": "swipeloop-catalog", "enable.auto.commit": False},
            )
        )
        try:
            meta = consumer.list_topics(topics.ITEMS, timeout=10)
            parts = [TopicPartition(topics.ITEMS, p) for p in meta.topics[topics.ITEMS].partitions]
            ends = {p.partition: consumer.get_watermark_offsets(p, timeout=10)[1] for p in parts}
            consumer.assign([TopicPartition(topics.ITEMS, p, OFFSET_BEGINNING) for p in ends])
            pending = {p for p, end in ends.items() if end > 0}
            if not pending:
                self._caught_up.set()
            while not self._stop.is_set():
                for msg in consumer.consume(1000, 0.1):
                    if msg.error() is not None:
                        continue
                    self._apply(msg.value())
                    offset, part = msg.offset(), msg.partition()
                    if part in pending and offset is not None and offset + 1 >= ends[part]:
                        pending.discard(part)
                        if not pending:
                            self._caught_up.set()
        except Exception:  # the flow sees an empty catalog and logs why
            log.exception("the item catalog stopped following %s", topics.ITEMS)
            time.sleep(0.1)
        finally:
            consumer.close()

    def _apply(self, value: bytes | None) -> None:
        try:
            item = self._decoder.decode(value or b"")
        except msgspec.DecodeError:
            return  # the ingest flow dead-letters it
        self.items[item.item_id] = Known(
            item.creator_id, item.duration_ms, tuple(item.tags), item.deleted
        )
        self.applied.append(item.item_id)
