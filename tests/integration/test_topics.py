"""Topics as the one spec says, on the embedded broker: replication settings and librdkafka
settings from the environment reach the broker."""

from __future__ import annotations

import pytest
from confluent_kafka.admin import AdminClient, ConfigResource  # type: ignore[attr-defined]

from swipeloop import topics
from swipeloop.broker import EmbeddedBroker
from swipeloop.kafka import client_config
from swipeloop.settings import Settings
from tests.conftest import swipeloop_process

pytestmark = pytest.mark.integration


def test_every_topic_carries_its_min_insync_replicas(live: Settings) -> None:
    admin = AdminClient(client_config(live))
    resources = [ConfigResource("topic", spec.name) for spec in topics.TOPICS]
    for resource, future in admin.describe_configs(resources).items():
        config = {name: entry.value for name, entry in future.result().items()}
        assert config["min.insync.replicas"] == "1", resource  # the embedded broker: one copy
        compacted = next(s.compacted for s in topics.TOPICS if s.name == resource.name)
        assert (config.get("cleanup.policy") == "compact") == compacted, resource


def test_a_librdkafka_setting_from_the_environment_reaches_the_admin_client(
    broker: EmbeddedBroker, live: Settings
) -> None:
    env = {
        "PATH": "/usr/bin:/bin",
        "SWIPELOOP_KAFKA_BOOTSTRAP": broker.bootstrap,
        "SWIPELOOP_BROKER_EPOCH": broker.epoch,
        "SWIPELOOP_DATA_DIR": str(live.data_dir / "cli"),
    }
    plain = swipeloop_process("topics", env=env)
    assert plain.wait(60) == 0, plain.communicate()[1].decode()
    # the broker speaks plaintext: a client told to speak TLS to it cannot list its topics
    tls = swipeloop_process("topics", env={**env, "SWIPELOOP_KAFKA_SECURITY_PROTOCOL": "SSL"})
    _, err = tls.communicate(timeout=120)
    assert tls.returncode != 0
    assert b"broker" in err.lower(), err.decode()[-1000:]
