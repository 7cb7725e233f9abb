"""What a feed needs to know of every item, as numpy columns indexed by item code.

The catalog and the live features arrive one message at a time (the feeder thread writes a
row); a feed reads whole columns at the codes of its 10,000 candidates. Columns grow by
copy-and-swap of the whole set: a request holding the previous set reads a consistent,
slightly older view, and every code a request can hold has a row (the state grows the
columns before it hands a code to the index or a user).
"""

from __future__ import annotations

import numpy as np

from models.features.counts import RANK_WINDOWS, window_counts
from models.features.weights import COUNTERS
from swipeloop.contracts import Item, ItemFeatures

NO_CODE = -1


class ItemColumns:
    """Per item code: in the catalog or not, creator, first tag, upload time, duration, and
    the counters of its live windows (`models.features.counts.RANK_WINDOWS`)."""

    def __init__(self, capacity: int = 1024) -> None:
        self.alive = np.zeros(capacity, dtype=np.bool_)  # in the catalog, not taken down
        self.creator = np.full(capacity, NO_CODE, dtype=np.int64)
        self.tag = np.full(capacity, NO_CODE, dtype=np.int64)  # first tag
        self.created_s = np.zeros(capacity, dtype=np.float64)
        self.duration_ms = np.zeros(capacity, dtype=np.float64)
        self.counts = np.zeros((capacity, len(RANK_WINDOWS), len(COUNTERS)), dtype=np.float32)
        self.as_of_s = np.full(capacity, np.nan, dtype=np.float64)  # NaN: no live features

    def __len__(self) -> int:
        return len(self.alive)

    def grown(self, size: int) -> ItemColumns:
        """These columns with rows for codes below `size`: self when they fit, else a copy
        twice as large (the caller swaps it in whole, so a reader holding the previous one
        reads a consistent set of arrays)."""
        if size <= len(self.alive):
            return self
        out = ItemColumns(max(size, 2 * len(self.alive)))
        for name in ("alive", "creator", "tag", "created_s", "duration_ms", "counts", "as_of_s"):
            getattr(out, name)[: len(self.alive)] = getattr(self, name)
        return out

    def set_item(self, code: int, item: Item, creator: int, tag: int) -> None:
        """A catalog entry (the `alive` flag last: a reader sees a complete row or none)."""
        self.creator[code] = creator
        self.tag[code] = tag
        self.created_s[code] = item.created_at.timestamp()
        self.duration_ms[code] = item.duration_ms
        self.alive[code] = not item.deleted

    def set_features(self, code: int, f: ItemFeatures) -> None:
        """An item's newest windows (an older message than the row holds is ignored)."""
        as_of = f.as_of.timestamp()
        if as_of >= np.nan_to_num(self.as_of_s[code], nan=-np.inf):
            self.counts[code] = window_counts(f)
            self.as_of_s[code] = as_of

    def clear_features(self, code: int) -> None:
        self.counts[code] = 0.0
        self.as_of_s[code] = np.nan
