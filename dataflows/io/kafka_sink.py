"""Keyed messages out to one Kafka topic, by a durable producer (acks=all, idempotent).

Closing flushes for at most `CLOSE_FLUSH_S`: a dead broker must not hang a flow's exit.
"""

from __future__ import annotations

import logging

from bytewax.outputs import DynamicSink, StatelessSinkPartition

from swipeloop.kafka import durable_producer
from swipeloop.settings import Settings

log = logging.getLogger(__name__)

Keyed = tuple[bytes, bytes | None]  # (key, value) of a message to produce; None: tombstone

CLOSE_FLUSH_S = 10.0


class _ProducerPartition(StatelessSinkPartition[Keyed]):
    def __init__(self, settings: Settings, topic: str) -> None:
        self._producer = durable_producer(settings, **{"linger.ms": 5})
        self._topic = topic

    def write_batch(self, items: list[Keyed]) -> None:
        for key, value in items:
            while True:
                try:
                    self._producer.produce(self._topic, value=value, key=key)
                    break
                except BufferError:  # local queue full: let deliveries drain first
                    self._producer.poll(0.1)
        self._producer.poll(0)

    def close(self) -> None:
        left = self._producer.flush(CLOSE_FLUSH_S)  # bounded: a dead broker must not hang exit
        if left:
            log.warning("%d messages to %s undelivered at shutdown", left, self._topic)


class KafkaOut(DynamicSink[Keyed]):
    """A durable producer sink (acks=all, idempotent) whose close never blocks forever."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings, self._topic = settings, topic

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ProducerPartition:
        return _ProducerPartition(self._settings, self._topic)


def kafka_output(settings: Settings, topic: str) -> KafkaOut:
    """A durable producer sink (acks=all, idempotent) on one topic."""
    assert settings.kafka_bootstrap, "flows need a broker address"
    return KafkaOut(settings, topic)


def to_kafka(key: str, value: bytes | None) -> Keyed:
    """A keyed value for `kafka_output` (a plain tuple: KafkaSinkMessage costs ~10 µs to build)."""
    return key.encode(), value
