"""The API's FAISS index of item vectors: add, replace, remove by item id; inner-product search.

Why it is built this way (the faiss structure itself: `api.ivf`):

- Below `exact_below` vectors the index is exact (a single list); at or above it, an IVF of
  `nlist_for(N)` lists, capped at `max_nlist` = 2048. nprobe is set per query
  (`candidates_per_result`, `min_nprobe`), and doubled while the probed lists hold fewer than k
  vectors: a search always yields min(k, N) results.
- faiss ids are the items' codes (`api.codes`), shared with the API's other per-item arrays: a
  search answers in codes, and `vectors` gathers the rows of any codes (a pre-ranker scores
  every candidate from any source with them).
- The inverted lists are the only copy of the vectors a replica holds: `vectors` reads rows
  back through the direct map, so a million vectors cost their 256 MB once, not once more in a
  matrix by code. A row costs ~1 µs so (a hash lookup and a copy), a third of that from a
  matrix: ~0.2 ms of a feed that scores ~300 candidates no vector search found.
- Switching kinds, or retraining once N has doubled since the last training, builds a new index
  on a daemon thread while the current one answers. The build reads the vectors out of the
  current index by code, `READ_CHUNK` at a time under the read lock (`api.ivf.filled`); codes
  changed meanwhile are recorded and replayed into the new index (in rounds outside the lock,
  the last few under it) just before the swap.
- A reader-writer lock: searches and reads of rows share it (several run at once on several
  cores), the live flags and list edits take it alone (faiss lists must not change under a
  running search or read; a waiting writer holds back new searches, so updates are not
  starved); upserts assign their vectors to lists before taking it.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping

import faiss
import fasteners
import numpy as np
import numpy.typing as npt

from api.codes import Interner
from api.ivf import (
    HASH_ENTRY_BYTES,
    assign,
    filled,
    new_index,
    nlist_for,
    nprobe_for,
    remove_keys,
    select_top,
)
from swipeloop.arrays import Codes, Vector

log = logging.getLogger(__name__)

READ_CHUNK = 16_384  # rows a build reads out of the current index per hold of the read lock
FINAL_REPLAY = 4_096  # changed ids small enough to replay while holding the lock
REPLAY_ROUNDS = 8  # catch-up rounds outside the lock before replaying the rest under it
SELECT_ABOVE_K = 1_000  # from this k on, searches select from a range search (`select_top`)


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
        self._live = np.zeros(1024, dtype=np.bool_)  # by code: has a vector in the index
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
        """The rows of these codes (zeros for a code without a vector)."""
        found, rows = self._gather(codes)
        if len(found) == len(codes):
            return rows
        out = np.zeros((len(codes), self.dim), dtype=np.float32)
        out[found] = rows
        return out

    def _gather(self, codes: Codes) -> tuple[Codes, Vector]:
        """Positions of the codes that have a vector, and their rows read out of the lists
        (under the read lock: a writer may move entries or grow a list)."""
        codes = np.ascontiguousarray(codes, dtype=np.int64)
        with self._lock.read_lock():
            live = self._live
            inside = codes < len(live)
            found = np.flatnonzero(inside & live[np.where(inside, codes, 0)])
            keys = codes if len(found) == len(codes) else codes[found]
            if not len(keys):
                return found, np.zeros((0, self.dim), dtype=np.float32)
            rows: Vector = self._index.reconstruct_batch(keys)
        return found, rows

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

    def memory(self) -> dict[str, int]:
        """Bytes held, by part: the vectors and ids in the lists, the direct map (estimated),
        the centroids and the live flags."""
        with self._lock.read_lock():
            index = self._index
            entries = int(index.ntotal)
            return {
                "vectors": entries * int(index.code_size),
                "ids": entries * 8,
                "direct_map": entries * HASH_ENTRY_BYTES,
                "centroids": int(index.nlist) * self.dim * 4,
                "live_flags": int(self._live.nbytes),
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
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        matrix = np.ascontiguousarray(matrix, dtype=np.float32)
        index = self._index
        lists = assign(index, matrix)
        with self._lock.write_lock():
            if index is not self._index:  # a build was swapped in meanwhile
                index = self._index
                lists = assign(index, matrix)
            self._reserve(int(keys.max()) + 1)
            self._count += int(len(keys) - self._live[keys].sum())
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
        live = np.zeros(max(size, 2 * len(self._live)), dtype=np.bool_)
        live[: len(self._live)] = self._live
        self._live = live

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
                target=self._build, args=(nlist, keys), name="vector-index-build", daemon=True
            )
            self._builder.start()

    def _build(self, nlist: int, keys: Codes) -> None:
        """Build the next index off the lock, catch up with changes made meanwhile, swap it in."""
        try:
            index = filled(self.dim, nlist, keys, self._gather, READ_CHUNK)
            for _ in range(REPLAY_ROUNDS):
                with self._lock.write_lock():
                    dirty = self._dirty or set()
                    if len(dirty) <= FINAL_REPLAY:
                        break
                    self._dirty = set()
                self._replay(index, dirty)
            with self._lock.write_lock():
                self._replay(index, self._dirty or set())
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

    def _replay(self, index: faiss.IndexIVF, dirty: set[int]) -> None:
        """Bring `dirty` keys of a new index to what the current index holds for them now."""
        if not dirty:
            return
        keys = np.fromiter(dirty, dtype=np.int64, count=len(dirty))
        remove_keys(index, keys)
        for start in range(0, keys.size, READ_CHUNK):
            chunk = keys[start : start + READ_CHUNK]
            found, rows = self._gather(chunk)
            if len(found):
                index.add_with_ids(rows, chunk[found])


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
