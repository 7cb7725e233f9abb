"""The online embeddings' parts: frequency filter, collisionless table, the learner, and the
learner in shards."""

from __future__ import annotations

import pickle
from typing import Any

import bytewax.operators as op
import numpy as np
import pytest
from bytewax.dataflow import Dataflow
from bytewax.outputs import DynamicSink, StatelessSinkPartition
from bytewax.testing import TestingSource, cluster_main

from dataflows.embedding_keys import shard_keys, worker_of
from dataflows.embedding_shared import MirrorFeed
from models.embeddings import EmbeddingTable
from models.frequency import CountMinFilter
from models.items import keys_of, stable_ids
from models.mirror import MirrorUpdate
from models.online import LearnerConfig, OnlineMF, Swipes
from models.sharded_mf import ShardedMF
from models.shards import shard_of, split


def ids(*names: str) -> np.ndarray:
    return stable_ids(keys_of(list(names), len(names)))


def test_filter_admits_on_the_kth_sighting_within_a_batch_or_across() -> None:
    f = CountMinFilter(threshold=3, width=1 << 12)
    assert f.add(ids("a", "b")).tolist() == [False, False]
    assert f.add(ids("a", "a", "c")).tolist() == [True, True, False]
    assert f.add(ids("b", "b")).tolist() == [True, True]
    assert f.count(ids("zzz")).tolist() == [0]


def test_filter_counts_halve_as_the_stream_moves_on() -> None:
    f = CountMinFilter(threshold=4, width=64, depth=2)
    f.add(ids(*["old"] * 3))
    f.add(ids(*[f"x{i}" for i in range(61)]))  # 64 sightings in all: counts halve
    assert int(f.count(ids("old"))[0]) <= 2


def test_table_reuses_freed_rows_and_snapshots_only_used_rows() -> None:
    t = EmbeddingTable(4, capacity=2)
    rows = t.insert(["a", "b", "c"], np.ones((3, 4), np.float32), seen_s=100)
    assert rows.tolist() == [0, 1, 2] and len(t) == 3
    t.touch(np.array([0, -1]), np.array([500, 999]))
    assert sorted(t.expire(before_s=200)) == ["b", "c"]
    assert t.rows_of(["a", "b", None]).tolist() == [0, -1, -1]
    new = t.insert(["d"], np.full((1, 4), 2.0, np.float32), seen_s=600)
    assert int(new[0]) in (1, 2)  # a freed row
    copy: EmbeddingTable = pickle.loads(pickle.dumps(t))
    assert copy.rows_of(["a", "d"]).tolist() == t.rows_of(["a", "d"]).tolist()
    d = copy.vector("d")
    assert d is not None and d.tolist() == [2.0] * 4
    assert len(pickle.dumps(t)) < 2_000


def test_repeated_rows_take_one_bounded_step_and_fp16_halves_memory() -> None:
    t = EmbeddingTable(2, fp16=True)
    t.insert(["hot", "calm"], np.zeros((2, 2), np.float32), seen_s=0)
    rows = np.r_[np.zeros(100, np.int64), 1]
    t.add(rows, np.full((101, 2), 0.1, np.float32), max_step=0.5)
    hot, calm = t.vector("hot"), t.vector("calm")
    assert hot is not None and calm is not None
    assert np.allclose(hot, [0.5 / np.sqrt(2)] * 2, atol=1e-3)  # the sum's direction, capped
    assert np.allclose(calm, [0.1, 0.1], atol=1e-3)  # one step: as given
    assert t.dtype == np.float16
    assert EmbeddingTable(64, fp16=True).dtype.itemsize * 2 == EmbeddingTable(64).dtype.itemsize


