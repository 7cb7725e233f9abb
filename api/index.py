"""The API's FAISS index of item vectors: add, replace, remove by item id; inner-product search.

Why it is built this way:

- One faiss structure at every size: an `IndexIVFFlat` (inner product) whose direct map is a
  hash table. Removing or replacing an id then moves the last entry of its inverted list into
  its slot, O(1), where `remove_ids` on a flat `IndexIDMap2` compacts the whole store (256 MB at
  1M x 64) on every call.
- Below `exact_below` vectors the index has a single list whose centroid is the zero vector (so
  nothing to train): every query scans every vector, and the search is exact.
- At or above it, nlist ≈ 4·√N rounded to a power of two, capped at `max_nlist` = 2048. At
  1M x 64 (clustered vectors), 2048 lists matched 4096 in recall and latency for the same number
  of scanned vectors, and took half the build (~14 s against ~28 s on two cores). nprobe is set
  per query so that the probed lists hold about `candidates_per_result` · k vectors (8 gave a
  recall of the top 10,000 of ≈ 0.97 against exact search), at least `min_nprobe` lists, and is
  doubled while they hold fewer than k vectors: a search always yields min(k, N) results.
- A search for k >= `SELECT_ABOVE_K` results (a feed asks for 10,000) takes every vector of the
  probed lists with a range search and selects the top k with numpy (`select_top`): faiss's
  k-heap alone was half of a top-10,000 search (`bench/RESULTS.md`).
- faiss ids are the items' codes (`api.codes`), shared with the API's other per-item arrays: a
  search answers in codes, and `vectors` gathers the rows of any codes (a pre-ranker scores
  every candidate from any source with them).
- Switching kinds, or retraining once N has doubled since the last training, builds a new index
  on a daemon thread while the current one answers. The index keeps its own copy of the vectors
  (a float32 matrix; row = code), so a build reads them without the lock; codes changed
  meanwhile are recorded and replayed into the new index (in rounds outside the lock, the last
  few under it) just before the swap.
- A reader-writer lock: searches share it (several run at once on several cores), the live
  flags and list edits take it alone (faiss lists must not change under a running search;
  a waiting writer holds back new searches, so updates are not starved); upserts assign
  their vectors to lists before taking it.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Mapping

import faiss
import fasteners
import numpy as np
import numpy.typing as npt

from api.codes import Interner
from swipeloop.arrays import Codes, Vector

log = logging.getLogger(__name__)


TRAIN_POINTS_PER_LIST = 64  # k-means sample; faiss asks for at least 39 per centroid
KMEANS_ITERATIONS = 10  # faiss's default 25 costs 2.5x the training for no measured recall gain
BUILD_CHUNK = 65_536  # rows copied out of the store per add while building
FINAL_REPLAY = 4_096  # changed ids small enough to replay while holding the lock
REPLAY_ROUNDS = 8  # catch-up rounds outside the lock before replaying the rest under it
ASSIGN_BLOCK = 1 << 22  # scores computed at once when assigning rows to lists (16 MB)
SELECT_ABOVE_K = 1_000  # from this k on, searches select from a range search (`select_top`)
EVERYTHING = float(np.finfo(np.float32).min)  # a range-search radius every score passes


def nlist_for(n: int, max_nlist: int) -> int:
    """Inverted lists for n vectors: about 4·√n, as a power of two, within [1, min(n, max)]."""
    if n <= 1:
        return 1
    return max(1, min(1 << round(math.log2(4 * math.sqrt(n))), max_nlist, n))


def nprobe_for(k: int, ntotal: int, nlist: int, per_result: float, floor: int) -> int:
    """Lists to probe so that they hold about per_result·k vectors, and at least `floor` lists."""
    wanted = math.ceil(per_result * k * nlist / max(ntotal, 1))
    return max(1, min(nlist, max(floor, wanted)))


def new_index(dim: int, nlist: int, sample: Vector) -> faiss.IndexIVFFlat:
    """An empty inner-product IVF index with a hash-table direct map (trained when nlist > 1)."""
    quantizer = faiss.IndexFlatIP(dim)
    if nlist == 1:
        quantizer.add(np.zeros((1, dim), dtype=np.float32))
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    if nlist > 1:
        index.cp.niter = KMEANS_ITERATIONS
        index.train(sample)
    # The hash table lets ids be removed one by one; faiss's stubs lack `DirectMap`.
    index.set_direct_map_type(faiss.DirectMap.Hashtable)  # type: ignore[attr-defined]
    return index


def assign(index: faiss.IndexIVF, matrix: Vector) -> Codes:
    """The list of each row; reads only the trained centroids, so it needs no lock.

    numpy's matmul + argmax is faster here than the quantizer's own k=1 search."""
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


def replay(
    index: faiss.IndexIVF, dirty: set[int], store: Vector, live: npt.NDArray[np.bool_]
) -> None:
    """Bring `dirty` keys of a new index to the state the store holds for them now."""
    if not dirty:
        return
    keys = np.fromiter(dirty, dtype=np.int64, count=len(dirty))
    remove_keys(index, keys)
    alive = keys[live[keys]]
    if alive.size:
        index.add_with_ids(store[alive], alive)


class VectorIndex:
    """Inner-product search over normalized item vectors, updated in place, rebuilt as it grows."""

    def __init__(
        self,
        dim: int,
        *,
        exact_below: int = 100_000,
        max_nlist: int = 2048,
        candidates_per_result: float = 8.0,
        min_nprobe: int = 32,
        names: Interner | None = None,
    ) -> None:
        self.dim = dim
        self.exact_below = exact_below
        self.max_nlist = max_nlist
        self.candidates_per_result = candidates_per_result
        self.min_nprobe = min_nprobe
        self._lock = fasteners.ReaderWriterLock()
        self._index = new_index(dim, 1, np.zeros((0, dim), dtype=np.float32))
        self._trained_on = 0
        self.names = Interner() if names is None else names  # item id <-> code (= faiss id)
        self._count = 0  # codes with a vector
        self._store: Vector = np.zeros((1024, dim), dtype=np.float32)
        self._live = np.zeros(1024, dtype=np.bool_)
        self._dirty: set[int] | None = None  # keys changed since the running build started
        self._builder: threading.Thread | None = None
        self._building_nlist = 0
        self._build_error: str | None = None

    def __len__(self) -> int:
        return self._count

    def upsert(self, vectors: dict[str, Vector]) -> None:
        """Add new ids and replace existing ones in one pass."""
        if vectors:
            self.upsert_codes(self.names.codes(vectors), np.stack(list(vectors.values())))

    def bulk_load(self, ids: list[str], matrix: npt.NDArray[np.float32]) -> None:
        """Load many vectors at once: searchable (exactly) on return, the IVF index follows on a
        background thread (`wait_ready` blocks until it is in place)."""
        if len(matrix) != len(ids):
            raise ValueError(f"{len(ids)} ids for {len(matrix)} vectors")
        last = {item_id: row for row, item_id in enumerate(ids)}  # a repeated id keeps its last
        if len(last) < len(ids):
            matrix = matrix[np.fromiter(last.values(), dtype=np.int64, count=len(last))]
        self.upsert_codes(self.names.codes(last), matrix)

    def remove(self, item_ids: list[str]) -> None:
        """Drop ids from the index (deleted or expired items); unknown ids are ignored."""
        self.remove_codes(self.names.known(item_ids))

    def remove_codes(self, codes: Codes) -> None:
        """Drop codes from the index; codes without a vector are ignored."""
        with self._lock.write_lock():
            codes = codes[codes < len(self._live)]
            keys = np.unique(codes[self._live[codes]])
            if not keys.size:
                return
            self._live[keys] = False
            self._store[keys] = 0.0
            self._count -= int(keys.size)
            remove_keys(self._index, keys)
            if self._dirty is not None:
                self._dirty.update(keys.tolist())
        self._maybe_rebuild()

    def codes(self) -> Codes:
        """Every code with a vector."""
        return np.flatnonzero(self._live).astype(np.int64)

    def has(self, code: int) -> bool:
        """Whether the code has a vector."""
        live = self._live
        return code < len(live) and bool(live[code])

    def vectors(self, codes: Codes) -> Vector:
        """The rows of these codes (zeros for a code without a vector); no lock: a row being
        replaced meanwhile reads as its old or its new vector."""
        store = self._store
        inside = codes < len(store)
        if inside.all():
            return store[codes]
        out = np.zeros((len(codes), self.dim), dtype=np.float32)
        out[inside] = store[codes[inside]]
        return out

    def search(self, query: Vector, k: int) -> tuple[list[str], npt.NDArray[np.float32]]:
        """The k nearest item ids by inner product, best first, with their scores."""
        codes, scores = self.search_codes(query, k)
        return self.names.names(codes), scores

    def search_codes(self, query: Vector, k: int) -> tuple[Codes, npt.NDArray[np.float32]]:
        """The k nearest item codes by inner product, best first, with their scores."""
        q = np.ascontiguousarray(query, dtype=np.float32).reshape(1, -1)
        with self._lock.read_lock():  # searches run side by side (faiss releases the GIL)
            index = self._index
            ntotal, nlist = int(index.ntotal), int(index.nlist)
            k = min(k, ntotal)
            if k <= 0:
                return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
            nprobe = nprobe_for(k, ntotal, nlist, self.candidates_per_result, self.min_nprobe)
            while True:
                params = faiss.SearchParametersIVF()
                params.nprobe = nprobe
                if k >= SELECT_ABOVE_K:
                    codes, scores = select_top(index, q, k, params)
                else:
                    found, hits = index.search(q, k, params=params)
                    valid = hits[0] >= 0
                    codes, scores = hits[0][valid], found[0][valid]
                if len(codes) >= k or nprobe >= nlist:
                    return codes, scores
                nprobe = min(nlist, 2 * nprobe)  # the probed lists were short of k vectors

    def describe(self) -> dict[str, object]:
        """Which index answers now, its parameters, and any build in progress (for logs)."""
        with self._lock.read_lock():
            nlist = int(self._index.nlist)
            return {
                "kind": "exact" if nlist == 1 else "ivf",
                "vectors": self._count,
                "nlist": nlist,
                "trained_on": self._trained_on if nlist > 1 else 0,
                "candidates_per_result": self.candidates_per_result,
                "min_nprobe": self.min_nprobe,
                "building_nlist": self._building_nlist if self._builder is not None else None,
                "last_build_error": self._build_error,
            }

    def wait_ready(self, timeout: float | None = None) -> bool:
        """Wait until the running build (if any) is swapped in; False if it is still running."""
        builder = self._builder
        if builder is None:
            return True
        builder.join(timeout)
        return not builder.is_alive()

    # ---- updates ----

    def upsert_codes(self, keys: Codes, matrix: npt.NDArray[np.float32]) -> None:
        """Add or replace the vectors of distinct codes."""
        if not len(keys):
            return
        if matrix.shape != (len(keys), self.dim):  # checked before anything changes
            raise ValueError(f"expected a ({len(keys)}, {self.dim}) matrix, got {matrix.shape}")
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        index = self._index
        lists = assign(index, matrix)
        with self._lock.write_lock():
            if index is not self._index:  # a build was swapped in meanwhile
                index = self._index
                lists = assign(index, matrix)
            self._reserve(int(keys.max()) + 1)
            self._count += int(len(keys) - self._live[keys].sum())
            self._store[keys] = matrix
            self._live[keys] = True
            remove_keys(index, keys)
            index.add_core(  # the lists were assigned above, outside the lock
                len(keys), faiss.swig_ptr(matrix), faiss.swig_ptr(keys), faiss.swig_ptr(lists)
            )
            if self._dirty is not None:
                self._dirty.update(keys.tolist())
        self._maybe_rebuild()

    def _reserve(self, size: int) -> None:
        if size <= len(self._live):
            return
        capacity = max(size, 2 * len(self._live))
        store = np.zeros((capacity, self.dim), dtype=np.float32)
        live = np.zeros(capacity, dtype=np.bool_)
        store[: len(self._store)] = self._store
        live[: len(self._live)] = self._live
        # A running build keeps reading the old arrays; what changes from now on it replays.
        self._store, self._live = store, live

    # ---- background builds ----

    def _wanted_nlist(self, n: int) -> int | None:
        """The nlist of the next index, or None while the current one fits n vectors."""
        if int(self._index.nlist) == 1:
            wanted = nlist_for(n, self.max_nlist) if n >= self.exact_below else 1
            return wanted if wanted > 1 else None
        if n < self.exact_below // 2:
            return 1
        return nlist_for(n, self.max_nlist) if n >= 2 * self._trained_on else None

    def _maybe_rebuild(self) -> None:
        with self._lock.write_lock():
            if self._builder is not None:
                return
            nlist = self._wanted_nlist(self._count)
            if nlist is None:
                return
            keys = np.flatnonzero(self._live).astype(np.int64)
            self._dirty = set()
            self._building_nlist = nlist
            self._builder = threading.Thread(
                target=self._build,
                args=(nlist, keys, self._store),
                name="vector-index-build",
                daemon=True,
            )
            self._builder.start()

    def _build(self, nlist: int, keys: Codes, store: Vector) -> None:
        """Build the next index off the lock, catch up with changes made meanwhile, swap it in."""
        try:
            index = self._fill(nlist, keys, store)
            for _ in range(REPLAY_ROUNDS):
                with self._lock.write_lock():
                    dirty = self._dirty or set()
                    if len(dirty) <= FINAL_REPLAY:
                        break
                    self._dirty = set()
                    store, live = self._store, self._live
                replay(index, dirty, store, live)
            with self._lock.write_lock():
                replay(index, self._dirty or set(), self._store, self._live)
                self._index = index
                self._trained_on = keys.size
                self._build_error = None
                self._dirty, self._builder = None, None
            log.info("vector index swapped in: nlist=%d over %d vectors", nlist, keys.size)
        except Exception as exc:
            log.exception("vector index build (nlist=%d) failed; the current index stays", nlist)
            with self._lock.write_lock():
                self._build_error = repr(exc)
                self._dirty, self._builder = None, None

    def _fill(self, nlist: int, keys: Codes, store: Vector) -> faiss.IndexIVFFlat:
        """A new index holding `keys` as the store has them (rows may change meanwhile)."""
        sample = store[:0]
        if nlist > 1:
            rng = np.random.default_rng(keys.size)
            size = min(keys.size, TRAIN_POINTS_PER_LIST * nlist)
            sample = store[np.sort(rng.choice(keys, size=size, replace=False))]
        index = new_index(self.dim, nlist, sample)
        for start in range(0, keys.size, BUILD_CHUNK):
            chunk = keys[start : start + BUILD_CHUNK]
            index.add_with_ids(store[chunk], chunk)
        return index


class ByName(Mapping[str, Vector]):
    """An index's vectors by item id (a read-only view)."""

    def __init__(self, index: VectorIndex) -> None:
        self._index = index

    def __getitem__(self, name: str) -> Vector:
        code = self._index.names.get(name)
        if code is None or not self._index.has(code):
            raise KeyError(name)
        row: Vector = self._index.vectors(np.array([code]))[0]
        return row

    def __iter__(self) -> Iterator[str]:
        return iter(self._index.names.names(self._index.codes()))

    def __len__(self) -> int:
        return len(self._index)
