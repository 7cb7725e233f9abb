"""Settings for more than one machine: librdkafka settings, topic replication, flow clusters."""

from __future__ import annotations

from pathlib import Path

import pytest

from dataflows.runner import ClusterShapeError, recovery_config, recovery_dir, recovery_parts
from swipeloop.kafka import check_client_config, client_config
from swipeloop.settings import Settings, SettingsError
from swipeloop.topics import TOPICS, topic_config

SASL = {
    "SWIPELOOP_KAFKA_BOOTSTRAP": "broker-1:9092,broker-2:9092",
    "SWIPELOOP_KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "SWIPELOOP_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "SWIPELOOP_KAFKA_SASL_USERNAME": "swipeloop",
    "SWIPELOOP_KAFKA_SASL_PASSWORD": "s3cret",
}


def test_kafka_variables_that_are_no_setting_of_ours_reach_every_client() -> None:
    settings = Settings.from_env(SASL)
    assert settings.kafka_bootstrap == "broker-1:9092,broker-2:9092"
    config = client_config(settings, **{"group.id": "g"})
    assert config["security.protocol"] == "SASL_SSL"
    assert config["sasl.mechanism"] == "SCRAM-SHA-512"
    assert config["sasl.username"] == "swipeloop" and config["sasl.password"] == "s3cret"
    assert config["bootstrap.servers"] == "broker-1:9092,broker-2:9092"
    assert config["group.id"] == "g"
    assert "s3cret" not in repr(settings)  # (kept out of logs)
    check_client_config(settings)  # librdkafka takes them


def test_a_kafka_setting_librdkafka_does_not_know_is_refused_by_its_variable() -> None:
    with pytest.raises(SettingsError, match=r"SWIPELOOP_KAFKA_SASL_MECHANISMX.*sasl.mechanismx"):
        check_client_config(Settings.from_env({"SWIPELOOP_KAFKA_SASL_MECHANISMX": "PLAIN"}))
    bad = {"SWIPELOOP_KAFKA_SECURITY_PROTOCOL": "TLS"}
    with pytest.raises(SettingsError, match=r"SWIPELOOP_KAFKA_SECURITY_PROTOCOL='TLS'.*Invalid"):
        check_client_config(Settings.from_env(bad))
    with pytest.raises(SettingsError, match="did you mean SWIPELOOP_KAFKA_BOOTSTRAP"):
        Settings.from_env({"SWIPELOOP_KAFKA_BOOTSTRAPP": "x:1"})


def test_topics_are_replicated_on_a_cluster_and_not_on_the_embedded_broker() -> None:
    assert Settings().replication == (1, 1)  # spawns its own broker
    assert Settings(kafka_bootstrap="127.0.0.1:1", broker_epoch="e").replication == (1, 1)
    assert Settings(kafka_bootstrap="redpanda:9092").replication == (3, 2)
    single = Settings(kafka_bootstrap="redpanda:9092", topic_replicas=1, topic_min_insync=1)
    assert single.replication == (1, 1)
    compacted = next(spec for spec in TOPICS if spec.compacted)
    config = topic_config(compacted, Settings(kafka_bootstrap="redpanda:9092"))
    assert config == {"min.insync.replicas": "2", "cleanup.policy": "compact"}


def test_a_flow_cluster_shape_is_checked_where_it_is_read() -> None:
    two = {"SWIPELOOP_FLOW_PROCESSES": "2", "SWIPELOOP_FLOW_ADDRESSES": "a:1;b:2"}
    settings = Settings.from_env({**two, "SWIPELOOP_FLOW_PROCESS_ID": "1"})
    assert settings.flow_cluster_addresses == ["a:1", "b:2"]
    with pytest.raises(SettingsError, match="FLOW_PROCESS_ID=2: expected 0 to 1"):
        Settings.from_env({**two, "SWIPELOOP_FLOW_PROCESS_ID": "2"})
    with pytest.raises(SettingsError, match="expected 2 host:port addresses"):
        Settings.from_env({**two, "SWIPELOOP_FLOW_ADDRESSES": "a:1"})
    with pytest.raises(SettingsError, match="'b' is not host:port"):
        Settings.from_env({**two, "SWIPELOOP_FLOW_ADDRESSES": "a:1;b"})


def test_each_process_keeps_the_recovery_partitions_of_its_own_workers(tmp_path: Path) -> None:
    shape = {"flow_processes": 3, "flow_workers": 2, "flow_addresses": "a:1;b:1;c:1"}
    second = Settings(data_dir=tmp_path, flow_process_id=1, **shape)  # type: ignore[arg-type]
    assert list(recovery_parts(second)) == [2, 3]
    recovery_config(second, "features")
    store = recovery_dir(second, "features")
    assert store.name == "process-1-of-3"
    assert sorted(f.name for f in store.glob("*.sqlite3")) == ["part-2.sqlite3", "part-3.sqlite3"]
    recovery_config(second, "features")  # a restart with the same shape
    wider = second.with_(flow_workers=3)
    with pytest.raises(ClusterShapeError, match="made for another cluster shape"):
        recovery_config(wider, "features")


def test_a_store_is_whole_or_absent_even_when_its_making_was_killed(tmp_path: Path) -> None:
    shape = {"flow_processes": 2, "flow_workers": 1, "flow_addresses": "a:1;b:1"}
    first = Settings(data_dir=tmp_path, flow_process_id=0, **shape)  # type: ignore[arg-type]
    store = recovery_dir(first, "features")
    left = store.parent / f".{store.name}.making"  # a process killed while it made the store
    left.mkdir(parents=True)
    (left / "part-1.sqlite3").write_bytes(b"")
    store.mkdir()  # (and an empty folder where it goes)
    recovery_config(first, "features")
    assert sorted(f.name for f in store.glob("*")) == ["part-0.sqlite3"]
    assert not left.exists()
