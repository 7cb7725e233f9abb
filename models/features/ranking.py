"""The ranker's input row, one definition for serving, logging and training."""

from __future__ import annotations

from datetime import datetime

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from models.features.counts import DAY, HOUR, RECENT, window_counts
from models.features.rates import counter_rates
from models.features.trending import trending_scores
from models.features.weights import C
from swipeloop.arrays import Floats
from swipeloop.contracts import Item, ItemFeatures

FEATURE_NAMES: tuple[str, ...] = (
    "ann_score",
    "trending",
    "plays_1h",
    "plays_5m",
    "impressions_1h",
    "completion_rate_1h",
    "early_skip_rate_1h",
    "like_rate_1h",
    "share_rate_1h",
    "loop_rate_1h",
    "plays_24h",
    "like_rate_24h",
    "age_hours",
    "duration_s",
    "from_ann",
    "from_trending",
    "from_fresh",
    "covisit",  # co-visited with the user's last watched videos (models.covisit), 0-1
    "tag_affinity",  # the user's decayed affinity for the video's tag (models.affinity)
    "creator_affinity",  # ... and for its creator
    "tag_momentum",  # how everyone takes the video's tag now against usually (a burst)
    "context_completion",  # completion of videos this long on the user's network (context)
)


def ranking_matrix(
    counts: npt.NDArray[np.float32],
    as_of_s: Floats,
    created_s: Floats,
    duration_ms: Floats,
    ann_score: Floats,
    source: npt.NDArray[np.str_],
    now_s: float | Floats,
    covisit: Floats | None = None,
    tag_affinity: Floats | None = None,
    creator_affinity: Floats | None = None,
    tag_momentum: Floats | None = None,
    context_completion: Floats | None = None,
) -> Floats:
    """The ranker's input rows, one per candidate (columns: `FEATURE_NAMES`); logged with each
    impression exactly as served. Arrays are per candidate; `counts` as in `trending_scores`;
    `now_s` the request's time (or each row's, recomputing rows of many requests); the
    request-time signals of the user (co-visitation, affinities, completion on their network)
    are 0 when not given."""
    none = np.zeros(len(counts))
    hour, recent, day = counts[:, HOUR], counts[:, RECENT], counts[:, DAY]
    return np.column_stack(
        [
            ann_score,
            trending_scores(counts, as_of_s, now_s),
            hour[:, C["plays"]],
            recent[:, C["plays"]],
            hour[:, C["impressions"]],
            counter_rates(hour, "completion"),
            counter_rates(hour, "early_skips"),
            counter_rates(hour, "likes"),
            counter_rates(hour, "shares"),
            counter_rates(hour, "loops"),
            day[:, C["plays"]],
            counter_rates(day, "likes"),
            np.maximum(now_s - created_s, 0.0) / 3600.0,
            duration_ms / 1000.0,
            source == "ann",
            source == "trending",
            source == "fresh",
            none if covisit is None else covisit,
            none if tag_affinity is None else tag_affinity,
            none if creator_affinity is None else creator_affinity,
            none if tag_momentum is None else tag_momentum,
            none if context_completion is None else context_completion,
        ]
    )


def logged_rows(column: pa.ChunkedArray) -> npt.NDArray[np.float32]:
    """A column of logged feature rows (ClickHouse `Array(Float32)`, as Arrow) as a matrix
    with a row each."""
    if not len(column):
        return np.zeros((0, len(FEATURE_NAMES)), np.float32)
    rows = column.combine_chunks()
    assert isinstance(rows, pa.ListArray)
    flat = rows.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
    matrix: npt.NDArray[np.float32] = flat.reshape(len(rows), len(FEATURE_NAMES))
    return matrix


def ranking_features(
    item: Item,
    features: ItemFeatures | None,
    ann_score: float,
    source: str,
    now: datetime,
    covisit: float = 0.0,
) -> list[float]:
    """One candidate's `ranking_matrix` row."""
    row = ranking_matrix(
        window_counts(features)[None],
        np.array([features.as_of.timestamp() if features is not None else np.nan]),
        np.array([item.created_at.timestamp()]),
        np.array([float(item.duration_ms)]),
        np.array([ann_score]),
        np.array([source]),
        now.timestamp(),
        np.array([covisit]),
    )
    out: list[float] = row[0].tolist()
    return out
