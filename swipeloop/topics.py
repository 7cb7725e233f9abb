"""The one topic spec: every topic the system uses, created from here and nowhere else."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from swipeloop.kafka import client_config
from swipeloop.settings import Settings

EVENTS_ACTIONS = "events.actions"
EVENTS_CONTEXT = "events.context"
ITEMS = "items"
IMPRESSIONS = "impressions"
DLQ = "events.dlq"
ITEM_VECTORS = "item-vectors"
USER_VECTORS = "user-vectors"
ITEM_FEATURES = "item-features"
EVENT_TOPICS = (EVENTS_CONTEXT, EVENTS_ACTIONS)  # every swipe, whatever its kind


@dataclass(frozen=True)
class TopicSpec:
    """A topic's name, how it is keyed and how long it keeps data."""

    name: str
    keyed_by: str
    compacted: bool = False
    config: dict[str, str] = field(default_factory=dict)


TOPICS: tuple[TopicSpec, ...] = (
    TopicSpec(EVENTS_ACTIONS, "user_id"),
    TopicSpec(EVENTS_CONTEXT, "user_id"),
    TopicSpec(ITEMS, "item_id"),
    TopicSpec(IMPRESSIONS, "user_id"),
    TopicSpec(DLQ, "source topic-partition"),
    TopicSpec(ITEM_VECTORS, "item_id", compacted=True),
    TopicSpec(USER_VECTORS, "user_id", compacted=True),
    TopicSpec(ITEM_FEATURES, "item_id", compacted=True),
)


def topic_config(spec: TopicSpec, settings: Settings) -> dict[str, str]:
    """A new topic's config: compaction, and the replicas a write needs before the broker
    acknowledges it (with acks=all, a write survives the loss of all but one of them)."""
    config = {"min.insync.replicas": str(settings.replication[1])}
    if spec.compacted:
        config["cleanup.policy"] = "compact"
    return {**config, **spec.config}


def ensure_topics(settings: Settings, timeout_s: float = 10.0) -> list[str]:
    """Create the topics that are missing; return the names created."""
    assert settings.kafka_bootstrap, "ensure_topics needs a broker address"
    admin = AdminClient(client_config(settings, log_level=0))  # failures raise
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [
        NewTopic(
            spec.name,
            num_partitions=settings.topic_partitions,
            replication_factor=settings.replication[0],
            config=topic_config(spec, settings),
        )
        for spec in TOPICS
        if spec.name not in existing
    ]
    if not wanted:
        return []
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result()
        except Exception as exc:  # a concurrent creator is fine; anything else is not
            if "TOPIC_ALREADY_EXISTS" not in str(exc):
                raise RuntimeError(f"cannot create topic {name}: {exc}") from exc
    return [t.topic for t in wanted]
