"""Sources and sinks shared by the flows: Kafka in, ClickHouse and Kafka out."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any, Generic, TypeVar

import pyarrow as pa
from bytewax.connectors.kafka import KafkaSource, KafkaSourceMessage
from bytewax.inputs import FixedPartitionedSource, StatefulSourcePartition
from bytewax.outputs import (
    DynamicSink,
    FixedPartitionedSink,
    StatefulSinkPartition,
    StatelessSinkPartition,
)
from clickhouse_connect.driver.client import Client
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from dataflows.forget import Forgetting
from swipeloop.clickhouse import connect, insert_lines, insert_rows, with_retry
from swipeloop.kafka import RDKAFKA_LOG_LEVEL, client_config, durable_producer
from swipeloop.metrics import CONSUMER_LAG, INGESTED_ROWS
from swipeloop.settings import Settings

log = logging.getLogger(__name__)

Message = KafkaSourceMessage[bytes | None, bytes | None]


class StoppableKafkaSource(KafkaSource):
    """KafkaSource whose partitions end when `stop` is set, so a flow in a thread can finish."""

    def __init__(self, *args: Any, stop: threading.Event | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stop = stop

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        part = super().build_part(step_id, for_part, resume_state)
        stop = self._stop
        if stop is None:
            return part
        inner_next, inner_close = part.next_batch, part.close
        closed = threading.Event()

        def next_batch() -> list[Any]:
            if stop.is_set():
                close()  # now, on this thread: a client left to the garbage collector can
                raise StopIteration  # call back into a finalizing interpreter and crash it
            return list(inner_next())

        def close() -> None:
            if not closed.is_set():
                closed.set()
                inner_close()

        part.next_batch = next_batch  # type: ignore[method-assign]
        part.close = close  # type: ignore[method-assign]
        return part


def kafka_input(
    settings: Settings,
    topics: Iterable[str],
    stop: threading.Event | None = None,
) -> StoppableKafkaSource:
    """Read topics from the beginning, by manual partition assignment (no group join)."""
    assert settings.kafka_bootstrap, "flows need a broker address"
    return StoppableKafkaSource(
        [settings.kafka_bootstrap],
        list(topics),
        tail=True,
        batch_size=settings.flow_batch_size,
        raise_on_errors=False,
        stop=stop,
        add_config={"log_level": str(RDKAFKA_LOG_LEVEL), "fetch.wait.max.ms": "20"},
    )


Keyed = tuple[bytes, bytes | None]  # (key, value) of a message to produce; None: tombstone


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


CLOSE_FLUSH_S = 10.0


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


@dataclass(frozen=True)
class Rows:
    """Rows bound for one ClickHouse table, and the source offsets they came from."""

    table: str
    columns: list[str]
    rows: list[list[Any]]
    token: str | None = None
    arrow: Any = None  # a pyarrow Table instead of `rows`: many rows, no Python per row


class _ClickHousePartition(StatelessSinkPartition[Rows]):
    def __init__(self, settings: Settings) -> None:
        self._client: Client = connect(settings)
        self._forgetting = Forgetting()

    def write_batch(self, items: list[Rows]) -> None:
        write_rows(self._client, items, self._forgetting)


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


class _CommittedPartition(StatefulSinkPartition[Rows, int]):
    """Writes each batch before its epoch can be committed (it takes part in snapshots).

    The insert runs on a thread, so the flow goes on meanwhile (a closed window's rows do
    not hold back the live windows); one batch is in flight at a time, and a snapshot waits
    for it."""

    def __init__(self, client: Client, written: int) -> None:
        self._client = client
        self._written = written
        self._inserts: OneInFlight[None] = OneInFlight("clickhouse-insert")
        self._forgetting = Forgetting()

    def write_batch(self, items: list[Rows]) -> None:
        self._inserts.submit(write_rows, self._client, items, self._forgetting)
        self._written += len(items)

    def snapshot(self) -> int:
        self._inserts.settle()
        return self._written

    def close(self) -> None:
        self._inserts.close()


class CommittedClickHouseSink(FixedPartitionedSink[Rows, int]):
    """Inserts that a recovery snapshot waits for. A stateless sink does not hold back the
    epoch's commit: state snapshotted after emitting rows could outlive rows lost in a crash.
    Items are `(any key, Rows)`; one partition. Rows must be idempotent (a replay repeats
    them): ReplacingMergeTree tables."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def list_parts(self) -> list[str]:
        return ["clickhouse"]

    def part_fn(self, item_key: str) -> int:
        return 0

    def build_part(self, step_id: str, for_part: str, resume_state: int | None) -> Any:
        return _CommittedPartition(connect(self._settings), resume_state or 0)


