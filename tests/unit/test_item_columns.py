"""The catalog a replica keeps as columns: items read back whole from their rows, and a
bootstrap snapshot applied at once lands exactly where applying it item by item would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import msgspec
import numpy as np
from clickhouse_connect.driver.client import Client

from api.bootstrap import CatalogRows
from api.item_columns import NO_CODE, TAG_SLOTS, ItemRows
from api.state import ServingState
from swipeloop.contracts import Item
from swipeloop.settings import Settings
from tests.unit.test_retrieval import event

NOW = datetime.now(UTC).replace(microsecond=123_456)


def state() -> ServingState:
    return ServingState(Settings(embedding_dim=8), cast(Client, None))


def catalog(n: int = 40) -> list[Item]:
    """Items with none to nine tags (past the row's slots), some with a sound, a few taken down."""
    return [
        Item(
            item_id=f"i{i}",
            creator_id=f"c{i % 7}",
            duration_ms=1_000 + i,
            tags=[f"t{(i + k) % 11}" for k in range(i % 10)],
            sound_id=f"s{i % 3}" if i % 2 else None,
            created_at=NOW - timedelta(seconds=i, microseconds=i),
            deleted=i % 9 == 4,
        )
        for i in range(n)
    ]


def as_rows(items: list[Item]) -> CatalogRows:
    """Items as the bootstrap reads them: columns, names as positions in lists of distinct ones."""
    creators = sorted({i.creator_id for i in items})
    tags = sorted({t for i in items for t in i.tags})
    sounds = sorted({i.sound_id for i in items if i.sound_id})
    return CatalogRows(
        ids=[i.item_id for i in items],
        creator_ids=creators,
        tag_names=tags,
        sound_ids=sounds,
        rows=ItemRows(
            creator=np.array([creators.index(i.creator_id) for i in items]),
            tag_starts=np.cumsum([0, *(len(i.tags) for i in items)]),
            tag=np.array([tags.index(t) for i in items for t in i.tags], dtype=np.int64),
            sound=np.array([sounds.index(i.sound_id) if i.sound_id else NO_CODE for i in items]),
            created_s=np.array([i.created_at.timestamp() for i in items]),
            duration_ms=np.array([float(i.duration_ms) for i in items]),
            deleted=np.array([i.deleted for i in items]),
        ),
    )


def in_catalog(items: list[Item]) -> dict[str, Item]:
    return {i.item_id: i for i in items if not i.deleted}


def test_the_catalog_reads_each_item_back_from_its_row() -> None:
    s, items = state(), catalog()
    assert max(len(i.tags) for i in items) > TAG_SLOTS
    for item in items:
        s.apply_item(item)
    assert dict(s.catalog) == in_catalog(items)
    assert len(s.catalog) == len(in_catalog(items))
    assert "i4" not in s.catalog and "nope" not in s.catalog and s.catalog.get("i4") is None
    back = Item(item_id="i4", creator_id="c9", duration_ms=5, created_at=NOW)
    s.apply_item(back)
    assert s.catalog["i4"] == back
    s.apply_item(Item(item_id="i9", creator_id="c2", duration_ms=5, tags=["x"], created_at=NOW))
    assert s.catalog["i9"].tags == ["x"]  # fewer tags than before: the extra ones went


def test_a_snapshot_applied_at_once_lands_where_item_by_item_would() -> None:
    items = catalog(300)
    changed = [  # then a second snapshot: creators changed, items taken down and put back
        msgspec.structs.replace(i, creator_id=f"c{k % 5}", deleted=k % 9 == 2)
        for k, i in enumerate(items[::2])
    ]
    one_by_one, at_once = state(), state()
    for snapshot in (items, changed):
        for item in snapshot:
            one_by_one.apply_item(item)
        at_once.apply_catalog(as_rows(snapshot))
        assert dict(at_once.catalog) == dict(one_by_one.catalog)
        assert at_once.deleted == one_by_one.deleted
        ids = [i.item_id for i in items]
        codes = at_once.codes(ids)
        np.testing.assert_array_equal(codes, one_by_one.codes(ids))
        for name in ("alive", "created_s", "duration_ms", "as_of_s"):  # (tags: coded by name)
            a, b = getattr(at_once.columns, name), getattr(one_by_one.columns, name)
            np.testing.assert_array_equal(a[codes], b[codes], err_msg=name)
        for creator in (f"c{k}" for k in range(7)):  # by name: coded in another order
            follows = [{s.creators.code(creator)} for s in (at_once, one_by_one)]
            assert at_once.items.names(at_once.by_creators(follows[0])) == (
                one_by_one.items.names(one_by_one.by_creators(follows[1]))
            )
    assert dict(at_once.catalog) == in_catalog([*items[1::2], *changed])


def test_an_event_reads_its_item_from_the_columns() -> None:
    s = state()
    item = catalog(8)[7]  # creator c0, seven tags: three past the row's slots
    s.apply_item(item)
    s.apply_event(event("u", "i7", "follow"))
    s.apply_event(event("u", "i7", "like"))
    s.apply_event(event("u", "unknown", "follow"))  # not in the catalog: no creator to follow
    user = s.user("u")
    assert user.followed == {s.creators.code("c0")}
    assert set(s.tags.names(user.tag_affinity.keys())) == set(item.tags)
