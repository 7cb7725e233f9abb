"""The model registry on the embedded ClickHouse: the production pointer through promotions and
rollbacks, checksums on the way in and out of a host's cache, pruning, the `model` commands, an
old models directory imported once, and two replicas with their own data directories serving
a promotion and a rollback."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest
from clickhouse_connect.driver.client import Client
from typer.testing import CliRunner

from api.services import ModelHolder
from cli.stack import RUNNING, Stack
from swipeloop.clickhouse import connect
from swipeloop.migrations import migrate
from swipeloop.settings import Settings
from tests.conftest import wait_until
from tests.unit.test_training_parts import impressions
from training import registry
from training.ranker import fit
from training.registry import CACHED, Artefact, RegistryError
from training.registry_import import adopt, import_files

pytestmark = pytest.mark.integration


@pytest.fixture
def client(settings: Settings) -> Client:
    """A client on the test's migrated database."""
    client = connect(settings)
    migrate(client)
    return client


def made(seed: int = 5) -> Artefact:
    """A real LightGBM model, not yet saved."""
    data = impressions(seed=seed, requests=20)
    now = datetime.now(UTC)
    return registry.artefact(fit(data), len(data), 0, None, now, now)


def saved(client: Client) -> str:
    return registry.save(client, made()).version


def test_promote_and_rollback_move_the_production_pointer(client: Client) -> None:
    a, b, c = saved(client), saved(client), saved(client)
    assert [v.version for v in registry.versions(client)] == [a, b, c]
    assert registry.production(client) is None
    with pytest.raises(RegistryError):
        registry.rollback(client)
    for version in (a, b, c):
        registry.promote(client, version, "test")
    assert registry.production(client) == c
    assert registry.rollback(client) == b and registry.production(client) == b
    assert registry.rollback(client) == a  # twice: two versions back, not forth
    with pytest.raises(RegistryError):
        registry.rollback(client)
    with pytest.raises(RegistryError, match="no model version 'no-such-version'"):
        registry.promote(client, "no-such-version", "test")
    assert [e.action for e in registry.log(client)] == ["promote"] * 3 + ["rollback"] * 2
    registry.promote(client, c, "again")  # the same promotion twice is two changes
    registry.promote(client, c, "again")
    assert registry.production(client) == c and len(registry.log(client)) == 7


def test_a_version_is_cached_on_first_load_and_checked_on_every_load(
    client: Client, tmp_path: Path
) -> None:
    model = made()
    registry.save(client, model, report='{"run": 1}')
    assert registry.report(client, model.info.version) == '{"run": 1}'
    cached = tmp_path / model.info.version / CACHED
    assert not cached.exists()
    registry.load(client, tmp_path, model.info.version)
    assert cached.read_text() == model.text
    cached.write_text("damaged")  # a damaged cache is fetched again, not trusted
    registry.load(client, tmp_path, model.info.version)
    assert cached.read_text() == model.text

    tampered = Artefact(model.info, model.text.replace("tree", "Tree", 1))
    registry.save(client, tampered)  # a newer row of the version, text unlike its checksum
    cached.unlink()
    with pytest.raises(RegistryError, match="checksum"):
        registry.load(client, tmp_path, model.info.version)
    assert not cached.exists()


def test_pruning_keeps_every_version_that_served(client: Client, tmp_path: Path) -> None:
    first, *middle, last = [saved(client) for _ in range(5)]
    registry.promote(client, first, "test")
    for version in (first, middle[0]):
        registry.load(client, tmp_path, version)
    assert registry.prune(client, tmp_path, keep=2) == middle[:2]
    assert [v.version for v in registry.versions(client)] == [first, middle[2], last]
    assert not (tmp_path / middle[0]).exists() and (tmp_path / first / CACHED).is_file()
    with pytest.raises(RegistryError, match="no model version"):
        registry.load(client, tmp_path, middle[0])


def env_of(settings: Settings) -> dict[str, str]:
    return {
        "SWIPELOOP_CLICKHOUSE_URL": settings.clickhouse_url or "",
        "SWIPELOOP_CLICKHOUSE_DATABASE": settings.clickhouse_database,
        "SWIPELOOP_DATA_DIR": str(settings.data_dir),
    }


def test_model_commands(client: Client, settings: Settings) -> None:
    from cli.app import app

    a, b = saved(client), saved(client)
    runner, env = CliRunner(), env_of(settings)
    assert runner.invoke(app, ["model", "promote", a], env=env).exit_code == 0
    assert runner.invoke(app, ["model", "promote", b], env=env).exit_code == 0
    listed = runner.invoke(app, ["model", "list"], env=env)
    assert listed.exit_code == 0 and a in listed.output and b in listed.output
    assert runner.invoke(app, ["model", "rollback"], env=env).exit_code == 0
    assert registry.production(client) == a
    refused = runner.invoke(app, ["model", "promote", "nope"], env=env)
    assert refused.exit_code == 1 and "no model version" in refused.output


