"""What the embeddings flow reads: a poll's events as the learner's columns, and the uploads
and deletions the item catalog announces."""

from __future__ import annotations

from datetime import datetime

import numpy as np

from dataflows.catalog import Catalog
from models.counting import seconds_of
from models.features.weights import affinity_weights, kind_codes
from models.items import ItemTable
from models.learning import Swipes
from swipeloop.contracts import ReceivedEvent

_IMPRESSION = int(kind_codes(["impression"])[0])
Upload = tuple[str, str, tuple[str, ...]]  # an item, its creator and tags


def event_order(event: ReceivedEvent) -> tuple[datetime, int]:
    """The order the single learner learns in (`models.ordering`): when the server received
    the event, then its id. Not the phone's time: one phone minutes ahead would hold every
    later swipe of its partition back until the other partitions' reached its clock."""
    return event.received_at, event.event_id.int


def swipes_of(events: list[ReceivedEvent], items: ItemTable) -> Swipes:
    """A poll's events as the learner's columns (creator and tags from the catalog)."""
    n = len(events)
    item_ids = [e.item_id for e in events]
    with items.lock:
        code = items.codes(item_ids)
        duration = items.duration.view()[code]
        creator = items.creator.view()[code]
        tag_event, tag_codes = items.tags_of(code)
        creator_keys = items.creators.keys
        creators = [None if c < 0 else creator_keys[c] for c in creator.tolist()]
        tags = items.tags.keys[tag_codes].tolist()
    kinds = kind_codes([e.kind for e in events])
    watch_ms = np.fromiter((e.watch_ms for e in events), np.float64, n)
    return Swipes(
        users=[e.user_id for e in events],
        items=item_ids,
        creators=creators,
        weights=affinity_weights(kinds, watch_ms, duration),
        impression=kinds == _IMPRESSION,
        seconds=seconds_of((e.client_ts for e in events), n),
        tag_event=tag_event,
        tags=tags,
    )


def uploads(catalog: Catalog, since: int) -> tuple[list[Upload], list[str], int]:
    """Items the catalog announced after position `since`: uploads (item, creator, tags),
    deleted items, and the position after them."""
    changed, at = catalog.changed(since)
    new, deleted = [], []
    for item_id in dict.fromkeys(changed):
        known = catalog.get(item_id)
        if known is None:
            continue
        if known.deleted:
            deleted.append(item_id)
        else:  # (an item that has a vector already is passed over by `announce`)
            new.append((item_id, known.creator_id, tuple(known.tags)))
    return new, deleted, at
