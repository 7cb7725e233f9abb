"""What a feed needs to know of every item, as numpy columns indexed by item code.

The catalog and the live features arrive one message at a time (the feeder thread writes a
row), or all at once from the bootstrap snapshot (`set_items`); a feed reads whole columns at
the codes of its 10,000 candidates. Columns grow by copy-and-swap of the whole set: a request
holding the previous set reads a consistent, slightly older view, and every code a request can
hold has a row (the state grows the columns before it hands a code to the index or a user).

The columns are also the replica's catalog: `Catalog` reads an `Item` back from a row when one
is asked for, so a replica keeps no object per item (at a million items the `Item` structs and
their strings were ~300 MB, more than the vectors).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np

from api.codes import Interner
from models.features.counts import RANK_WINDOWS, window_counts
from models.features.weights import COUNTERS
from swipeloop.arrays import Bools, Codes, Floats
from swipeloop.contracts import Item, ItemFeatures

NO_CODE = -1
TAG_SLOTS = 4  # tags kept in a row; an item's further tags (up to 32) go to `more_tags`
EPOCH = datetime.fromtimestamp(0, UTC)
COLUMNS = (
    "alive",
    "creator",
    "tag",
    "tags",
    "sound",
    "created_s",
    "duration_ms",
    "counts",
    "as_of_s",
)


class ItemColumns:
    """Per item code: in the catalog or not, creator, tags (the first one apart), sound, upload
    time, duration, and the counters of its live windows (`models.features.counts.RANK_WINDOWS`)."""

    def __init__(self, capacity: int = 1024, more_tags: dict[int, Codes] | None = None) -> None:
        self.alive = np.zeros(capacity, dtype=np.bool_)  # in the catalog, not taken down
        self.creator = np.full(capacity, NO_CODE, dtype=np.int64)
        self.tag = np.full(capacity, NO_CODE, dtype=np.int64)  # first tag
        self.tags = np.full((capacity, TAG_SLOTS), NO_CODE, dtype=np.int32)  # in order
        self.more_tags = {} if more_tags is None else more_tags  # code -> tags past TAG_SLOTS
        self.sound = np.full(capacity, NO_CODE, dtype=np.int32)
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
        out = ItemColumns(max(size, 2 * len(self.alive)), self.more_tags)
        for name in COLUMNS:
            getattr(out, name)[: len(self.alive)] = getattr(self, name)
        return out

    def nbytes(self) -> int:
        """Bytes the columns hold (rows reserved for codes not handed out yet included)."""
        return sum(getattr(self, name).nbytes for name in COLUMNS)

    def set_item(self, code: int, item: Item, creator: int, tags: Codes, sound: int) -> None:
        """A catalog entry (the `alive` flag last: a reader sees a complete row or none)."""
        self.creator[code] = creator
        self.tag[code] = tags[0] if len(tags) else NO_CODE
        self.tags[code] = NO_CODE
        self.tags[code, : min(len(tags), TAG_SLOTS)] = tags[:TAG_SLOTS]
        if len(tags) > TAG_SLOTS:
            self.more_tags[code] = tags[TAG_SLOTS:]
        else:
            self.more_tags.pop(code, None)
        self.sound[code] = sound
        self.created_s[code] = item.created_at.timestamp()
        self.duration_ms[code] = item.duration_ms
        self.alive[code] = not item.deleted

    def set_items(self, codes: Codes, rows: ItemRows) -> None:
        """Many catalog entries at once (distinct codes; `alive` last, as in `set_item`)."""
        self.creator[codes] = rows.creator
        starts, tags = rows.tag_starts, rows.tag
        counts = np.diff(starts)
        self.tag[codes] = NO_CODE
        self.tags[codes] = NO_CODE
        for slot in range(TAG_SLOTS):
            has = np.flatnonzero(counts > slot)
            self.tags[codes[has], slot] = tags[starts[has] + slot]
        first = np.flatnonzero(counts > 0)
        self.tag[codes[first]] = tags[starts[first]]
        for code in codes[counts <= TAG_SLOTS].tolist() if self.more_tags else ():
            self.more_tags.pop(code, None)
        for row in np.flatnonzero(counts > TAG_SLOTS).tolist():
            self.more_tags[int(codes[row])] = tags[starts[row] + TAG_SLOTS : starts[row + 1]].copy()
        self.sound[codes] = rows.sound
        self.created_s[codes] = rows.created_s
        self.duration_ms[codes] = rows.duration_ms
        self.alive[codes] = ~rows.deleted

    def tags_of(self, code: int) -> Codes:
        """An item's tag codes, in order."""
        row = self.tags[code]
        first = row[row != NO_CODE].astype(np.int64)
        more = self.more_tags.get(code)
        return first if more is None else np.concatenate([first, more])

    def set_features(self, code: int, f: ItemFeatures) -> None:
        """An item's newest windows (an older message than the row holds is ignored)."""
        as_of = f.as_of.timestamp()
        if as_of >= np.nan_to_num(self.as_of_s[code], nan=-np.inf):
            self.counts[code] = window_counts(f)
            self.as_of_s[code] = as_of

    def clear_features(self, codes: Codes) -> None:
        self.counts[codes] = 0.0
        self.as_of_s[codes] = np.nan


@dataclass(frozen=True)
class ItemRows:
    """Catalog entries as columns, a row per item, with creators, tags and sounds as codes."""

    creator: Codes
    tag_starts: Codes  # row r's tags are tag[tag_starts[r] : tag_starts[r + 1]]
    tag: Codes
    sound: Codes  # NO_CODE: none
    created_s: Floats
    duration_ms: Floats
    deleted: Bools


@dataclass(frozen=True)
class Names:
    """The interners that turn the columns' codes back into ids."""

    items: Interner
    creators: Interner
    tags: Interner
    sounds: Interner


class Catalog(Mapping[str, Item]):
    """The items in the catalog (not taken down) by id, each read back from its row."""

    def __init__(self, names: Names, columns: Callable[[], ItemColumns]) -> None:
        self._names = names
        self._columns = columns  # (the state swaps in grown columns)

    def __getitem__(self, item_id: str) -> Item:
        code = self._names.items.get(item_id)
        columns = self._columns()
        if code is None or code >= len(columns) or not columns.alive[code]:
            raise KeyError(item_id)
        return self.item(code, columns)

    def item(self, code: int, columns: ItemColumns) -> Item:
        """The `Item` a row holds."""
        sound = int(columns.sound[code])
        return Item(
            item_id=self._names.items.name(code),
            creator_id=self._names.creators.name(int(columns.creator[code])),
            duration_ms=int(columns.duration_ms[code]),
            tags=self._names.tags.names(columns.tags_of(code)),
            sound_id=self._names.sounds.name(sound) if sound != NO_CODE else None,
            created_at=EPOCH + timedelta(microseconds=round(columns.created_s[code] * 1e6)),
        )

    def codes(self) -> Codes:
        """The codes of the items in the catalog."""
        return np.flatnonzero(self._columns().alive).astype(np.int64)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names.items.names(self.codes()))

    def __len__(self) -> int:
        return int(np.count_nonzero(self._columns().alive))

    def __contains__(self, item_id: object) -> bool:
        code = self._names.items.get(item_id) if isinstance(item_id, str) else None
        columns = self._columns()
        return code is not None and code < len(columns) and bool(columns.alive[code])
