"""Kafka clients configured once: a durable producer with awaitable deliveries."""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from swipeloop.settings import KAFKA_PREFIX, Settings, SettingsError

log = logging.getLogger(__name__)


class BrokerUnavailable(RuntimeError):
    """The broker did not acknowledge in time; nothing was promised to the client."""


RDKAFKA_LOG_LEVEL = 3  # librdkafka logs errors only (to stderr; a Python logger would be
# called from librdkafka threads during interpreter shutdown, which aborts the process)


def client_config(settings: Settings | str | None, **extra: Any) -> dict[str, Any]:
    """Base config of every Kafka client: the broker's address and the operator's librdkafka
    settings (`SWIPELOOP_KAFKA_*`: SASL, TLS, ...), then the client's own. A bare address
    is a test's or a benchmark's broker, with no settings of its own."""
    if isinstance(settings, Settings):
        bootstrap, operator = settings.kafka_bootstrap, settings.kafka_config
    else:
        bootstrap, operator = settings, {}
    assert bootstrap, "a Kafka client needs a broker address"
    return {
        **operator,
        "bootstrap.servers": bootstrap,
        "log_level": RDKAFKA_LOG_LEVEL,
        **extra,
    }


def check_client_config(settings: Settings) -> None:
    """Refuse, naming the variable, `SWIPELOOP_KAFKA_*` settings librdkafka does not know or
    cannot take (checked by building a producer, which checks its config before connecting)."""
    if not settings.kafka_config:
        return
    try:
        Producer({**settings.kafka_config, "bootstrap.servers": "127.0.0.1:1", "log_level": 0})
    except KafkaException as exc:
        message = exc.args[0].str()
        named = [n for n in settings.kafka_config if f'"{n}"' in message] or list(
            settings.kafka_config
        )
        variables = ", ".join(
            f"{KAFKA_PREFIX}{n.upper().replace('.', '_')}={settings.kafka_config[n]!r}"
            for n in named
        )
        raise SettingsError(f"{variables}: {message}") from None


def durable_producer(settings: Settings, **extra: Any) -> Producer:
    """acks=all and idempotence: once delivered, written once, in order per partition."""
    config = client_config(settings)
    config.update(
        {"acks": "all", "enable.idempotence": True, "linger.ms": 1, "compression.type": "lz4"}
    )
    config.update(extra)
    return Producer(config)


