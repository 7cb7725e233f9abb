"""The ranker: training set from ClickHouse SQL, LightGBM fit, versioned registry on disk."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import lightgbm as lgb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from models.features import FEATURE_NAMES
from swipeloop import ROOT
from swipeloop.settings import Settings

TRAINING_SQL = ROOT / "sql" / "training" / "training_set.sql"
MIN_ROWS = 50
Matrix = npt.NDArray[np.float32]


class NotEnoughData(RuntimeError):
    """Too few labelled impressions (or only one class) to learn anything."""


@dataclass(frozen=True)
class ModelInfo:
    """What the registry records next to each model artefact."""

    version: str
    created_at: str
    rows: int
    positives: int
    auc: float | None
    feature_names: list[str]
    data_from: str
    data_to: str
    sha256: str


@dataclass(frozen=True)
class Ranker:
    """A loaded model: its version and a predict function over feature rows."""

    version: str
    booster: lgb.Booster

    def predict(self, rows: Matrix) -> npt.NDArray[np.float64]:
        """Scores for a matrix of ranking features (one row per candidate)."""
        return np.asarray(self.booster.predict(rows, num_threads=1), dtype=np.float64)

    def contributions(self, rows: Matrix) -> npt.NDArray[np.float64]:
        """Each feature's contribution to each row's raw score (SHAP values; the last
        column is the model's expected value)."""
        out = self.booster.predict(rows, pred_contrib=True, num_threads=1)
        return np.asarray(out, dtype=np.float64)


def training_set(
    client: Client, settings: Settings
) -> tuple[Matrix, npt.NDArray[np.int8], list[datetime]]:
    """Features, labels and serve times of every labelled impression, oldest first."""
    table = client.query_arrow(
        TRAINING_SQL.read_text(),
        parameters={"label_window_s": settings.label_window_s, "n_features": len(FEATURE_NAMES)},
    )
    if table.num_rows == 0:
        return np.zeros((0, len(FEATURE_NAMES)), np.float32), np.zeros(0, np.int8), []
    features = table.column("features").combine_chunks()
    assert isinstance(features, pa.ListArray)
    x = features.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    matrix = x.reshape(table.num_rows, len(FEATURE_NAMES))
    labels = table.column("label").to_numpy().astype(np.int8)
    served = table.column("served_at").to_pylist()
    return matrix, labels, served


def _auc(labels: npt.NDArray[np.int8], scores: npt.NDArray[np.float64]) -> float | None:
    pos, neg = int(labels.sum()), int(len(labels) - labels.sum())
    if pos == 0 or neg == 0:
        return None
    ranks = np.argsort(np.argsort(scores)) + 1
    return float((ranks[labels == 1].sum() - pos * (pos + 1) / 2) / (pos * neg))


def fit(matrix: Matrix, labels: npt.NDArray[np.int8]) -> tuple[lgb.Booster, float | None]:
    """Fit on the older 80 %, report AUC on the newer 20 %, then refit on everything."""
    if len(labels) < MIN_ROWS or labels.min() == labels.max():
        raise NotEnoughData(
            f"{len(labels)} labelled impressions, {int(labels.sum())} positive: need >= {MIN_ROWS} "
            "with both outcomes (run `swipeloop simulate` first)"
        )
    params = {
        "objective": "binary",
        "learning_rate": 0.1,
        "num_leaves": 31,
        "min_data_in_leaf": 10,
        "verbose": -1,
        "num_threads": 2,
        "seed": 7,
    }
    split = int(len(labels) * 0.8)
    holdout = lgb.train(
        params,
        lgb.Dataset(matrix[:split], labels[:split], feature_name=list(FEATURE_NAMES)),
        num_boost_round=100,
    )
    auc = _auc(labels[split:], np.asarray(holdout.predict(matrix[split:]), dtype=np.float64))
    booster = lgb.train(
        params, lgb.Dataset(matrix, labels, feature_name=list(FEATURE_NAMES)), num_boost_round=100
    )
    return booster, auc


def train(client: Client, settings: Settings, say: Callable[[str], None] = print) -> ModelInfo:
    """Build the training set, fit, save a new version; return what the registry recorded."""
    say("building the training set in ClickHouse")
    matrix, labels, served = training_set(client, settings)
    say(f"{len(labels)} impressions, {int(labels.sum())} positive; fitting LightGBM")
    booster, auc = fit(matrix, labels)
    return save(
        settings.models_dir, booster, len(labels), int(labels.sum()), auc, served[0], served[-1]
    )


def save(
    models_dir: Path,
    booster: lgb.Booster,
    rows: int,
    positives: int,
    auc: float | None,
    data_from: datetime,
    data_to: datetime,
) -> ModelInfo:
    """Write model.txt and meta.json to a new version folder, atomically."""
    now = datetime.now(UTC)
    version = now.strftime("%Y%m%dT%H%M%S%fZ")
    models_dir.mkdir(parents=True, exist_ok=True)
    staging = models_dir / f".{version}"
    staging.mkdir()
    text = booster.model_to_string()
    (staging / "model.txt").write_text(text)
    info = ModelInfo(
        version,
        now.isoformat(),
        rows,
        positives,
        auc,
        list(FEATURE_NAMES),
        data_from.isoformat(),
        data_to.isoformat(),
        hashlib.sha256(text.encode()).hexdigest(),
    )
    (staging / "meta.json").write_text(json.dumps(asdict(info), indent=2))
    os.replace(staging, models_dir / version)
    return info


def latest_version(models_dir: Path) -> str | None:
    """The newest complete version in the registry, if any."""
    if not models_dir.is_dir():
        return None
    versions = sorted(
        p.name
        for p in models_dir.iterdir()
        if not p.name.startswith(".") and (p / "meta.json").is_file()
    )
    return versions[-1] if versions else None


def load(models_dir: Path, version: str) -> Ranker:
    """Load one version, refusing an artefact whose features differ from this code's."""
    folder = models_dir / version
    meta = json.loads((folder / "meta.json").read_text())
    if tuple(meta["feature_names"]) != FEATURE_NAMES:
        raise ValueError(f"model {version} was trained on other features: {meta['feature_names']}")
    return Ranker(version, lgb.Booster(model_file=str(folder / "model.txt")))


def prune(models_dir: Path, keep: int = 20) -> None:
    """Keep the newest `keep` versions."""
    versions = sorted(p for p in models_dir.iterdir() if not p.name.startswith("."))
    for old in versions[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