def write_rows(client: Client, items: list[Rows], forgetting: Forgetting | None = None) -> None:
    """Insert batches, merged per table (batches with a dedup token are kept whole); with
    `forgetting`, less the rows of erased users, and then what landed of them before."""
    new = forgetting.learn(client) if forgetting else set()
    arrow: dict[str, list[Any]] = {}
    merged: dict[tuple[str, str | None], Rows] = {}
    for rows in items:
        if rows.arrow is not None:
            arrow.setdefault(rows.table, []).append(rows.arrow)
            continue
        key = (rows.table, rows.token)
        if key in merged:
            merged[key].rows.extend(rows.rows)
        else:
            merged[key] = Rows(rows.table, rows.columns, list(rows.rows), rows.token)
    for rows in merged.values():
        kept = forgetting.rows(rows.columns, rows.rows) if forgetting else rows.rows
        with_retry(
            f"insert into {rows.table}",
            partial(insert_rows, client, rows.table, kept, rows.columns, rows.token),
        )
    for table, tables in arrow.items():
        whole = pa.concat_tables(tables)
        whole = forgetting.arrow(whole) if forgetting else whole
        with_retry(f"insert into {table}", partial(client.insert_arrow, table, whole))
    if forgetting and new:
        forgetting.catch_up(client, new)


