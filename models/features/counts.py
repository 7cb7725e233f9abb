"""An item's live counters: how `ItemFeatures.counts` is packed, and the windows a ranker
row and the trending score read.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.features.weights import COUNTERS
from swipeloop.arrays import Floats
from swipeloop.contracts import ItemFeatures

COUNTS_DTYPE = np.dtype("<f4")  # how `ItemFeatures.counts` is packed


def counts_of(f: ItemFeatures) -> npt.NDArray[np.float32]:
    """An item's live counters: a row per window, a column per `COUNTERS` entry."""
    return np.frombuffer(f.counts, COUNTS_DTYPE).reshape(len(f.window_s), len(COUNTERS))


def packed_counts(rows: Floats) -> bytes:
    """Counter rows as `ItemFeatures.counts`."""
    return np.ascontiguousarray(rows, COUNTS_DTYPE).tobytes()


# The windows a ranker row and the trending score read, in this order (`window_counts`).
RANK_WINDOWS: tuple[int, ...] = (3600, 300, 86400)
HOUR, RECENT, DAY = range(len(RANK_WINDOWS))


def window_counts(f: ItemFeatures | None) -> npt.NDArray[np.float32]:
    """An item's counters in the `RANK_WINDOWS` (a row each; zeros where it has none)."""
    out = np.zeros((len(RANK_WINDOWS), len(COUNTERS)), dtype=np.float32)
    if f is not None:
        counts = counts_of(f)
        for row, length in enumerate(RANK_WINDOWS):
            if length in f.window_s:
                out[row] = counts[f.window_s.index(length)]
    return out