class AsyncProducer:
    """A durable producer whose deliveries are asyncio futures, served by one poller thread.

    An idempotent producer that hits a fatal error (fenced after the broker stalled, say)
    refuses everything after it; the next produce then starts a fresh producer, and what the
    old one still held fails (the client gets a 503 and retries, the flow drops repeats).
    A producer whose last `RENEW_AFTER` requests all went unacknowledged is renewed too: after
    a broker restart that lost its producer state, one can wait on it forever, unfenced
    (tests/faults/test_api_faults.py caught it doing so one time in three).
    """

    RENEW_AFTER = 3

    def __init__(self, settings: Settings, linger_ms: float | None = None) -> None:
        timeout_ms = int(settings.ack_timeout_s * 1000)
        self._config = {
            "message.timeout.ms": timeout_ms,
            "request.timeout.ms": timeout_ms,
            # a request waits for its ack: linger trades that latency for fewer, bigger
            # produce requests (less broker CPU under load); see bench/RESULTS.md
            "linger.ms": settings.ack_linger_ms if linger_ms is None else linger_ms,
            "error_cb": self._on_error,
        }
        self._settings = settings
        self._fatal = threading.Event()
        self._unanswered = 0  # requests in a row that were not acknowledged
        self._lock = threading.Lock()
        self._producer = durable_producer(settings, **self._config)
        self._stop = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="producer-poll", daemon=True)
        self._poller.start()

    def _on_error(self, err: KafkaError) -> None:
        if _needs_new_producer(err):
            self._fatal.set()

    def _poll(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def _refused(self) -> None:
        """A request failed (its first failed delivery); after `RENEW_AFTER` in a row, the
        next produce starts a fresh producer."""
        self._unanswered += 1
        if self._unanswered >= self.RENEW_AFTER:
            self._unanswered = 0
            self._fatal.set()

    def _renew_if_fatal(self) -> None:
        if not self._fatal.is_set():
            return
        with self._lock:
            if not self._fatal.is_set():
                return
            old, self._producer = self._producer, durable_producer(self._settings, **self._config)
            self._fatal.clear()
        old.purge()  # fail its pending deliveries now, not at their timeout
        old.flush(0)

    def produce_all(self, messages: list[tuple[str, bytes, bytes]]) -> asyncio.Future[None]:
        """Hand over (topic, key, value) messages; one future for all: done when the broker
        has every one, failed at the first that it refused."""
        if self._stop.is_set():
            raise BrokerUnavailable("the producer is closed (this process is stopping)")
        self._renew_if_fatal()
        loop = asyncio.get_running_loop()
        future: asyncio.Future[None] = loop.create_future()
        pending = [len(messages)]

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                if _needs_new_producer(err):
                    self._fatal.set()
                elif pending[0] > 0:  # (the request's first failure: counted once)
                    self._refused()
                pending[0] = -1
                loop.call_soon_threadsafe(_settle, future, err)
                return
            pending[0] -= 1  # deliveries are served by the one poller thread
            if pending[0] == 0:
                self._unanswered = 0
                loop.call_soon_threadsafe(_settle, future, None)

        by_topic: dict[str, list[dict[str, bytes]]] = {}
        for topic, key, value in messages:
            by_topic.setdefault(topic, []).append({"key": key, "value": value})
        for topic, batch in by_topic.items():  # one call per topic: ~2x cheaper per message
            queued = self._producer.produce_batch(topic, batch, on_delivery=delivered)
            if queued < len(batch):
                failed = next(m["_error"] for m in batch if "_error" in m)
                raise BufferError(f"{len(batch) - queued} messages not queued: {failed!r}")
        if not messages:
            future.set_result(None)
        return future

    def produce_nowait(self, topic: str, key: bytes, values: list[bytes]) -> None:
        """Fire and forget, in one call (the impression log must not delay a feed); what the
        local queue cannot take is logged, not raised."""
        if self._stop.is_set():
            log.error("%d messages to %s not queued: the producer is closed", len(values), topic)
            return
        batch = [{"key": key, "value": v} for v in values]
        queued = self._producer.produce_batch(topic, batch)
        if queued < len(batch):
            failed = next(m["_error"] for m in batch if "_error" in m)
            log.error(
                "%d of %d messages to %s not queued: %r",
                len(batch) - queued,
                len(batch),
                topic,
                failed,
            )

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued, stop the poller and close the client (what is still
        queued after `timeout_s` fails now): its connections and threads go at once, not
        whenever the object holding it does."""
        self._producer.flush(timeout_s)
        self._stop.set()
        self._poller.join(timeout=1)
        with self._lock:
            self._producer.purge()
            self._producer.close()


# The producer's id or sequence is no longer accepted: only a new producer can go on.
_PRODUCER_STATE_ERRORS = frozenset(
    {
        KafkaError.PRODUCER_FENCED,
        KafkaError.INVALID_PRODUCER_EPOCH,
        KafkaError.UNKNOWN_PRODUCER_ID,
        KafkaError.OUT_OF_ORDER_SEQUENCE_NUMBER,
    }
)


def _needs_new_producer(err: KafkaError) -> bool:
    return bool(err.fatal()) or err.code() in _PRODUCER_STATE_ERRORS


def _settle(future: asyncio.Future[None], err: KafkaError | None) -> None:
    if future.done():
        return
    if err is None:
        future.set_result(None)
    else:
        future.set_exception(BrokerUnavailable(str(err)))


def end_offsets(
    settings: Settings, partitions: list[str], timeout_s: float = 2.0
) -> dict[str, int]:
    """The broker's high watermark of each "topic:partition" ({} if it cannot be reached)."""
    if not settings.kafka_bootstrap:
        return {}
    consumer = Consumer(client_config(settings, **{"group.id": "swipeloop-status"}))
    try:
        out = {}
        for key in partitions:
            topic, partition = key.rsplit(":", 1)
            _, high = consumer.get_watermark_offsets(
                TopicPartition(topic, int(partition)), timeout=timeout_s
            )
            out[key] = int(high)
        return out
    except KafkaException:
        return {}
    finally:
        consumer.close()
