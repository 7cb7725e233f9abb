"""The model registry in ClickHouse, where every role already connects: the versions, every
promotion and rollback, and so the version that serves.

    model_versions   version, sha256, meta (`ModelInfo` as JSON), report (its training run's),
                     model (the LightGBM text); a pruned version is a newer row marked deleted
    model_events     at, action (promote | rollback), version, reason: the newest one names
                     the version every API serves

A host's models directory is only a cache of the text (`<version>/model.txt`), written on the
first load and checked against the version's SHA-256 on every load: an API replica on another
host needs no shared disk, only the ClickHouse it already reads. APIs poll the newest event and
hot-swap the model; a rollback promotes the version that served before the current one.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import lightgbm as lgb
import msgspec
from clickhouse_connect.driver.client import Client

from models.features.ranking import FEATURE_NAMES

logger = logging.getLogger(__name__)
KEEP = 20  # versions kept (the serving one and every one that ever served are never pruned)
CACHED = "model.txt"  # a version's text in a host's cache: <models_dir>/<version>/model.txt
EVENT_COLUMNS = ["at", "action", "version", "reason"]
_LIVE = "FROM model_versions FINAL WHERE deleted = 0"
# where the tables are Distributed (a cluster), a write reaches its shards before the call
# returns, so the next read anywhere (a rollback's history, a replica's poll) sees it
WRITE: dict[str, Any] = {"insert_distributed_sync": 1}


class RegistryError(RuntimeError):
    """A version that does not exist or cannot be trusted, or nothing to roll back to."""


class ModelRecord(msgspec.Struct, frozen=True, kw_only=True):
    """What identifies a model artefact: its version, data and checksum."""

    version: str
    created_at: str
    rows: int
    positives: int
    auc: float | None
    feature_names: list[str]
    data_from: str
    data_to: str
    sha256: str


class ModelInfo(ModelRecord, frozen=True, kw_only=True):
    """What the registry records with each model artefact (the `meta` column)."""

    metrics: dict[str, Any] = msgspec.field(default_factory=dict)  # the offline evaluation


class Change(msgspec.Struct, frozen=True):
    """One promotion or rollback (a row of `model_events`)."""

    at: datetime
    action: str  # "promote" or "rollback"
    version: str
    reason: str


class Listing(msgspec.Struct, frozen=True):
    """Every version and the one that serves (what `swipeloop model list` shows)."""

    serving: str | None
    versions: list[ModelInfo]


@dataclass(frozen=True)
class Artefact:
    """A trained model before it is saved: its record and its LightGBM text."""

    info: ModelInfo
    text: str


def artefact(
    booster: lgb.Booster,
    rows: int,
    positives: int,
    auc: float | None,
    data_from: datetime,
    data_to: datetime,
    metrics: dict[str, Any] | None = None,
) -> Artefact:
    """A new version of `booster`: named by the time, its text checksummed."""
    now = datetime.now(UTC)
    text = booster.model_to_string()
    info = ModelInfo(
        version=now.strftime("%Y%m%dT%H%M%S%fZ"),
        created_at=now.isoformat(),
        rows=rows,
        positives=positives,
        auc=auc,
        feature_names=list(FEATURE_NAMES),
        data_from=data_from.isoformat(),
        data_to=data_to.isoformat(),
        sha256=checksum(text),
        metrics=metrics or {},
    )
    return Artefact(info, text)


def save(client: Client, made: Artefact, report: str = "") -> ModelInfo:
    """Store a version with its training report (JSON), in one insert (not promoted)."""
    row = [made.info.version, made.info.sha256, msgspec.json.encode(made.info).decode()]
    client.insert(
        "model_versions",
        [[*row, report, made.text]],
        column_names=["version", "sha256", "meta", "report", "model"],
        settings=WRITE,
    )
    return made.info


def versions(client: Client) -> list[ModelInfo]:
    """Every version not pruned, oldest first."""
    rows = client.query(f"SELECT meta {_LIVE} ORDER BY version").result_rows
    return [msgspec.json.decode(meta, type=ModelInfo) for (meta,) in rows]


def listing(client: Client) -> Listing:
    """Every version not pruned, oldest first, and the one that serves."""
    return Listing(production(client), versions(client))


def info(client: Client, version: str) -> ModelInfo:
    """One version's record."""
    meta = _one(client, "meta", version)
    return msgspec.json.decode(meta, type=ModelInfo)


def report(client: Client, version: str) -> str:
    """The JSON report of the training run that made a version ("" if saved without one)."""
    return _one(client, "report", version)


def production(client: Client) -> str | None:
    """The version that serves, if one was promoted: the newest change's."""
    rows = client.query("SELECT version FROM model_events ORDER BY at DESC LIMIT 1").result_rows
    return str(rows[0][0]) if rows else None


