"""A deterministic demo catalog: what a fresh `swipeloop up` starts with; the simulator's too."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from swipeloop.contracts import Item

TAGS: tuple[str, ...] = (
    "comedy",
    "dance",
    "food",
    "pets",
    "sports",
    "music",
    "diy",
    "travel",
    "gaming",
    "beauty",
    "science",
    "fashion",
    "fitness",
    "cars",
    "art",
    "nature",
    "tech",
    "news",
    "kids",
    "asmr",
)


def demo_catalog(n: int, seed: int = 0, creators: int | None = None) -> list[Item]:
    """n videos by ~n/20 creators, each with 1-3 tags and a duration of 5-90 s."""
    rng = np.random.default_rng(seed)
    creators = creators or max(n // 20, 1)
    start = datetime.now(UTC) - timedelta(days=1)
    items = []
    for i in range(n):
        k = int(rng.integers(1, 4))
        tags = sorted({TAGS[int(t)] for t in rng.choice(len(TAGS), size=k, replace=False)})
        items.append(
            Item(
                item_id=f"v{i:06d}",
                creator_id=f"c{int(rng.integers(creators)):05d}",
                duration_ms=int(rng.integers(5_000, 90_000)),
                tags=tags,
                sound_id=f"s{int(rng.integers(500)):04d}",
                created_at=start + timedelta(seconds=int(rng.integers(0, 86_400))),
            )
        )
    return items