def swipes(
    pairs: list[tuple[str, str]], weight: float = 1.0, second: int = 1_000, impression: bool = False
) -> Swipes:
    users, items = [u for u, _ in pairs], [i for _, i in pairs]
    n = len(pairs)
    return Swipes(
        users=users,
        items=items,
        creators=[f"creator-of-{i}" for i in items],
        weights=np.full(n, 0.0 if impression else weight),
        impression=np.full(n, impression),
        seconds=np.full(n, second, np.int64),
        tag_event=np.arange(n),
        tags=[f"tag-of-{i}" for i in items],
    )


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_an_id_gets_a_vector_only_after_k_sightings() -> None:
    mf = OnlineMF(LearnerConfig(dim=8, min_count=3))
    mf.learn(swipes([("u1", "i1"), ("u1", "i1")]))
    assert "u1" not in mf.tables["user"] and "i1" not in mf.tables["item"]
    mf.learn(swipes([("u1", "i1")]))
    assert "u1" in mf.tables["user"] and "i1" in mf.tables["item"]


def test_co_engagement_burst_moves_two_items_closer() -> None:
    mf = OnlineMF(LearnerConfig(dim=16, min_count=1), seed=1)
    fans = [f"u{k}" for k in range(40)]
    mf.learn(swipes([(u, f"other{k}") for k, u in enumerate(fans)], impression=True))
    mf.learn(swipes([("x", "a"), ("y", "b")], impression=True))
    item = mf.tables["item"]
    before = cos(item.vector("a"), item.vector("b"))  # type: ignore[arg-type]
    mf.publish()
    for _ in range(15):
        mf.learn(swipes([(u, "a") for u in fans] + [(u, "b") for u in fans]))
    after = cos(item.vector("a"), item.vector("b"))  # type: ignore[arg-type]
    assert after > before + 0.5 and after > 0.8
    published = mf.publish()
    assert {"a", "b"} <= set(published.items) and not any(published.item_cold)


def test_idle_ids_expire_and_are_published_as_expired() -> None:
    mf = OnlineMF(LearnerConfig(dim=4, min_count=1, ttl_s=100))
    mf.learn(swipes([("u_old", "i_old")], second=1_000))
    mf.learn(swipes([("u_new", "i_new")], second=1_050))
    assert mf.publish().expired_items == []
    mf.learn(swipes([("u_new", "i_new")], second=1_150))
    published = mf.publish()
    assert published.expired_items == ["i_old"] and published.expired_users == ["u_old"]
    assert "i_old" not in mf.tables["item"] and "i_new" in mf.tables["item"]


def test_cold_item_comes_from_creator_and_tags_until_it_has_its_own() -> None:
    mf = OnlineMF(LearnerConfig(dim=8, min_count=2))
    seen = [("u1", "known"), ("u2", "known")]
    mf.learn(swipes(seen))
    mf.learn(swipes(seen))  # creator-of-known and tag-of-known admitted
    mf.publish()
    mf.announce([("upload", "creator-of-known", ("tag-of-known",))])
    published = mf.publish()
    assert published.items == ["upload"] and published.item_cold == [True]
    creator, tag = mf.tables["creator"], mf.tables["tag"]
    expected = (creator.vector("creator-of-known") + tag.vector("tag-of-known")) / 2  # type: ignore[operator]
    assert np.allclose(published.item_vectors[0][:-1], expected[:-1])
    assert published.item_vectors[0][-1] == 0.0  # no bias inherited: it starts level


def test_new_user_is_the_mean_of_their_first_session_then_starts_from_it() -> None:
    mf = OnlineMF(LearnerConfig(dim=8, min_count=3))
    for _ in range(3):
        mf.learn(swipes([("regular", "i1"), ("regular", "i2")], impression=True))
    mf.publish()
    mf.learn(swipes([("newbie", "i1"), ("newbie", "i2")]))
    published = mf.publish()
    assert published.users == ["newbie"] and published.user_cold == [True]
    item = mf.tables["item"]
    mean = (item.vector("i1") + item.vector("i2")) / 2  # type: ignore[operator]
    assert np.allclose(published.user_vectors[0][:-1], mean[:-1])
    assert published.user_vectors[0][-1] == 1.0  # a user's bias coordinate
    mf.learn(swipes([("newbie", "i3")], impression=True))  # third sighting: admitted
    own = mf.tables["user"].vector("newbie")
    assert own is not None and cos(own[:-1], mean[:-1]) > 0.5 and own[-1] == 1.0


