"""What the embeddings tests send: swipes at a given event time, and a catalog of n items."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from swipeloop.contracts import EventKind, Item, ReceivedEvent

START = datetime(2026, 11, 27, 12, tzinfo=UTC)


def event(user: str, item: str, kind: EventKind, at: datetime, watch_ms: int = 0) -> ReceivedEvent:
    """One swipe of `user` on `item` at event time `at`."""
    return ReceivedEvent(
        event_id=uuid.uuid4(),
        user_id=user,
        item_id=item,
        kind=kind,
        client_ts=at,
        session_id=f"s-{user}",
        seq=0,
        watch_ms=watch_ms,
        received_at=at,
    )


def catalog(n: int) -> list[Item]:
    """Items i0..i{n-1} of five creators, one tag each."""
    tags = ["cats", "dogs", "food", "dance"]
    return [
        Item(
            item_id=f"i{k}",
            creator_id=f"c{k % 5}",
            duration_ms=15_000,
            tags=[tags[k % 4]],
            created_at=START - timedelta(days=1),
        )
        for k in range(n)
    ]


# run in a process on the role's own chdb path (chdb: one path per process)
READ_IDS = """
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
import json
client = connect(Settings.from_env())
out = {}
for table, key in (("item_embeddings", "item_id"), ("user_embeddings", "user_id")):
    sql = f"SELECT {key} FROM {table} FINAL WHERE deleted = 0 AND cold = 0"
    out[table] = sorted(r[0] for r in client.query(sql).result_rows)
print(json.dumps(out))
"""
