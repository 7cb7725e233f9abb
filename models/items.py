"""Phase one's view of the item catalog: what counting needs of an item, in numpy arrays.

Every item id seen gets a persistent integer code, with its duration, creator and tags in
arrays by code, so counting a batch costs one dict lookup per event and array indexing
for the rest; the catalog is read once per item, and again only when it changes it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from itertools import repeat
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from swipeloop.arrays import Ids, Ints, UInts


class ItemInfo(Protocol):
    """What counting needs to know of an item."""

    @property
    def creator_id(self) -> str: ...
    @property
    def duration_ms(self) -> int: ...
    @property
    def tags(self) -> tuple[str, ...]: ...


class CatalogView(Protocol):
    """Item lookups, and which items changed (the catalog's log of applied ids)."""

    def get(self, item_id: str) -> ItemInfo | None: ...

    def changed(self, since: int) -> tuple[list[str], int]:
        """The ids applied since position `since`, and the position after them."""
        ...


def keys_of(values: Iterable[Any], count: int) -> Ids:
    """A 1-d object array of keys."""
    return np.fromiter(values, dtype=object, count=count)


_FNV_OFFSET = np.uint64(0xCBF29CE484222325)
_FNV_PRIME = np.uint64(0x100000001B3)


def mix(z: UInts) -> UInts:
    """The splitmix64 finalizer: every input bit moves every output bit."""
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def stable_ids(keys: Ids) -> UInts:
    """A 64-bit id per string, the same in every process and run (FNV-1a over the code
    points, then mixed), computed column by column in numpy: no Python work per key."""
    if not len(keys):
        return np.empty(0, np.uint64)
    text = keys.astype(np.str_)  # fixed width, zero-padded code points
    points = text.view(np.uint32).reshape(len(keys), -1).astype(np.uint64)
    h = np.full(len(keys), _FNV_OFFSET, dtype=np.uint64)
    for column in points.T:  # padding is skipped: an id does not depend on its batch
        h = np.where(column != 0, (h ^ column) * _FNV_PRIME, h)
    return mix(h)


class Column:
    """A numpy array that grows by appending (capacity doubles)."""

    def __init__(self, dtype: npt.DTypeLike, fill: Any = 0) -> None:
        self.data: npt.NDArray[Any] = np.full(64, fill, dtype=dtype)
        self.size = 0
        self._fill = fill

    def append(self, values: npt.NDArray[Any]) -> None:
        end = self.size + len(values)
        if end > len(self.data):
            grown = np.full(max(end, 2 * len(self.data)), self._fill, dtype=self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size : end] = values
        self.size = end

    def view(self) -> npt.NDArray[Any]:
        return self.data[: self.size]


class Names:
    """Strings with persistent integer codes (in order of registration) and stable ids."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self._keys = Column(object, None)
        self._ids = Column(np.uint64)

    def register(self, keys: Iterable[str]) -> None:
        """Give the strings not known yet the next codes."""
        new = [k for k in dict.fromkeys(keys) if k not in self.codes]
        if new:
            start = self._keys.size
            self.codes.update(zip(new, range(start, start + len(new)), strict=True))
            named = keys_of(new, len(new))
            self._keys.append(named)
            self._ids.append(stable_ids(named))

    def codes_of(self, values: Sequence[str]) -> Ints:
        """The code of each string, registering the new ones."""
        self.register(values)
        return np.fromiter(map(self.codes.__getitem__, values), np.int64, len(values))

    @property
    def keys(self) -> Ids:
        return self._keys.view()

    @property
    def ids(self) -> UInts:
        return self._ids.view()


class ItemTable:
    """Items by code: duration (0: unknown), creator code (-1: unknown) and tag codes.

    Shared by the workers of a process: hold `lock` from `codes` to the last array read."""

    def __init__(self, catalog: CatalogView) -> None:
        self.catalog = catalog
        self.lock = threading.Lock()
        self.position = 0  # how far into the catalog's change log this table has read
        self.items, self.creators, self.tags = Names(), Names(), Names()
        self.duration = Column(np.float64)
        self.creator = Column(np.int64, -1)
        self.tag_first = Column(np.int64)  # where an item's tags start in tag_flat
        self.tag_count = Column(np.int64)
        self.tag_flat = Column(np.int64)

    def codes(self, item_ids: Sequence[str]) -> Ints:
        """The code of each item, registering new ones (after applying catalog changes)."""
        changed, self.position = self.catalog.changed(self.position)
        known = [i for i in dict.fromkeys(changed) if i in self.items.codes]
        if known:
            self._read(known)
        get = self.items.codes.get
        codes = np.fromiter(map(get, item_ids, repeat(-1)), np.int64, len(item_ids))
        missing = np.flatnonzero(codes < 0).tolist()
        if missing:
            new = list(dict.fromkeys(item_ids[i] for i in missing))
            self.items.register(new)
            blank = len(new)
            self.duration.append(np.zeros(blank))
            self.creator.append(np.full(blank, -1))
            self.tag_first.append(np.zeros(blank, np.int64))
            self.tag_count.append(np.zeros(blank, np.int64))
            self._read(new)
            codes[missing] = [self.items.codes[item_ids[i]] for i in missing]
        return codes

    def tags_of(self, codes: Ints) -> tuple[Ints, Ints]:
        """Every (position in `codes`, tag code) pair of the items `codes`, in order."""
        per_item = self.tag_count.view()[codes]
        at = np.repeat(np.arange(len(codes)), per_item)
        nth = np.arange(len(at)) - np.repeat(np.cumsum(per_item) - per_item, per_item)
        return at, self.tag_flat.view()[self.tag_first.view()[codes[at]] + nth]

    def _read(self, item_ids: list[str]) -> None:
        """(Re)read items from the catalog: once per new or changed item, not per event."""
        found = [(self.items.codes[i], self.catalog.get(i)) for i in item_ids]
        infos = [(code, info) for code, info in found if info is not None]
        self.creators.register(info.creator_id for _, info in infos)
        self.tags.register(tag for _, info in infos for tag in info.tags)
        for code, info in infos:
            tags = np.array([self.tags.codes[t] for t in info.tags], dtype=np.int64)
            self.duration.data[code] = info.duration_ms
            self.creator.data[code] = self.creators.codes[info.creator_id]
            self.tag_first.data[code] = self.tag_flat.size
            self.tag_count.data[code] = len(tags)
            self.tag_flat.append(tags)
