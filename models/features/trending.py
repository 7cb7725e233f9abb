"""What is trending: an item's recent plays and reactions, decayed by their age."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import numpy.typing as npt

from models.features.counts import HOUR, RECENT, window_counts
from models.features.rates import counter_rates
from models.features.weights import C
from swipeloop.arrays import Floats
from swipeloop.contracts import ItemFeatures


def trending_scores(
    counts: npt.NDArray[np.float32], as_of_s: Floats, now_s: float | Floats
) -> Floats:
    """Plays, likes and completion of the last hour, weighted toward the last 5 minutes and
    decayed by how old the newest counted event is (hours); 0 for an item without live
    features (`as_of_s` NaN). `counts` is (items, RANK_WINDOWS, COUNTERS)."""
    hour, recent = counts[:, HOUR], counts[:, RECENT]
    live = ~np.isnan(as_of_s)
    age_h = np.maximum(now_s - np.where(live, as_of_s, now_s), 0.0) / 3600.0
    raw = (
        np.log1p(hour[:, C["plays"]])
        + 2.0 * np.log1p(recent[:, C["plays"]])
        + 2.0 * np.log1p(hour[:, C["likes"]] + hour[:, C["shares"]])
        + counter_rates(hour, "completion")
        - counter_rates(hour, "early_skips")
    )
    return np.where(live, raw / (1.0 + age_h), 0.0)


def trending_score(f: ItemFeatures | None, now: datetime) -> float:
    """One item's `trending_scores`."""
    as_of = np.array([f.as_of.timestamp() if f is not None else np.nan])
    return float(trending_scores(window_counts(f)[None], as_of, now.timestamp())[0])