def test_model_commands_beside_a_running_up_ask_it(settings: Settings) -> None:
    """chdb opens a data path from one process only: the commands go through `up`'s admin
    routes, and its API serves the change at once."""
    from cli.app import app

    with Stack(settings, schedule_training=False, run_flows=False) as stack:
        stack.serve_in_thread()
        store = connect(stack.settings)
        a, b = saved(store), saved(store)
        marker = {"url": stack.url, "pid": os.getpid()}
        (settings.data_dir / RUNNING).write_text(json.dumps(marker))
        runner = CliRunner()
        env = {"SWIPELOOP_DATA_DIR": str(settings.data_dir), "SWIPELOOP_CLICKHOUSE_URL": ""}
        models = stack.services.feed.models
        for version in (a, b):
            assert runner.invoke(app, ["model", "promote", version], env=env).exit_code == 0
            assert models.current is not None and models.current.version == version
        listed = runner.invoke(app, ["model", "list"], env=env)
        assert listed.exit_code == 0 and a in listed.output and b in listed.output
        back = runner.invoke(app, ["model", "rollback", "--reason", "worse"], env=env)
        assert back.exit_code == 0 and a in back.output
        assert models.current is not None and models.current.version == a
        assert registry.log(store)[-1].reason == "worse"
        refused = runner.invoke(app, ["model", "promote", "nope"], env=env)
        assert refused.exit_code == 1 and "no model version 'nope'" in refused.output


def old_directory(models_dir: Path, hand_set: str | None = None) -> list[Artefact]:
    """A models directory as the file registry before wrote it: three versions, two promoted
    and one rolled back to (or a pointer set by hand)."""
    models = [made(seed) for seed in (1, 2, 3)]
    for model in models:
        folder = models_dir / model.info.version
        folder.mkdir(parents=True)
        (folder / "model.txt").write_text(model.text)
        (folder / "meta.json").write_text(json.dumps(msgspec.to_builtins(model.info)))
        (folder / "report.json").write_text(json.dumps({"version": model.info.version}))
    (models_dir / ".20260101T000000000000Z").mkdir()  # a save that never finished
    a, b, _ = (m.info.version for m in models)
    at = datetime.now(UTC) - timedelta(days=1)
    lines = [
        {"at": (at + timedelta(minutes=k)).isoformat(), "action": act, "version": v, "reason": r}
        for k, (act, v, r) in enumerate(
            [("promote", a, "first"), ("promote", b, "better"), ("rollback", a, "worse")]
        )
    ]
    (models_dir / "history.jsonl").write_text("".join(json.dumps(e) + "\n" for e in lines))
    (models_dir / "PRODUCTION").write_text((hand_set or a) + "\n")
    return models


def test_an_old_models_directory_is_imported_once(client: Client, tmp_path: Path) -> None:
    old = tmp_path / "models"
    models = old_directory(old)
    a, b, c = (m.info.version for m in models)
    assert adopt(client, old) == 3
    assert [v.version for v in registry.versions(client)] == [a, b, c]
    assert json.loads(registry.report(client, b)) == {"version": b}
    assert [(e.action, e.version) for e in registry.log(client)] == [
        ("promote", a),
        ("promote", b),
        ("rollback", a),
    ]
    assert registry.production(client) == a
    with pytest.raises(RegistryError):  # b was rolled back from: the history goes on as it was
        registry.rollback(client)
    assert adopt(client, old) == 0  # once: ClickHouse holds a registry now
    before = registry.log(client)
    import_files(client, old)  # a second role that found the registry empty at the same time
    assert registry.log(client) == before
    assert [v.version for v in registry.versions(client)] == [a, b, c]
    assert adopt(client, tmp_path / "nothing-here") == 0


def test_a_pointer_set_by_hand_is_imported_as_a_promotion(client: Client, tmp_path: Path) -> None:
    models = old_directory(tmp_path / "models", hand_set="")
    c = models[2].info.version
    (tmp_path / "models" / "PRODUCTION").write_text(c + "\n")
    adopt(client, tmp_path / "models")
    assert registry.production(client) == c
    assert registry.log(client)[-1].reason == "imported"


@pytest.fixture
def replicas(client: Client, settings: Settings, tmp_path: Path) -> Iterator[list[ModelHolder]]:
    """Two API replicas' model pollers, each with its own data directory (its own cache), on
    one ClickHouse: what replicas on two hosts share."""
    holders = [ModelHolder(settings.with_(data_dir=tmp_path / f"host-{k}")) for k in range(2)]
    for holder in holders:
        holder.start()
    yield holders
    for holder in holders:
        holder.stop()


def test_two_replicas_with_their_own_data_serve_a_promotion_and_a_rollback(
    client: Client, replicas: list[ModelHolder], tmp_path: Path
) -> None:
    a, b = saved(client), saved(client)

    def serving(version: str) -> bool:
        return all(r.current is not None and r.current.version == version for r in replicas)

    registry.promote(client, a, "first")  # as the trainer on a third host would
    wait_until(lambda: serving(a), 10, f"model {a} on both replicas")
    registry.promote(client, b, "better")
    wait_until(lambda: serving(b), 10, f"model {b} on both replicas")
    assert registry.rollback(client) == a
    wait_until(lambda: serving(a), 10, f"the rollback to {a} on both replicas")
    for k in range(2):  # each host cached what it served, in its own directory
        cache = tmp_path / f"host-{k}" / "models"
        assert sorted(p.name for p in cache.iterdir()) == [a, b]
