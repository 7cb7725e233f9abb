"""The model registry: versioned artefacts on disk and which one serves.

    models/
      20261128T030000123456Z/   model.txt (LightGBM), meta.json (`ModelInfo`), report.json
      PRODUCTION                the version every API serves (replaced atomically)
      history.jsonl             every promotion and rollback, oldest first

A version is written to a hidden staging folder and renamed into place, so a reader sees a
complete version or none. Promoting rewrites PRODUCTION (write a temporary file, then
`os.replace`) and appends to the history; APIs poll PRODUCTION and hot-swap the model. A
rollback promotes the version that served before the current one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import lightgbm as lgb
import msgspec

from models.features.ranking import FEATURE_NAMES

PRODUCTION = "PRODUCTION"
HISTORY = "history.jsonl"
KEEP = 20  # versions kept on disk (the serving one and its history are never pruned)


class RegistryError(RuntimeError):
    """A version that does not exist, or nothing to roll back to."""


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
    """What the registry records next to each model artefact (`meta.json`)."""

    metrics: dict[str, Any] = msgspec.field(default_factory=dict)  # the offline evaluation


def save(
    models_dir: Path,
    booster: lgb.Booster,
    rows: int,
    positives: int,
    auc: float | None,
    data_from: datetime,
    data_to: datetime,
    metrics: dict[str, Any] | None = None,
) -> ModelInfo:
    """Write model.txt and meta.json to a new version folder, atomically (not promoted)."""
    now = datetime.now(UTC)
    version = now.strftime("%Y%m%dT%H%M%S%fZ")
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = models_dir / f".{version}"
    staging.mkdir()
    text = booster.model_to_string()
    (staging / "model.txt").write_text(text)
    info = ModelInfo(
        version=version,
        created_at=now.isoformat(),
        rows=rows,
        positives=positives,
        auc=auc,
        feature_names=list(FEATURE_NAMES),
        data_from=data_from.isoformat(),
        data_to=data_to.isoformat(),
        sha256=hashlib.sha256(text.encode()).hexdigest(),
        metrics=metrics or {},
    )
    (staging / "meta.json").write_text(json.dumps(msgspec.to_builtins(info), indent=2))
    os.replace(staging, models_dir / version)
    return info


def versions(models_dir: Path) -> list[ModelInfo]:
    """Every complete version, oldest first."""
    if not models_dir.is_dir():
        return []
    return [
        info(models_dir, p.name)
        for p in sorted(models_dir.iterdir())
        if p.is_dir() and not p.name.startswith(".") and (p / "meta.json").is_file()
    ]


def info(models_dir: Path, version: str) -> ModelInfo:
    """One version's record."""
    meta = models_dir / version / "meta.json"
    if not meta.is_file():
        raise RegistryError(f"no model version {version!r} in {models_dir}")
    return msgspec.json.decode(meta.read_bytes(), type=ModelInfo)


def production(models_dir: Path) -> str | None:
    """The version that serves, if one was promoted."""
    pointer = models_dir / PRODUCTION
    return pointer.read_text().strip() or None if pointer.is_file() else None


def promote(models_dir: Path, version: str, reason: str) -> None:
    """Make `version` the one every API serves (within their poll interval)."""
    _same_features(info(models_dir, version))  # (info refuses a version that does not exist)
    _switch(models_dir, version, "promote", reason)


def rollback(models_dir: Path, reason: str = "rollback") -> str:
    """Serve again the version that served before the current one; returns it."""
    current = production(models_dir)
    served = [e["version"] for e in history(models_dir)]
    # the serving version's history ends with it; what served before it is the rollback target
    while served and served[-1] == current:
        served.pop()
    if not served:
        raise RegistryError("no earlier production version to roll back to")
    target = str(served[-1])
    _switch(models_dir, target, "rollback", reason)
    return target


def history(models_dir: Path) -> list[dict[str, Any]]:
    """Promotions and rollbacks, oldest first; a rollback's target is removed from the
    path back (rolling back twice goes two versions back, not forth)."""
    served: list[dict[str, Any]] = []
    for entry in log(models_dir):
        if entry["action"] == "rollback":
            while served and served[-1]["version"] != entry["version"]:
                served.pop()  # the versions rolled back from
            continue
        served.append(entry)
    return served


def log(models_dir: Path) -> list[dict[str, Any]]:
    """Every promotion and rollback as written, oldest first."""
    path = models_dir / HISTORY
    return [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []


def load(models_dir: Path, version: str) -> lgb.Booster:
    """One version's booster, refusing an artefact whose features or checksum differ."""
    record = _same_features(info(models_dir, version))
    text = (models_dir / version / "model.txt").read_text()
    if hashlib.sha256(text.encode()).hexdigest() != record.sha256:
        raise RegistryError(f"model {version}: model.txt does not match its checksum")
    return lgb.Booster(model_str=text)


def prune(models_dir: Path, keep: int = KEEP) -> None:
    """Keep the newest `keep` versions, and every version that ever served."""
    served = {e["version"] for e in log(models_dir)}
    old = [v.version for v in versions(models_dir)][:-keep]
    for version in old:
        if version not in served:
            shutil.rmtree(models_dir / version, ignore_errors=True)


def _same_features(record: ModelInfo) -> ModelInfo:
    """The record, if its model reads the features the code computes now."""
    if tuple(record.feature_names) != FEATURE_NAMES:
        raise RegistryError(
            f"model {record.version} was trained on other features: {record.feature_names}"
        )
    return record


def _switch(models_dir: Path, version: str, action: str, reason: str) -> None:
    staging = models_dir / f".{PRODUCTION}.{os.getpid()}"
    staging.write_text(version + "\n")
    with (models_dir / HISTORY).open("a") as out:
        out.write(
            json.dumps(
                {
                    "at": datetime.now(UTC).isoformat(),
                    "action": action,
                    "version": version,
                    "reason": reason,
                }
            )
            + "\n"
        )
    os.replace(staging, models_dir / PRODUCTION)
