"""FAISS inverted-file indexes on their own: how many lists, how many to probe, making one,
assigning vectors to lists, the top k of a large search, removing ids, and filling a new index
list by list. `api.index` keeps one of them live for a replica.

Why they are built this way:

- One faiss structure at every size: an `IndexIVFFlat` (inner product) whose direct map is a
  hash table. Removing or replacing an id then moves the last entry of its inverted list into
  its slot, O(1), where `remove_ids` on a flat `IndexIDMap2` compacts the whole store (256 MB at
  1M x 64) on every call.
- One list whose centroid is the zero vector is an exact index (nothing to train: every query
  scans every vector).
- nlist ≈ 4·√N rounded to a power of two, capped (2048 in the API). At 1M x 64 (clustered
  vectors), 2048 lists matched 4096 in recall and latency for the same number of scanned
  vectors, and took half the build (~14 s against ~28 s on two cores). nprobe is set per query
  so that the probed lists hold about `per_result` · k vectors (8 gave a recall of the top
  10,000 of ≈ 0.97 against exact search), and at least a floor of lists.
- A search for many results (a feed asks for 10,000) takes every vector of the probed lists
  with a range search and selects the top k with numpy (`select_top`): faiss's k-heap alone was
  half of a top-10,000 search (`bench/RESULTS.md`).
- `filled` writes each list once, at its final size and an eighth more: a list grown an entry
  at a time holds up to twice its vectors' memory, and one with no room reallocates (a copy of
  the whole list) on its next vector.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import faiss
import numpy as np
import numpy.typing as npt

from swipeloop.arrays import Codes, Vector

Gather = Callable[[Codes], tuple[Codes, Vector]]  # codes -> (positions found, their rows)

TRAIN_POINTS_PER_LIST = 64  # k-means sample; faiss asks for at least 39 per centroid
KMEANS_ITERATIONS = 10  # faiss's default 25 costs 2.5x the training for no measured recall gain
ASSIGN_BLOCK = 1 << 22  # scores computed at once when assigning rows to lists (16 MB)
EVERYTHING = float(np.finfo(np.float32).min)  # a range-search radius every score passes
LIST_HEADROOM = 8  # a built list has room for 1/8 more: new vectors rarely reallocate a list
HASH_ENTRY_BYTES = 40  # what one id costs in the direct map's hash table (node and bucket)


def nlist_for(n: int, max_nlist: int) -> int:
    """Inverted lists for n vectors: about 4·√n, as a power of two, within [1, min(n, max)]."""
    if n <= 1:
        return 1
    return max(1, min(1 << round(math.log2(4 * math.sqrt(n))), max_nlist, n))


def nprobe_for(k: int, ntotal: int, nlist: int, per_result: float, floor: int) -> int:
    """Lists to probe so that they hold about per_result·k vectors, and at least `floor` lists."""
    wanted = math.ceil(per_result * k * nlist / max(ntotal, 1))
    return max(1, min(nlist, max(floor, wanted)))


def new_index(dim: int, nlist: int, sample: Vector, direct_map: bool = True) -> faiss.IndexIVFFlat:
    """An empty inner-product IVF index (trained when nlist > 1), with a hash-table direct map
    unless the caller fills its lists first (the map is built from the lists when set)."""
    quantizer = faiss.IndexFlatIP(dim)
    if nlist == 1:
        quantizer.add(np.zeros((1, dim), dtype=np.float32))
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    if nlist > 1:
        index.cp.niter = KMEANS_ITERATIONS
        index.train(sample)
    if direct_map:
        with_direct_map(index)
    return index


def with_direct_map(index: faiss.IndexIVF) -> None:
    """Give the index a hash-table direct map of the ids in its lists (ids can then be removed
    and read back one by one)."""
    index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]  # (stubs)


def assign(index: faiss.IndexIVF, matrix: Vector) -> Codes:
    """The list of each row; reads only the trained centroids, so it needs no lock.

    numpy's matmul + argmax is faster here than the quantizer's own k=1 search."""
    if index.nlist == 1:
        return np.zeros(len(matrix), dtype=np.int64)
    centroids = index.quantizer.reconstruct_n(0, index.nlist)
    step = max(1, ASSIGN_BLOCK // index.nlist)
    blocks = [
        np.argmax(matrix[start : start + step] @ centroids.T, axis=1)
        for start in range(0, len(matrix), step)
    ]
    return np.concatenate(blocks or [np.zeros(0, dtype=np.int64)]).astype(np.int64)


def select_top(
    index: faiss.IndexIVF, query: Vector, k: int, params: faiss.SearchParametersIVF
) -> tuple[Codes, npt.NDArray[np.float32]]:
    """The k best of every vector in the probed lists, best first: a range search with no
    radius (it appends, where `search` keeps a heap of k), then a partial sort in numpy."""
    _, scores, codes = index.range_search(query, EVERYTHING, params=params)
    top = best(scores, k)
    return codes[top], scores[top]


def best(scores: npt.NDArray[np.floating], k: int) -> Codes:
    """Positions of the k best scores, best first (ties in no particular order: an unstable
    sort of 10,000 floats takes half the time of a stable one)."""
    top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
    return top[np.argsort(-scores[top])]


def remove_keys(index: faiss.IndexIVF, keys: Codes) -> None:
    """Drop keys through the hash table (O(1) each); keys not in the index are skipped."""
    if keys.size:
        index.remove_ids(faiss.IDSelectorArray(keys.size, faiss.swig_ptr(keys)))


def array_lists(index: faiss.IndexIVF) -> faiss.ArrayInvertedLists:
    """The index's inverted lists as the arrays they are (to size and write them in place)."""
    lists = index.invlists
    assert lists is not None, "an IVF index has lists"
    array = faiss.downcast_InvertedLists(lists)
    assert isinstance(array, faiss.ArrayInvertedLists), "new_index makes array lists"
    return array


