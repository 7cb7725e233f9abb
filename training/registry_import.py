"""A models directory of the file registry from before (version folders of model.txt, meta.json
and report.json; `PRODUCTION`; `history.jsonl`) imported into ClickHouse once, while the
registry there is empty: a user who upgrades keeps their versions, their history and the model
that serves. The files stay where they are: the version folders' model.txt is what the cache
holds anyway.
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
from clickhouse_connect.driver.client import Client

from training.registry import CACHED, Artefact, Change, ModelInfo, save, write_changes

log = logging.getLogger(__name__)
PRODUCTION = "PRODUCTION"
HISTORY = "history.jsonl"


def adopt(client: Client, models_dir: Path) -> int:
    """Import an old models directory if ClickHouse holds no model and no history yet;
    returns the number of versions imported."""
    old = [models_dir / HISTORY, models_dir / PRODUCTION, *models_dir.glob("*/meta.json")]
    if not any(path.is_file() for path in old) or _holds_any(client):
        return 0  # (the new cache holds model.txt alone: it is never taken for an old one)
    return import_files(client, models_dir)


def import_files(client: Client, models_dir: Path) -> int:
    """Insert an old directory's versions, history and pointer; returns the versions' count."""
    found = old_versions(models_dir)
    for made, report in found:
        save(client, made, report)  # (a version saved twice is one row: ReplacingMergeTree)
    history = models_dir / HISTORY
    lines = history.read_bytes() if history.is_file() else b""
    pointer = models_dir / PRODUCTION
    serving = pointer.read_text().strip() if pointer.is_file() else ""
    changes = [_change(json.loads(line)) for line in lines.splitlines() if line.strip()]
    if serving and (not changes or changes[-1].version != serving):  # a pointer set by hand
        after = changes[-1].at + timedelta(microseconds=1) if changes else datetime.now(UTC)
        changes.append(Change(max(after, datetime.now(UTC)), "promote", serving, "imported"))
    if changes:
        # two roles starting on one old directory at once import it once: the same files,
        # the same token, and ClickHouse drops the second insert
        token = "registry-import-" + hashlib.sha256(lines + serving.encode()).hexdigest()
        write_changes(client, changes, token)
    log.info("imported %d model version(s) from %s", len(found), models_dir)
    return len(found)


def old_versions(models_dir: Path) -> list[tuple[Artefact, str]]:
    """Every complete version folder (model.txt and meta.json) with its report, oldest first."""
    if not models_dir.is_dir():
        return []
    found = []
    for folder in sorted(models_dir.iterdir()):
        meta, text = folder / "meta.json", folder / CACHED
        if folder.name.startswith(".") or not (meta.is_file() and text.is_file()):
            continue  # a staging folder of a save that never finished, or a cache entry
        info = msgspec.json.decode(meta.read_bytes(), type=ModelInfo)
        report = folder / "report.json"
        found.append(
            (Artefact(info, text.read_text()), report.read_text() if report.is_file() else "")
        )
    return found


def _holds_any(client: Client) -> bool:
    """Whether ClickHouse's registry holds a version or a change already."""
    held = client.query(
        "SELECT (SELECT count() FROM model_versions) + (SELECT count() FROM model_events)"
    ).result_rows[0][0]
    return int(held) > 0


def _change(entry: dict[str, str]) -> Change:
    """A line of history.jsonl (its times were written in UTC)."""
    at = datetime.fromisoformat(entry["at"])
    at = at if at.tzinfo else at.replace(tzinfo=UTC)
    return Change(at, entry["action"], entry["version"], entry.get("reason", ""))
