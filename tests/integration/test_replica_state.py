"""A replica bootstrapped from a real ClickHouse: the catalog it reads back from its columns is
the catalog that was written, taken-down items stay out, and each item vector is held once,
in the index's lists, at unit length."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from api.state import ServingState
from swipeloop.clickhouse import connect
from swipeloop.contracts import Item
from swipeloop.migrations import migrate
from swipeloop.settings import Settings

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC).replace(microsecond=456_000)  # (ClickHouse keeps milliseconds)


def test_bootstrap_reads_the_catalog_back_and_holds_each_vector_once(settings: Settings) -> None:
    client = connect(settings)
    migrate(client)
    items = [
        Item(
            item_id=f"i{i}",
            creator_id=f"c{i % 4}",
            duration_ms=2_000 + i,
            tags=[f"t{(i + k) % 9}" for k in range(i % 8)],
            sound_id=f"s{i % 3}" if i % 2 else None,
            created_at=NOW - timedelta(minutes=i),
            deleted=i == 5,
        )
        for i in range(30)
    ]
    client.insert(
        "items",
        [
            [
                i.item_id,
                i.creator_id,
                i.duration_ms,
                i.tags,
                i.sound_id or "",
                i.created_at,
                i.deleted,
            ]
            for i in items
        ],
        column_names=[
            "item_id",
            "creator_id",
            "duration_ms",
            "tags",
            "sound_id",
            "created_at",
            "deleted",
        ],
    )
    rng = np.random.default_rng(3)
    vectors = rng.normal(size=(len(items), settings.embedding_dim)).astype(np.float32)
    client.insert(
        "item_embeddings",
        [[i.item_id, 1, NOW, vectors[k].tolist()] for k, i in enumerate(items)],
        column_names=["item_id", "version", "updated_at", "vector"],
    )

    state = ServingState(settings, client)
    state.bootstrap()

    assert dict(state.catalog) == {i.item_id: i for i in items if not i.deleted}
    assert state.deleted == {"i5"} and not state.index.has(state.items.code("i5"))
    live = [k for k, i in enumerate(items) if not i.deleted]
    codes = state.items.codes([items[k].item_id for k in live])
    unit = vectors[live] / np.linalg.norm(vectors[live], axis=1, keepdims=True)
    np.testing.assert_allclose(state.index.vectors(codes), unit, rtol=1e-6)
    memory = state.memory()
    assert memory["index_vectors"] == len(live) * settings.embedding_dim * 4
    assert set(memory) >= {"item_columns", "item_ids", "creator_items", "shared_lists"}
