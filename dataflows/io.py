"""Sources and sinks shared by the flows: Kafka in, ClickHouse and Kafka out."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bytewax.connectors.kafka import KafkaSink, KafkaSinkMessage, KafkaSource, KafkaSourceMessage
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from clickhouse_connect.driver.client import Client
from clickhouse_connect.driver.exceptions import OperationalError

from swipeloop.clickhouse import connect, insert_rows
from swipeloop.kafka import RDKAFKA_LOG_LEVEL
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
        inner_next = part.next_batch

        def next_batch() -> list[Any]:
            if stop.is_set():
                raise StopIteration
            return list(inner_next())

        part.next_batch = next_batch  # type: ignore[method-assign]
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


def kafka_output(settings: Settings, topic: str) -> KafkaSink:
    """A durable producer sink (acks=all, idempotent)."""
    assert settings.kafka_bootstrap, "flows need a broker address"
    return KafkaSink(
        [settings.kafka_bootstrap],
        topic,
        add_config={
            "log_level": str(RDKAFKA_LOG_LEVEL),
            "acks": "all",
            "enable.idempotence": "true",
            "linger.ms": "5",
        },
    )


def to_kafka(key: str, value: bytes) -> KafkaSinkMessage[bytes, bytes]:
    """Wrap a keyed value for KafkaSink."""
    return KafkaSinkMessage(key=key.encode(), value=value)


@dataclass(frozen=True)
class Rows:
    """Rows bound for one ClickHouse table, and the source offsets they came from."""

    table: str
    columns: list[str]
    rows: list[list[Any]]
    token: str | None = None


class _ClickHousePartition(StatelessSinkPartition[Rows]):
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._client: Client = connect(settings)

    def write_batch(self, items: list[Rows]) -> None:
        # Merge what arrived together per table; keep token-carrying batches whole.
        merged: dict[tuple[str, str | None], Rows] = {}
        for rows in items:
            key = (rows.table, rows.token)
            if key in merged:
                merged[key].rows.extend(rows.rows)
            else:
                merged[key] = Rows(rows.table, rows.columns, list(rows.rows), rows.token)
        for rows in merged.values():
            self._insert_with_retry(rows)

    def _insert_with_retry(self, rows: Rows) -> None:
        delay = 0.2
        while True:
            try:
                insert_rows(self._client, rows.table, rows.rows, rows.columns, rows.token)
                return
            except OperationalError as exc:  # ClickHouse away: back off, keep the batch
                log.warning("ClickHouse insert into %s failed (%s); retrying", rows.table, exc)
                time.sleep(delay)
                delay = min(delay * 2, 10.0)


class ClickHouseSink(DynamicSink[Rows]):
    """Batched inserts; a token (from source offsets) makes a replayed batch a no-op."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    def build(self, step_id: str, worker_index: int, worker_count: int) -> _ClickHousePartition:
        return _ClickHousePartition(self._settings)


def offsets_token(settings: Settings, table: str, msgs: list[Message]) -> str:
    """topic-partition-first-last for a batch from one partition, scoped by broker epoch."""
    first, last = msgs[0], msgs[-1]
    where = f"{first.topic}:{first.partition}:{first.offset}:{last.offset}"
    return f"{settings.broker_epoch}:{table}:{where}"


def run_in_thread(
    name: str, build: Callable[[], Any], on_error: Callable[[BaseException], None]
) -> threading.Thread:
    """Run a dataflow with bytewax's run_main in a daemon thread (one process, embedded mode)."""
    from bytewax.testing import run_main

    def target() -> None:
        try:
            run_main(build())  # type: ignore[no-untyped-call]
        except BaseException as exc:
            log.exception("dataflow %s stopped with an error", name)
            on_error(exc)

    thread = threading.Thread(target=target, name=f"flow-{name}", daemon=True)
    thread.start()
    return thread
