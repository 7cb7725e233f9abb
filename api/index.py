"""The API's FAISS index of item vectors: add, replace, remove by item id; inner-product search."""

from __future__ import annotations

import threading

import faiss
import numpy as np
import numpy.typing as npt

from models.embeddings import Vector


class VectorIndex:
    """Exact inner-product search over normalized item vectors, updated in place."""

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._ids: dict[str, int] = {}
        self._names: dict[int, str] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self._index.ntotal)

    def upsert(self, vectors: dict[str, Vector]) -> None:
        """Add new ids and replace existing ones in one pass."""
        if not vectors:
            return
        with self._lock:
            known = [self._ids[i] for i in vectors if i in self._ids]
            if known:
                self._index.remove_ids(np.asarray(known, dtype=np.int64))  # type: ignore[arg-type]
            keys = []
            for item_id in vectors:
                key = self._ids.get(item_id)
                if key is None:
                    key = len(self._names)
                    self._ids[item_id] = key
                    self._names[key] = item_id
                keys.append(key)
            matrix = np.stack(list(vectors.values())).astype(np.float32)
            self._index.add_with_ids(matrix, np.asarray(keys, dtype=np.int64))

    def remove(self, item_ids: list[str]) -> None:
        """Drop ids from the index (deleted or expired items)."""
        with self._lock:
            keys = [self._ids.pop(i) for i in item_ids if i in self._ids]
            for key in keys:
                self._names.pop(key, None)
            if keys:
                self._index.remove_ids(np.asarray(keys, dtype=np.int64))  # type: ignore[arg-type]

    def search(self, query: Vector, k: int) -> tuple[list[str], npt.NDArray[np.float32]]:
        """The k nearest item ids by inner product, best first, with their scores."""
        with self._lock:
            k = min(k, int(self._index.ntotal))
            if k <= 0:
                return [], np.zeros(0, dtype=np.float32)
            scores, keys = self._index.search(query.reshape(1, -1).astype(np.float32), k)
        valid = keys[0] >= 0
        return [self._names[int(key)] for key in keys[0][valid]], scores[0][valid]