class ClickHouseSink(DynamicSink[Rows]):
    """Batched inserts; a token (from source offsets) makes a replayed batch a no-op."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ClickHousePartition:
        return _ClickHousePartition(self._settings)


# --- exactly-once: Kafka partitions in as whole polls, ClickHouse progress out -------------


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
                settings.kafka_bootstrap,
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
        admin = AdminClient(client_config(self._settings.kafka_bootstrap))
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


@dataclass
class TableRows:
    """JSONEachRow lines for one table from one topic-partition, with their source offsets.

    `months` (the yyyymm each row is partitioned on) is set for tables partitioned by month;
    `ids` and `stamps` (id, receive time in ms) for tables deduplicated by id; `users` for
    tables of user data (what an erasure removes).
    """

    table: str
    lines: list[bytes]
    offsets: list[int]
    months: list[int] | None = None
    ids: list[int] | None = None
    stamps: list[int] | None = None
    users: list[str] | None = None

    def take(self, keep: list[int]) -> TableRows:
        """The rows at the positions in `keep` (ascending), as new lists."""

        def pick(values: list[Any] | None) -> Any:
            return None if values is None else [values[i] for i in keep]

        return TableRows(
            self.table,
            pick(self.lines),
            pick(self.offsets),
            pick(self.months),
            pick(self.ids),
            pick(self.stamps),
            pick(self.users),
        )

    def tail_after(self, offset: int) -> TableRows | None:
        """The rows past `offset` (a replay can straddle what is stored), or None."""
        if self.offsets[-1] <= offset:
            return None
        if self.offsets[0] > offset:
            return self
        start = next(i for i, off in enumerate(self.offsets) if off > offset)
        return self.take(list(range(start, len(self.offsets))))

    def buffer(self) -> TableRows:
        """A copy to extend with later polls (the dedup ids have done their work)."""
        months = None if self.months is None else list(self.months)
        users = None if self.users is None else list(self.users)
        return TableRows(self.table, list(self.lines), list(self.offsets), months, users=users)

    def extend(self, more: TableRows) -> None:
        """Append the rows of a later poll of the same table and partition (to a buffer)."""
        self.lines.extend(more.lines)
        self.offsets.extend(more.offsets)
        if self.months is not None and more.months is not None:
            self.months.extend(more.months)
        if self.users is not None and more.users is not None:
            self.users.extend(more.users)

    def runs(self) -> Iterator[tuple[list[bytes], list[int]]]:
        """Consecutive rows of the same month: each run is one part, so one atomic insert."""
        if self.months is None:
            yield self.lines, self.offsets
            return
        months, start = self.months, 0
        for i in range(1, len(months) + 1):
            if i == len(months) or months[i] != months[start]:
                yield self.lines[start:i], self.offsets[start:i]
                start = i


Progress = dict[str, int]  # "table|topic:partition" -> last offset stored in ClickHouse
SourceRows = tuple[str, list[TableRows]]  # (topic:partition, its rows per table)


class _ProgressPartition(StatefulSinkPartition[SourceRows, Progress]):
    """Buffers rows per table and source partition; inserts when big or old enough, and
    always before a snapshot, so no snapshot covers an offset that ClickHouse lacks.

    A flush hands its inserts to a thread (ClickHouse parses and writes without the GIL) and
    the flow goes on parsing; at most one flush is in flight, and a snapshot waits for it.
    """

    def __init__(self, settings: Settings, client: Client, resume: Progress | None) -> None:
        self._settings = settings
        self._client = client
        self._progress: Progress = dict(resume or {})  # stored in ClickHouse
        self._taken: Progress = {}  # buffered or being inserted
        self._checked: set[str] = set()
        self._pending: dict[str, TableRows] = {}
        self._pending_rows = 0
        self._oldest: float | None = None
        self._inserts: OneInFlight[Progress] = OneInFlight("clickhouse-insert")
        self._forgetting = Forgetting()

    def write_batch(self, items: list[SourceRows]) -> None:
        for source, tables in items:
            for part in tables:
                self._add(source, part)
        too_old = self._oldest is not None and (
            time.monotonic() - self._oldest >= self._settings.flow_flush_s
        )
        if self._pending_rows >= self._settings.flow_flush_rows or too_old:
            self._flush()

    def _add(self, source: str, part: TableRows) -> None:
        key = f"{part.table}|{source}"
        done = self._taken[key] if key in self._taken else self._stored(key, part.table, source)
        new = part.tail_after(done)  # a replay keeps only what is not stored or buffered
        if new is None:
            return
        pending = self._pending.get(key)
        if pending is None:
            self._pending[key] = new.buffer()
        else:
            pending.extend(new)
        self._taken[key] = new.offsets[-1]
        self._pending_rows += len(new.offsets)
        if self._oldest is None:
            self._oldest = time.monotonic()

    def _flush(self) -> None:
        """Start inserting what is buffered (after the previous flush has landed)."""
        if not self._pending:
            self._settle()
            return
        pending, self._pending = self._pending, {}
        self._pending_rows = 0
        self._oldest = None
        self._landed(self._inserts.submit(self._insert, pending))

    def _settle(self) -> None:
        """Wait for the flush in flight; what it inserted is now progress."""
        self._landed(self._inserts.settle())

    def _landed(self, landed: Progress | None) -> None:
        if landed is not None:
            self._progress.update(landed)

    def _insert(self, pending: dict[str, TableRows]) -> Progress:
        landed: Progress = {}
        erased = self._forgetting.learn(self._client)
        for key, whole in pending.items():
            source = key.split("|", 1)[1]
            landed[key] = whole.offsets[-1]  # rows of erased users count as handled
            part = self._forget(whole)
            if not part.offsets:
                continue
            for lines, offsets in part.runs():
                where = f"{source}:{offsets[0]}:{offsets[-1]}"
                token = f"{self._settings.broker_epoch}:{part.table}:{where}"
                with_retry(
                    f"insert into {part.table} ({len(lines)} rows)",
                    partial(insert_lines, self._client, part.table, lines, token),
                )
                INGESTED_ROWS.labels(part.table).inc(len(lines))
        if erased:
            self._forgetting.catch_up(self._client, erased)
        return landed

    def _forget(self, part: TableRows) -> TableRows:
        """The rows of users not erased."""
        if part.users is None:
            return part
        keep = self._forgetting.kept(part.users)
        return part if keep is None else part.take(keep)

    def _stored(self, key: str, table: str, source: str) -> int:
        """The last offset of `source` in `table`: the snapshot's, or ClickHouse's if ahead.

        ClickHouse can be ahead after a crash between an insert and the next snapshot; the
        replayed messages up to its offset are then dropped instead of inserted twice.
        """
        if key not in self._checked:
            self._settle()  # one query at a time on the client
            topic, partition = source.rsplit(":", 1)
            count, last = self._client.query(
                f"SELECT count(), max(offset) FROM `{table}` WHERE broker_epoch = {{e:String}} "
                "AND topic = {t:String} AND partition = {p:UInt16}",
                parameters={"e": self._settings.broker_epoch, "t": topic, "p": int(partition)},
            ).result_rows[0]
            stored = int(last) if count else -1
            snapshot = self._progress.get(key, -1)
            if stored > snapshot:
                log.warning(
                    "%s: ClickHouse holds offsets up to %d, the snapshot up to %d; "
                    "the replayed ones in between are skipped",
                    key,
                    stored,
                    snapshot,
                )
            self._progress[key] = max(snapshot, stored)
            self._checked.add(key)
        return self._progress.get(key, -1)

    def snapshot(self) -> Progress:
        self._flush()  # what the source's snapshot covers must be in ClickHouse first
        self._settle()
        return dict(self._progress)

    def close(self) -> None:
        self._flush()
        self._landed(self._inserts.close())


class ClickHouseProgressSink(FixedPartitionedSink[SourceRows, Progress]):
    """Exactly-once inserts: per table and source partition, only offsets past what is stored.

    Items are `(topic:partition, (topic:partition, [TableRows]))`. Each insert holds
    consecutive offsets of one source partition and carries the token
    `epoch:table:topic:partition:first:last`, so a retried insert is dropped by the table's
    dedup window; on resume the progress is checked against ClickHouse itself.
    """

    def __init__(
        self,
        settings: Settings,
        parts: int = 1,
        connect_clickhouse: Callable[[Settings], Client] = connect,
    ) -> None:
        self._settings = settings
        self._parts = parts
        self._connect = connect_clickhouse

    def list_parts(self) -> list[str]:
        return [f"clickhouse-{i}" for i in range(self._parts)]

    def build_part(
        self, step_id: str, for_part: str, resume_state: Progress | None
    ) -> _ProgressPartition:
        return _ProgressPartition(self._settings, self._connect(self._settings), resume_state)