def test_a_pickled_learner_continues_exactly_like_the_original() -> None:
    mf = OnlineMF(LearnerConfig(dim=8, min_count=1), seed=3)
    batch = swipes([(f"u{k % 7}", f"i{k % 11}") for k in range(60)])
    mf.learn(swipes([(f"u{k}", f"i{k}") for k in range(11)], impression=True))
    mf.learn(batch)
    copy = pickle.loads(pickle.dumps(mf))
    mf.learn(batch)
    copy.learn(batch)
    a, b = mf.tables["item"].items(), copy.tables["item"].items()
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


def test_an_erased_user_is_dropped_and_published_as_expired_once() -> None:
    mf = OnlineMF(LearnerConfig(dim=4, min_count=1))
    mf.learn(swipes([("gone", "i1"), ("kept", "i1")]))
    mf.publish()
    mf.forget_users(["gone", "never-seen"])
    assert "gone" not in mf.tables["user"] and "kept" in mf.tables["user"]
    published = mf.publish()
    assert published.expired_users == ["gone"] and "gone" not in published.users
    assert mf.publish().expired_users == []


# --- the table in shards (models.shards, dataflows.embedding_keys) ------------------------


def test_a_batch_split_by_user_shard_keeps_each_events_tags() -> None:
    batch = swipes([(f"u{k}", f"i{k}") for k in range(50)])
    parts = split(batch, 3)
    assert sum(len(p.users) for p in parts) == 50
    for k, part in enumerate(parts):
        assert set(shard_of(part.users, 3).tolist()) <= {k}
        assert part.tags == [f"tag-of-{i}" for i in part.items]  # each event's own tag
    whole = Swipes.concat(parts)
    assert sorted(whole.items) == sorted(batch.items)
    assert whole.tags == [f"tag-of-{i}" for i in whole.items]


def test_shards_admit_exactly_the_ids_one_learner_admits() -> None:
    rng = np.random.default_rng(4)
    one, sharded = (
        OnlineMF(LearnerConfig(dim=8, min_count=3)),
        ShardedMF(LearnerConfig(dim=8, min_count=3), 3),
    )
    for _ in range(6):
        pairs = [(f"u{rng.integers(40)}", f"i{rng.integers(60)}") for _ in range(80)]
        one.learn(swipes(pairs))
        sharded.learn(swipes(pairs))
    users = {u for s in sharded.users for u in s.table.items()[0]}
    items = {i for s in sharded.items for i in s.tables["item"].items()[0]}
    assert users == set(one.tables["user"].items()[0]) and len(users) > 10
    assert items == set(one.tables["item"].items()[0]) and len(items) > 10
    assert all(set(shard_of(s.table.items()[0], 3).tolist()) <= {s.shard} for s in sharded.users)


def test_sharded_co_engagement_moves_two_items_closer() -> None:
    mf = ShardedMF(LearnerConfig(dim=16, min_count=1), 2)
    fans = [f"u{k}" for k in range(40)]
    mf.learn(swipes([(u, f"other{k}") for k, u in enumerate(fans)], impression=True))
    mf.learn(swipes([("x", "a"), ("y", "b")], impression=True))
    mf.publish()

    def vector(item: str) -> np.ndarray:
        return next(v for s in mf.items if (v := s.tables["item"].vector(item)) is not None)

    before = cos(vector("a"), vector("b"))
    for _ in range(15):
        mf.learn(swipes([(u, "a") for u in fans] + [(u, "b") for u in fans]))
    assert cos(vector("a"), vector("b")) > max(before + 0.5, 0.8)
    fan = mf.user_vector("u0")
    assert fan is not None and fan @ vector("a") > fan @ vector("other5")


