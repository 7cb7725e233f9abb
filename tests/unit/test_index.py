"""The item-vector index on real faiss: exact below a threshold, IVF above, rebuilt in the back."""

from __future__ import annotations

import threading
from typing import TypedDict, Unpack

import faiss
import numpy as np
import numpy.typing as npt
import pytest

from api.index import FINAL_REPLAY, VectorIndex
from api.ivf import nlist_for, nprobe_for, select_top
from swipeloop.arrays import Vectors

DIM = 32


class Options(TypedDict, total=False):
    """What a test changes of the index's own defaults."""

    exact_below: int


def unit(x: npt.NDArray[np.floating]) -> Vectors:
    return np.asarray(x / np.linalg.norm(x, axis=1, keepdims=True), dtype=np.float32)


def clustered(n: int, seed: int, clusters: int = 200) -> Vectors:
    """Unit vectors around gaussian centres, the shape item embeddings have (and the bench uses)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(clusters, DIM))
    return unit(centres[rng.integers(0, clusters, n)] + 0.5 * rng.normal(size=(n, DIM)))


def ids_for(n: int, prefix: str = "i") -> list[str]:
    return [f"{prefix}{i}" for i in range(n)]


def loaded(
    n: int, seed: int = 0, **options: Unpack[Options]
) -> tuple[VectorIndex, list[str], Vectors]:
    index = VectorIndex(DIM, **options)
    ids, matrix = ids_for(n), clustered(n, seed)
    index.bulk_load(ids, matrix)
    return index, ids, matrix


def ivf(n: int = 20_000) -> tuple[VectorIndex, list[str], Vectors]:
    """An index forced onto the IVF path (threshold 5,000), its build finished."""
    index, ids, matrix = loaded(n, exact_below=5_000)
    assert index.wait_ready(60)
    assert index.describe()["kind"] == "ivf"
    return index, ids, matrix


def test_upsert_then_search_finds_the_exact_vector_first() -> None:
    index = VectorIndex(DIM)
    matrix = clustered(500, seed=1)
    index.upsert(dict(zip(ids_for(500), matrix, strict=True)))
    names, scores = index.search(matrix[42], 5)
    assert names[0] == "i42"
    assert scores[0] == pytest.approx(1.0, abs=1e-5)
    assert list(scores) == sorted(scores, reverse=True)
    assert index.describe()["kind"] == "exact"


def test_replace_moves_an_id() -> None:
    index, _, matrix = loaded(1_000)
    index.upsert({"i3": matrix[700]})
    assert len(index) == 1_000
    assert index.search(matrix[3], 1)[0] != ["i3"]
    assert set(index.search(matrix[700], 2)[0]) == {"i3", "i700"}


def test_remove_makes_an_id_unfindable() -> None:
    index, _, matrix = loaded(1_000)
    index.remove(["i10", "i11"])
    assert len(index) == 998
    names, _ = index.search(matrix[10], 5_000)
    assert len(names) == 998
    assert "i10" not in names and "i11" not in names


def test_unknown_remove_is_a_noop() -> None:
    index, _, matrix = loaded(100)
    before = index.search(matrix[0], 100)
    index.remove(["nope", "also-nope"])
    index.remove([])
    after = index.search(matrix[0], 100)
    assert len(index) == 100
    assert after[0] == before[0]
    np.testing.assert_array_equal(after[1], before[1])


@pytest.mark.parametrize("k", [0, 1, 10, 299, 300, 301, 10_000])
def test_search_returns_min_k_n_distinct_ids(k: int) -> None:
    index, _, matrix = loaded(300)
    names, scores = index.search(matrix[0], k)
    assert len(names) == len(set(names)) == len(scores) == min(k, 300)


def test_empty_index_returns_nothing() -> None:
    names, scores = VectorIndex(DIM).search(np.ones(DIM, dtype=np.float32), 10)
    assert names == [] and scores.size == 0


def test_a_removed_id_comes_back_under_its_code_and_vectors_gathers_rows() -> None:
    index, _, matrix = loaded(100)
    code = index.names.code("i5")
    index.remove(["i5"])
    np.testing.assert_array_equal(index.vectors(np.array([code, 10**6]))[0], np.zeros(DIM))
    index.upsert({"new": matrix[5]})
    codes, _ = index.search_codes(matrix[5], 100)
    assert index.names.name(int(codes[0])) == "new"
    assert code not in codes.tolist() and len(codes) == 100
    index.upsert({"i5": matrix[6]})
    assert index.names.code("i5") == code
    np.testing.assert_array_equal(index.vectors(np.array([code]))[0], matrix[6])
    assert len(index) == 101


def test_bulk_load_keeps_the_last_vector_of_a_repeated_id() -> None:
    index = VectorIndex(DIM)
    matrix = clustered(3, seed=2)
    index.bulk_load(["a", "b", "a"], matrix)
    assert len(index) == 2
    assert index.search(matrix[2], 1)[0] == ["a"]
    with pytest.raises(ValueError):
        index.bulk_load(["a"], matrix)


def test_a_vector_of_the_wrong_size_is_refused_before_anything_changes() -> None:
    index, _, _ = loaded(10)
    with pytest.raises(ValueError):
        index.upsert({"x": np.ones(DIM + 1, dtype=np.float32)})
    assert len(index) == 10
    assert "x" not in index.search(np.ones(DIM, dtype=np.float32), 20)[0]


def test_ivf_returns_k_results_with_recall_against_exact_search() -> None:
    index, ids, matrix = ivf()
    described = index.describe()
    assert described["nlist"] == nlist_for(20_000, 2048) == 512
    queries = unit(matrix[:50] + 0.1 * np.random.default_rng(3).normal(size=(50, DIM)))
    recalls = []
    for query in queries:
        names, scores = index.search(query, 100)
        assert len(names) == len(set(names)) == 100
        assert list(scores) == sorted(scores, reverse=True)
        exact = np.argsort(-(matrix @ query))[:100]
        recalls.append(len(set(names) & {ids[i] for i in exact}) / 100)
    assert np.mean(recalls) >= 0.9
    assert len(index.search(queries[0], 25_000)[0]) == 20_000  # probes widen until k are found


def test_ivf_replace_and_remove_are_seen_at_once() -> None:
    index, _, matrix = ivf()
    index.upsert({"i1": matrix[2], "fresh": matrix[9]})
    index.remove(["i2"])
    assert index.search(matrix[2], 1)[0] == ["i1"]
    names, _ = index.search(matrix[9], 20_000)
    assert names[:2] in (["i9", "fresh"], ["fresh", "i9"])
    assert "i2" not in names and len(names) == 20_000


def test_updates_made_during_a_build_survive_the_swap() -> None:
    index, _, matrix = loaded(20_000, exact_below=5_000)
    assert index.describe()["building_nlist"] == 512
    extra = clustered(FINAL_REPLAY + 2_000, seed=4)  # more than the final replay under the lock
    index.upsert(dict(zip(ids_for(len(extra), "new"), extra, strict=True)))
    index.upsert({"i0": matrix[1]})
    index.remove([f"i{i}" for i in range(100, 200)])
    assert index.wait_ready(60)
    assert index.describe()["kind"] == "ivf"
    assert len(index) == 20_000 + len(extra) - 100
    for row in (0, 1, 2_500, len(extra) - 1):
        assert index.search(extra[row], 1)[0] == [f"new{row}"]
    assert set(index.search(matrix[1], 2)[0]) == {"i0", "i1"}
    names, _ = index.search(matrix[150], len(index))
    assert len(names) == len(index)
    assert not {f"i{i}" for i in range(100, 200)} & set(names)


def test_the_lists_hold_each_vector_once_and_give_it_back_after_a_build() -> None:
    index, ids, matrix = loaded(20_000, exact_below=5_000)
    fresh = clustered(3_000, seed=6)
    index.upsert(dict(zip(ids_for(3_000, "new"), fresh, strict=True)))  # during the build
    index.upsert({"i7": matrix[8]})
    index.remove(["i9"])
    assert index.wait_ready(60)
    assert index.describe()["kind"] == "ivf"
    expected = {**dict(zip(ids, matrix, strict=True)), "i7": matrix[8]}
    expected.update(zip(ids_for(3_000, "new"), fresh, strict=True))
    del expected["i9"]
    codes = index.names.codes(list(expected))
    np.testing.assert_array_equal(index.vectors(codes), np.stack(list(expected.values())))
    assert index.memory()["vectors"] == len(index) * DIM * 4 == len(expected) * DIM * 4
    np.testing.assert_array_equal(index.vectors(index.names.codes(["i9"])), np.zeros((1, DIM)))


def test_shrinking_below_half_the_threshold_returns_to_exact_search() -> None:
    index, ids, _ = ivf(12_000)
    index.remove(ids[:10_000])
    assert index.wait_ready(60)
    assert index.describe()["kind"] == "exact"
    assert len(index.search(np.ones(DIM, dtype=np.float32), 5_000)[0]) == 2_000


def test_searches_run_safely_alongside_updates_and_a_build() -> None:
    index, _, matrix = loaded(20_000, exact_below=5_000)
    removed = {f"i{i}" for i in range(0, 20_000, 7)}
    errors: list[str] = []
    stop = threading.Event()

    def searcher(seed: int) -> None:
        rng = np.random.default_rng(seed)
        while not stop.is_set():
            names, _ = index.search(matrix[rng.integers(20_000)], 500)
            if len(names) != 500 or len(set(names)) != 500:
                errors.append(f"{len(names)} results, {len(set(names))} distinct")

    threads = [threading.Thread(target=searcher, args=(seed,)) for seed in range(3)]
    for thread in threads:
        thread.start()
    fresh = clustered(3_000, seed=5)
    for start in range(0, 3_000, 300):
        index.upsert({f"new{i}": fresh[i] for i in range(start, start + 300)})
    index.remove(sorted(removed))
    assert index.wait_ready(60)
    stop.set()
    for thread in threads:
        thread.join()
    assert errors == []
    names, _ = index.search(matrix[7], len(index))
    assert not removed & set(names)


def test_nprobe_covers_k_results_and_respects_its_floor() -> None:
    assert nprobe_for(10_000, 1_000_000, 2048, 8.0, 32) == 164
    assert nprobe_for(10, 1_000_000, 2048, 8.0, 32) == 32
    assert nprobe_for(10_000, 20_000, 512, 8.0, 32) == 512
    assert nprobe_for(5, 10, 1, 8.0, 32) == 1
    assert nlist_for(1_000_000, 2048) == 2048
    assert nlist_for(100_000, 2048) == 1024


def test_a_large_k_selected_from_a_range_search_matches_the_heap_search() -> None:
    index, _, matrix = ivf()
    faiss_index = index._index
    params = faiss.SearchParametersIVF()
    params.nprobe = 64
    for row in (0, 777, 4242):
        query = matrix[row : row + 1]
        codes, scores = select_top(faiss_index, query, 2_000, params)
        heap_scores, heap_codes = faiss_index.search(query, 2_000, params=params)
        assert codes.tolist() == heap_codes[0].tolist() or set(codes.tolist()) == set(
            heap_codes[0].tolist()
        )  # (the same set; ties may order differently)
        np.testing.assert_allclose(scores, heap_scores[0], rtol=1e-5)
