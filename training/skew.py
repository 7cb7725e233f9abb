"""Training/serving skew: the features logged with a sample of impressions against the same
features recomputed offline from the raw events (sql/training/skew_sample.sql),
through the one `ranking_matrix` the API serves with.

sample      impressions picked by a fixed hash, each with its item's counters recomputed for
            the ranker's windows as they stood when it was served
recompute   ranking_matrix on those counters and the catalogue's facts
compare     a feature is off when it differs by more than `RTOL` (relative) and `ATOL`

Checked: every feature the events and the catalogue determine (the engagement windows, the
item's age and length). Not checked: what only the request knew: its ANN score (the user's
vector at that instant), the trending score (decayed by when the flow last published the
item), the retrieval source flags and the co-visitation score.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
from clickhouse_connect.driver.client import Client

from models.features.counts import RANK_WINDOWS
from models.features.ranking import FEATURE_NAMES, logged_rows, ranking_matrix
from models.features.weights import COUNTERS
from models.windows import WINDOWS
from swipeloop import SQL
from swipeloop.arrays import Floats

SKEW_SQL = SQL / "training" / "skew_sample.sql"
REQUEST_TIME = frozenset(
    {
        "ann_score",
        "trending",
        "from_ann",
        "from_trending",
        "from_fresh",
        "covisit",
        "tag_affinity",
        "creator_affinity",
        "tag_momentum",
        "context_completion",
    }
)
CHECKED: tuple[int, ...] = tuple(
    i for i, name in enumerate(FEATURE_NAMES) if name not in REQUEST_TIME
)
SAMPLE = 2_000  # impressions recomputed per run
RTOL = 0.05
ATOL = 0.01
HOPS = {w.length_s: w.hop_s for w in WINDOWS}  # how the flow slides each window


@dataclass(frozen=True)
class Skew:
    """How often the logged features disagree with their offline recomputation."""

    sampled: int
    mismatch_rate: float | None  # impressions with at least one checked feature off
    by_feature: dict[str, float] = field(default_factory=dict)  # share of impressions off


def compare(logged: Floats, recomputed: Floats) -> Skew:
    """The checked columns of two matrices of ranking rows (one row per impression)."""
    if not len(logged):
        return Skew(0, None)
    columns = list(CHECKED)
    off = ~np.isclose(logged[:, columns], recomputed[:, columns], rtol=RTOL, atol=ATOL)
    by_feature = {FEATURE_NAMES[c]: float(off[:, k].mean()) for k, c in enumerate(columns)}
    return Skew(len(logged), float(off.any(axis=1).mean()), by_feature)


def recompute(table: pa.Table) -> tuple[Floats, Floats]:
    """The sample query's rows (one per impression and window, windows in `RANK_WINDOWS`
    order) as (logged, recomputed) ranking rows."""
    windows = len(RANK_WINDOWS)
    n = table.num_rows // windows
    if n == 0:
        empty = np.zeros((0, len(FEATURE_NAMES)))
        return empty, empty
    counts = np.column_stack(
        [table.column(name).to_numpy().astype(np.float32) for name in COUNTERS]
    ).reshape(n, windows, len(COUNTERS))
    first = slice(0, None, windows)  # each impression's first row carries its facts
    served_s = _seconds(table.column("served_at"))[first]
    logged = logged_rows(table.column("features"))[first].astype(np.float64)
    recomputed = ranking_matrix(
        counts,
        as_of_s=served_s,
        created_s=_seconds(table.column("created_at"))[first],
        duration_ms=table.column("duration_ms").to_numpy().astype(np.float64)[first],
        ann_score=logged[:, FEATURE_NAMES.index("ann_score")],
        source=np.full(n, ""),
        now_s=served_s,
        covisit=logged[:, FEATURE_NAMES.index("covisit")],
    )
    return logged, recomputed


def skew_check(client: Client, sample: int = SAMPLE) -> Skew:
    """Recompute a sample of served impressions' features from the events and compare."""
    table = client.query_arrow(
        SKEW_SQL.read_text(),
        parameters={
            "sample": sample,
            "n_features": len(FEATURE_NAMES),
            "lengths": list(RANK_WINDOWS),
            "hops": [HOPS[length] for length in RANK_WINDOWS],
        },
    )
    return compare(*recompute(table))


def _seconds(column: pa.ChunkedArray) -> Floats:
    """A timestamp column as float seconds since the epoch."""
    millis = column.cast(pa.timestamp("ms", "UTC")).cast(pa.int64()).to_numpy()
    return np.asarray(millis, dtype=np.float64) / 1000.0