def write_lists(index: faiss.IndexIVF, lists: Codes, keys: Codes, rows: Vector, at: Codes) -> None:
    """Write rows (sorted by list) into lists already sized for them, from each list's `at`
    offset on, and move the offsets past them."""
    invlists = array_lists(index)
    firsts = np.flatnonzero(np.r_[True, lists[1:] != lists[:-1]]) if len(lists) else lists
    for first, end in zip(firsts.tolist(), [*firsts[1:].tolist(), len(lists)], strict=True):
        number, n = int(lists[first]), end - first
        ids = np.ascontiguousarray(keys[first:end])
        codes = np.ascontiguousarray(rows[first:end]).view(np.uint8)
        invlists.update_entries(
            number, int(at[number]), n, faiss.swig_ptr(ids), faiss.swig_ptr(codes)
        )
        at[number] += n


def filled(dim: int, nlist: int, keys: Codes, gather: Gather, chunk: int) -> faiss.IndexIVFFlat:
    """A new index of `nlist` lists holding `keys` with the rows `gather` gives for them, read
    `chunk` at a time (a key it no longer finds is left out).

    Two passes: the first assigns every row to its list, so each list is allocated once; the
    second reads them again in list order and writes them in place."""
    sample = np.zeros((0, dim), dtype=np.float32)
    if nlist > 1:
        rng = np.random.default_rng(keys.size)
        size = min(keys.size, TRAIN_POINTS_PER_LIST * nlist)
        sample = gather(np.sort(rng.choice(keys, size=size, replace=False)))[1]
    index = new_index(dim, nlist, sample, direct_map=False)
    del sample
    lists = np.full(keys.size, -1, dtype=np.int64)
    for start in range(0, keys.size, chunk):
        found, rows = gather(keys[start : start + chunk])
        lists[start + found] = assign(index, rows)
    order = np.argsort(lists, kind="stable")
    order = order[lists[order] >= 0]
    keys, lists = keys[order], lists[order]
    sizes = np.bincount(lists, minlength=nlist)
    invlists = array_lists(index)
    for number in np.flatnonzero(sizes).tolist():  # sized with room, then shrunk to fit
        invlists.resize(number, int(sizes[number]) + int(sizes[number]) // LIST_HEADROOM)
    at = np.zeros(nlist, dtype=np.int64)
    for start in range(0, keys.size, chunk):
        found, rows = gather(keys[start : start + chunk])
        write_lists(index, lists[start + found], keys[start + found], rows, at)
    for number in np.flatnonzero(sizes).tolist():  # (shrinking keeps the room)
        invlists.resize(number, int(at[number]))  # (fewer: gone between the passes)
    index.ntotal = int(at.sum())
    with_direct_map(index)
    return index
