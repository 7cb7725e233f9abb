"""Kafka partitions in as whole polls, with their offsets: the source half of exactly-once.

Each topic-partition is a source partition whose resume state is the next offset; the
`progress` sink is the other half, storing per table and source partition which offsets
ClickHouse holds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from swipeloop.kafka import client_config
from swipeloop.metrics import CONSUMER_LAG
from swipeloop.settings import Settings

log = logging.getLogger(__name__)

Record = tuple[int, bytes | None, str | None]  # (offset, value, client error or None)


@dataclass(frozen=True)
class Polled:
    """Consecutive messages of one topic-partition, read by one poll (one item in the flow)."""

    topic: str
    partition: int
    records: list[Record]
    epoch: str = ""  # the broker run the offsets belong to (see Settings.broker_epoch)
    # wall-clock time since which the partition has been read to its end with nothing new
    # (None: it is not known to be caught up). A heartbeat is a poll with no records.
    quiet_since: float | None = None

    @property
    def key(self) -> str:
        """`topic:partition` (a colon never occurs in a topic name)."""
        return f"{self.topic}:{self.partition}"


class _PollPartition(StatefulSourcePartition[Polled, int]):
    def __init__(
        self,
        settings: Settings,
        step: str,
        topic: str,
        partition: int,
        offset: int,
        stop: threading.Event | None,
        drain: bool,
        batch_size: int,
        heartbeat_s: float | None,
    ) -> None:
        self._consumer = Consumer(
            client_config(
                settings,
                **{
                    "group.id": "swipeloop-unused",  # assignment is manual, offsets are ours
                    "enable.auto.commit": False,
                    "enable.partition.eof": drain,
                    "fetch.wait.max.ms": 20,
                },
            )
        )
        self._at_end = False
        self._closed = False
        self._consumer.assign([TopicPartition(topic, partition, offset)])
        self._topic, self._partition, self._next = topic, partition, offset
        self._epoch = settings.broker_epoch
        self._batch = batch_size
        self._idle_s = settings.flow_idle_s
        self._stop = stop
        self._awake: datetime | None = None
        self._heartbeat_s = heartbeat_s
        self._beat_at = 0.0
        self._quiet_since: float | None = None
        self._lag = CONSUMER_LAG.labels(step, topic, str(partition))

    def _caught_up(self) -> bool:
        """Whether everything the broker holds has been read (its high watermark as the last
        fetch response told the client; the broker is asked when that is not known yet)."""
        part = TopicPartition(self._topic, self._partition)
        low, high = self._consumer.get_watermark_offsets(part, cached=True)
        if high < 0 or (self._next < 0 and low < 0):
            try:
                low, high = self._consumer.get_watermark_offsets(part, timeout=1.0)
            except KafkaException:
                return False
        start = self._next if self._next >= 0 else low  # nothing read yet: the log's start
        return high >= 0 and start >= high

    def _heartbeat(self) -> list[Polled]:
        """A poll with no records, once per `heartbeat_s`, while caught up: the flow learns
        the partition is alive and quiet (its silence alone would not say which)."""
        now = time.time()
        if self._heartbeat_s is None or now - self._beat_at < self._heartbeat_s:
            return []
        if not self._caught_up():
            self._quiet_since = None
            return []
        self._beat_at = now
        if self._quiet_since is None:
            self._quiet_since = now
        return [Polled(self._topic, self._partition, [], self._epoch, self._quiet_since)]

    def next_batch(self) -> list[Polled]:
        if self._at_end or (self._stop is not None and self._stop.is_set()):
            self.close()
            raise StopIteration
        msgs = self._consumer.consume(self._batch, 0)
        records = []
        for msg in msgs:
            err, offset = msg.error(), msg.offset()
            if err is not None and err.code() == KafkaError._PARTITION_EOF:
                self._at_end = True  # drain mode: end after what this poll returned
                break
            if offset is None:  # a client-side event (broker down, ...), not a message
                log.warning("kafka %s:%s: %s", self._topic, self._partition, err)
                continue
            records.append((offset, msg.value(), None if err is None else str(err)))
        if not records:
            self._awake = datetime.now(UTC) + timedelta(seconds=self._idle_s)
            return self._heartbeat()
        self._awake = None
        self._next = records[-1][0] + 1
        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(self._topic, self._partition), cached=True
        )
        if high >= 0:  # (as the last fetch response told the client: no round trip)
            self._lag.set(max(high - self._next, 0))
        self._quiet_since = time.time() if self._at_end else None  # drained: quiet from now
        return [Polled(self._topic, self._partition, records, self._epoch, self._quiet_since)]

    def next_awake(self) -> datetime | None:
        return self._awake

    def snapshot(self) -> int:
        return self._next

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._consumer.close()


class KafkaPollSource(FixedPartitionedSource[Polled, int]):
    """Each topic-partition is a source partition; each poll becomes one `Polled` item.

    With `drain`, a partition ends once it has read to the end (catch up, then exit). With
    `heartbeat_s`, a caught-up partition sends an empty poll that often, saying since when it
    has been quiet (see `Polled.quiet_since`).

    The resume state is the next offset, so with recovery on a restart re-reads exactly what
    the last snapshot had not covered.
    """

    def __init__(
        self,
        settings: Settings,
        topics: Iterable[str],
        stop: threading.Event | None = None,
        drain: bool = False,
        batch_size: int | None = None,
        heartbeat_s: float | None = None,
    ) -> None:
        assert settings.kafka_bootstrap, "flows need a broker address"
        self._settings = settings
        self._topics = list(topics)
        self._stop = stop
        self._drain = drain
        self._batch = batch_size or settings.flow_batch_size
        self._heartbeat_s = heartbeat_s

    def list_parts(self) -> list[str]:
        admin = AdminClient(client_config(self._settings))
        meta = admin.list_topics(timeout=10)
        parts: list[str] = []
        for topic in self._topics:
            found = meta.topics.get(topic)
            if found is None or found.error is not None:
                raise RuntimeError(f"topic {topic!r} is missing: run `swipeloop topics`")
            parts.extend(f"{topic}:{p}" for p in sorted(found.partitions))
        return parts

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> _PollPartition:
        topic, partition = for_part.rsplit(":", 1)
        offset = OFFSET_BEGINNING if resume_state is None else resume_state
        return _PollPartition(
            self._settings,
            step_id,
            topic,
            int(partition),
            offset,
            self._stop,
            self._drain,
            self._batch,
            self._heartbeat_s,
        )