def test_an_item_shard_without_events_still_expires_its_idle_ids() -> None:
    mf = ShardedMF(LearnerConfig(dim=4, min_count=1, ttl_s=100), 4)
    mf.learn(swipes([(f"u{k}", f"old{k}") for k in range(20)], second=1_000))
    mf.publish()
    mf.learn(swipes([("u_new", "i_new")], second=1_200))  # one user and one item shard see it
    published = mf.publish()
    assert sorted(published.expired_items) == sorted(f"old{k}" for k in range(20))
    assert "u0" in published.expired_users and all(s.newest_s == 1_200 for s in mf.items)


def test_a_cold_upload_takes_creator_and_tags_from_other_shards() -> None:
    mf = ShardedMF(LearnerConfig(dim=8, min_count=2), 4)
    seen = [("u1", "known"), ("u2", "known")]
    mf.learn(swipes(seen))
    mf.learn(swipes(seen))
    mf.publish()  # creator-of-known and tag-of-known: in the mirror
    owner = mf.items[int(shard_of(["upload"], 4)[0])]
    owner.announce([("upload", "creator-of-known", ("tag-of-known",))])
    published = mf.publish()
    assert published.items == ["upload"] and published.item_cold == [True]
    lookup = mf.mirror.lookup
    creator, tag = (
        lookup("creator")(["creator-of-known"])[0][0],
        lookup("tag")(["tag-of-known"])[0][0],
    )
    assert np.allclose(published.item_vectors[0][:-1], ((creator + tag) / 2)[:-1])


def test_a_pickled_shard_continues_exactly_like_the_original() -> None:
    mf = ShardedMF(LearnerConfig(dim=8, min_count=1), 2)
    mf.learn(swipes([(f"u{k % 7}", f"i{k % 11}") for k in range(60)]))
    batch = swipes([(f"u{k % 5}", f"i{k % 9}") for k in range(40)])
    copy: ShardedMF = pickle.loads(pickle.dumps(mf))
    mf.learn(batch)
    copy.learn(batch)
    a, b = mf.item_vectors(), copy.item_vectors()
    assert a[0] == b[0] and np.array_equal(a[1], b[1])


def test_one_publication_reaches_the_mirror_once_through_the_first_key() -> None:
    feed = MirrorFeed(dim=2)
    first = MirrorUpdate(0, vectors={"item": (["a"], np.ones((1, 2), np.float32))})
    later = MirrorUpdate(0, removed={"item": ["a"]})
    feed.deliver("shard-1", first)
    feed.deliver("shard-0", later)  # the same publication to another key of this process
    assert feed.mirror.lookup("item")(["a"])[1].tolist() == [True]
    feed.deliver("shard-1", later)
    assert feed.mirror.lookup("item")(["a"])[1].tolist() == [False]


@pytest.mark.parametrize("workers", [2, 3, 4])
def test_shard_keys_put_one_shard_on_each_worker_as_bytewax_places_them(workers: int) -> None:
    keys = shard_keys("shard", workers, workers)
    assert [worker_of(key, workers) for key in keys] == list(range(workers))
    placed: dict[str, int] = {}

    class Seen(DynamicSink[tuple[str, str]]):
        def build(self, step_id: str, worker_index: int, worker_count: int) -> Any:
            class Part(StatelessSinkPartition[tuple[str, str]]):
                def write_batch(self, items: list[tuple[str, str]]) -> None:
                    placed.update((key, worker_index) for key, _ in items)

            return Part()

    flow = Dataflow("placement")
    keyed = op.key_on("key", op.input("keys", flow, TestingSource(keys)), lambda k: k)
    op.output("seen", op.stateful_map("state", keyed, lambda s, k: (s, k)), Seen())
    cluster_main(flow, [], 0, worker_count_per_proc=workers)  # type: ignore[no-untyped-call]
    assert [placed[key] for key in keys] == list(range(workers))  # where Bytewax put them
