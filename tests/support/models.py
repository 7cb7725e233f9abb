"""Real LightGBM rankers for tests: fitted on synthetic rows, saved in the registry."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
from clickhouse_connect.driver.client import Client

from models.features.ranking import FEATURE_NAMES
from training import registry
from training.ranker import Impressions, fit


def trained(client: Client, seed: int) -> str:
    """A real LightGBM ranker saved in the registry (not promoted); its version."""
    rng = np.random.default_rng(seed)
    rows = rng.random((2_000, len(FEATURE_NAMES))).astype(np.float32)
    relevance = np.digitize(rows[:, seed % len(FEATURE_NAMES)], [0.5, 0.8]).astype(np.int32)
    now = datetime.now(UTC)
    data = Impressions(
        rows,
        relevance,
        (relevance >= 2).astype(np.int8),
        (relevance * 5.0).astype(np.float64),
        np.full(200, 10, dtype=np.int64),
        [now] * 200,
    )
    return registry.save(client, registry.artefact(fit(data), len(data), 0, None, now, now)).version
