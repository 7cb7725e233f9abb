"""The random event stream the features tests send: out of order, some late, one item popular."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, datetime, timedelta

from swipeloop.contracts import EventKind, Item, ReceivedEvent

WEIGHTS: dict[EventKind, int] = {"impression": 6, "watch": 4, "skip": 3, "loop": 1, "like": 1}
WEIGHTS |= {"share": 1, "comment": 1, "follow": 1, "not_interested": 1, "block": 1}
KINDS = [kind for kind, weight in WEIGHTS.items() for _ in range(weight)]
START = datetime(2026, 11, 27, 12, tzinfo=UTC)
LATENESS = 10


def catalog(rng: random.Random) -> list[Item]:
    """Thirty items of seven creators, with random tags and durations."""
    tags = ["cats", "dogs", "food", "dance", "news", "cars"]
    return [
        Item(
            item_id=f"i{n}",
            creator_id=f"c{n % 7}",
            duration_ms=rng.choice([4_000, 9_000, 15_000, 60_000, 180_000]),
            tags=rng.sample(tags, rng.randint(0, 3)),
            created_at=START - timedelta(days=1),
        )
        for n in range(30)
    ]


def stream(rng: random.Random, n: int) -> tuple[list[ReceivedEvent], int]:
    """Events in arrival order over ~25 minutes of event time: most a few seconds out of
    order, some far behind (late), one item four times as popular as the rest."""
    out, now, late = [], START, 0
    for seq in range(n):
        now += timedelta(milliseconds=rng.randint(0, 200))
        behind = rng.uniform(0, LATENESS - 1)
        if rng.random() < 0.03:
            behind, late = rng.uniform(LATENESS + 5, 120), late + 1
        item = "i0" if rng.random() < 0.2 else f"i{rng.randrange(31)}"  # i30: not in catalog
        ts = now - timedelta(seconds=behind)
        out.append(
            ReceivedEvent(
                event_id=uuid.uuid4(),
                user_id=f"u{rng.randrange(25)}",
                item_id=item,
                kind=rng.choice(KINDS),
                client_ts=ts,
                session_id="s",
                seq=seq,
                watch_ms=rng.choice([300, 1_500, 2_500, 8_000, 40_000, 200_000]),
                received_at=ts,
            )
        )
    return out, late


# run in a process on the role's own chdb path (chdb: one path per process)
READ_TABLES = """
import json, sys
from swipeloop.clickhouse import connect
from swipeloop.settings import Settings
client = connect(Settings.from_env())
out = {}
for table in ("item_features", "creator_features", "user_features", "user_affinity"):
    rows = client.query(f"SELECT * EXCEPT version FROM {table} FINAL").result_rows
    out[table] = sorted([str(v) if not isinstance(v, float) else v for v in r] for r in rows)
out["late_events"] = int(client.command("SELECT count() FROM late_events FINAL"))
print(json.dumps(out))
"""
