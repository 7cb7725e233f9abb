"""The frequency filter before an id gets a vector: a count-min sketch of sightings.

Monolith gives an id an embedding only after it has been seen K times: most ids of a
stream (one-off users, videos nobody watches) are seen once or twice, and a vector each
would be memory spent on noise. Counting them exactly would need the per-id map the
filter is there to avoid, so the counts live in a sketch of fixed size: `depth` rows of
`width` saturating 8-bit counters, an id counted in one cell per row, its count the
smallest of its cells. A sketch never undercounts; it overcounts only when every one of an
id's cells is shared with other ids. Counts
are halved every `width` sightings, so the sketch does not fill up over a long run and an
id must be seen K times within a recent stretch of the stream, not over all of it.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from models.items import mix
from swipeloop.arrays import UInts

_SEEDS = np.array(
    [0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0xD6E8FEB86659FD93],
    dtype=np.uint64,
)


class CountMinFilter:
    """Admits an id once its sketched count reaches `threshold`."""

    def __init__(self, threshold: int, width: int = 1 << 22, depth: int = 3) -> None:
        if not 1 <= depth <= len(_SEEDS):
            raise ValueError(f"depth must be 1..{len(_SEEDS)}, got {depth}")
        if not 1 <= threshold <= 255:
            raise ValueError(f"threshold must be 1..255 (8-bit counters), got {threshold}")
        self.threshold = threshold
        self.width = width
        self._cells = np.zeros((depth, width), dtype=np.uint8)
        self._since_halving = 0

    def _columns(self, ids: UInts) -> npt.NDArray[np.int64]:
        """Each id's cell in every row: (depth, len(ids))."""
        depth = len(self._cells)
        hashed = mix(ids[None, :] ^ _SEEDS[:depth, None])
        return (hashed % np.uint64(self.width)).astype(np.int64)

    def add(self, ids: UInts) -> npt.NDArray[np.bool_]:
        """Count one sighting per entry of `ids` (an id may repeat); whether each entry's id
        has now been seen `threshold` times."""
        if not len(ids):
            return np.zeros(0, dtype=bool)
        columns = self._columns(ids)
        for row, cells in enumerate(columns):
            touched, counts = np.unique(cells, return_counts=True)
            line = self._cells[row]
            line[touched] = np.minimum(line[touched] + counts, 255).astype(np.uint8)
        estimate = self.count_at(columns)
        self._since_halving += len(ids)
        if self._since_halving >= self.width:
            self._cells >>= 1
            self._since_halving = 0
        admitted: npt.NDArray[np.bool_] = estimate >= self.threshold
        return admitted

    def count(self, ids: UInts) -> npt.NDArray[np.uint8]:
        """The sketched count of each id (an upper bound of its true count)."""
        return self.count_at(self._columns(ids))

    def count_at(self, columns: npt.NDArray[np.int64]) -> npt.NDArray[np.uint8]:
        """The smallest of each id's cells, given its column in every row."""
        rows = np.arange(len(columns))[:, None]
        counts: npt.NDArray[np.uint8] = self._cells[rows, columns].min(axis=0)
        return counts

    @property
    def nbytes(self) -> int:
        return int(self._cells.nbytes)