def promote(client: Client, version: str, reason: str) -> None:
    """Make `version` the one every API serves (within their poll interval)."""
    _same_features(info(client, version))  # (info refuses a version that does not exist)
    _switch(client, version, "promote", reason)


def rollback(client: Client, reason: str = "rollback") -> str:
    """Serve again the version that served before the current one; returns it."""
    current = production(client)
    served = [c.version for c in history(client)]
    # the serving version's history ends with it; what served before it is the rollback target
    while served and served[-1] == current:
        served.pop()
    if not served:
        raise RegistryError("no earlier production version to roll back to")
    target = served[-1]
    _switch(client, target, "rollback", reason)
    return target


def history(client: Client) -> list[Change]:
    """Promotions and rollbacks, oldest first; a rollback's target is removed from the
    path back (rolling back twice goes two versions back, not forth)."""
    served: list[Change] = []
    for change in log(client):
        if change.action == "rollback":
            while served and served[-1].version != change.version:
                served.pop()  # the versions rolled back from
            continue
        served.append(change)
    return served


def log(client: Client) -> list[Change]:
    """Every promotion and rollback as written, oldest first."""
    query = f"SELECT {', '.join(EVENT_COLUMNS)} FROM model_events ORDER BY at"
    rows = client.query(query).result_rows
    return [Change(_utc(at), action, version, reason) for at, action, version, reason in rows]


def write_changes(client: Client, changes: list[Change], token: str | None = None) -> None:
    """Append changes to the history in one insert; a retry with the same token is dropped."""
    settings = {**WRITE, "insert_deduplication_token": token} if token else WRITE
    client.insert(
        "model_events",
        [[c.at, c.action, c.version, c.reason] for c in changes],
        column_names=EVENT_COLUMNS,
        settings=settings,
    )


def load(client: Client, cache: Path, version: str) -> lgb.Booster:
    """One version's booster, from this host's cache if its text there is intact (else from
    ClickHouse, then cached), refusing an artefact whose features or checksum differ."""
    record = _same_features(info(client, version))
    path = cache / version / CACHED
    text = path.read_text() if path.is_file() else None
    if text is None or checksum(text) != record.sha256:
        if text is not None:
            logger.warning("cached %s does not match its checksum; fetching it again", path)
        text = _one(client, "model", version)
        if checksum(text) != record.sha256:
            raise RegistryError(f"model {version}: its text does not match its checksum")
        _cache(path, text)
    return lgb.Booster(model_str=text)


def prune(client: Client, cache: Path | None = None, keep: int = KEEP) -> list[str]:
    """Drop all but the newest `keep` versions, keeping every version that ever served (and
    this host's cache of those dropped); returns the versions dropped."""
    served = {c.version for c in log(client)}
    gone = [v.version for v in versions(client)[:-keep] if v.version not in served]
    if gone:  # a newer row of each, marked deleted, replaces it (its text goes at the merge)
        rows = [[v, 1] for v in gone]
        client.insert("model_versions", rows, column_names=["version", "deleted"], settings=WRITE)
    for version in gone:
        if cache is not None:
            shutil.rmtree(cache / version, ignore_errors=True)
    return gone


def checksum(text: str) -> str:
    """The SHA-256 (hex) of a model's text."""
    return hashlib.sha256(text.encode()).hexdigest()


def _one(client: Client, column: str, version: str) -> str:
    """One column of a version's row (`column` is ours, never input)."""
    rows = client.query(
        f"SELECT {column} {_LIVE} AND version = {{v:String}}", parameters={"v": version}
    ).result_rows
    if not rows:
        raise RegistryError(f"no model version {version!r}")
    return str(rows[0][0])


def _same_features(record: ModelInfo) -> ModelInfo:
    """The record, if its model reads the features the code computes now."""
    if tuple(record.feature_names) != FEATURE_NAMES:
        raise RegistryError(
            f"model {record.version} was trained on other features: {record.feature_names}"
        )
    return record


def _switch(client: Client, version: str, action: str, reason: str) -> None:
    # After every change this writer has seen, whatever its clock says: a rollback follows
    # the history it read, and hosts whose clocks differ a little still agree on the order.
    # (Being distinct also keeps a repeated promotion from passing for a retried insert.)
    newest = client.query("SELECT max(at) FROM model_events").result_rows[0][0]
    at = max(datetime.now(UTC), _utc(newest) + timedelta(microseconds=1))
    write_changes(client, [Change(at, action, version, reason)])


def _cache(path: Path, text: str) -> None:
    """Write a version's text into this host's cache, atomically; a cache that cannot be
    written costs a fetch next time, not the model."""
    staging = path.with_name(f".{CACHED}.{os.getpid()}.{threading.get_ident()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        staging.write_text(text)
        os.replace(staging, path)
    except OSError:
        logger.warning("cannot cache model text at %s", path, exc_info=True)


def _utc(at: datetime) -> datetime:
    """A DateTime64 of a UTC column as the aware datetime it is (the client drops the zone)."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at
