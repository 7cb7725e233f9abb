"""The online embeddings' parts: frequency filter, collisionless table, the learner."""

from __future__ import annotations

import pickle

import numpy as np

from models.embeddings import EmbeddingTable
from models.frequency import CountMinFilter
from models.items import keys_of, stable_ids
from models.online import LearnerConfig, OnlineMF, Swipes


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
