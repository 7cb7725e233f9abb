"""Online item embeddings: a collisionless table trained by item2vec-style SGD on co-engagement."""

from __future__ import annotations

import zlib

import numpy as np
import numpy.typing as npt

Vector = npt.NDArray[np.float32]


def _sigmoid(x: float) -> float:
    return float(1.0 / (1.0 + np.exp(-np.clip(x, -30.0, 30.0))))


class EmbeddingTable:
    """One row per id (no hash sharing); rows start as small deterministic noise."""

    def __init__(self, dim: int, lr: float, seed: int = 0) -> None:
        self.dim = dim
        self.lr = lr
        self._rows: dict[str, int] = {}
        self._ids: list[str] = []
        self._matrix: Vector = np.zeros((1024, dim), dtype=np.float32)
        self._rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self._ids)

    def __contains__(self, item_id: str) -> bool:
        return item_id in self._rows

    def row(self, item_id: str) -> int:
        """The row of an id, created on first sight."""
        found = self._rows.get(item_id)
        if found is not None:
            return found
        index = len(self._ids)
        if index == len(self._matrix):
            self._matrix = np.concatenate([self._matrix, np.zeros_like(self._matrix)])
        init = np.random.default_rng(zlib.crc32(item_id.encode()))
        self._matrix[index] = init.normal(0.0, 0.1, self.dim).astype(np.float32)
        self._rows[item_id] = index
        self._ids.append(item_id)
        return index

    def load(self, ids: list[str], matrix: Vector) -> None:
        """Replace the table with stored vectors (one row per id, in order), in bulk."""
        self._rows = {item_id: row for row, item_id in enumerate(ids)}
        self._ids = list(ids)
        capacity = max(1024, 2 * len(ids))
        self._matrix = np.zeros((capacity, self.dim), dtype=np.float32)
        self._matrix[: len(ids)] = matrix

    def export(self) -> tuple[list[str], Vector]:
        """Every id and a copy of its vectors (what `load` takes back), for snapshots."""
        return list(self._ids), self._matrix[: len(self._ids)].copy()

    def get(self, item_id: str) -> Vector:
        """A copy of one vector."""
        vector: Vector = self._matrix[self.row(item_id)].copy()
        return vector

    def _step(self, a: int, b: int, label: float, weight: float, move_b: bool = True) -> None:
        va, vb = self._matrix[a].copy(), self._matrix[b]
        gradient = weight * (label - _sigmoid(float(va @ vb))) * self.lr
        self._matrix[a] += gradient * vb
        if move_b:
            self._matrix[b] += gradient * va

    def update(self, a: str, b: str, weight: float, negatives: int) -> set[str]:
        """One SGD step on a pair: pull together if weight > 0, push apart if < 0.

        Positive pairs also push `a` away from a few random rows (negative sampling); only `a`
        moves there, so a sample does not republish unrelated vectors.
        Returns the ids whose vectors changed.
        """
        ra, rb = self.row(a), self.row(b)
        changed = {a, b}
        if weight > 0:
            self._step(ra, rb, 1.0, weight)
            for rn in self._rng.integers(0, len(self._ids), size=negatives):
                if int(rn) not in (ra, rb):
                    self._step(ra, int(rn), 0.0, 1.0, move_b=False)
        elif weight < 0:
            self._step(ra, rb, 0.0, -weight)
        return changed


def mean_vector(vectors: list[Vector]) -> Vector | None:
    """The normalized mean of some vectors (a user's taste from the items they engaged with)."""
    if not vectors:
        return None
    mean = np.mean(np.stack(vectors), axis=0).astype(np.float32)
    norm = float(np.linalg.norm(mean))
    return mean / norm if norm > 0 else None


def normalized(vector: Vector) -> Vector:
    """Unit length, so inner product is cosine similarity."""
    norm = float(np.linalg.norm(vector))
    return (vector / norm).astype(np.float32) if norm > 0 else vector.astype(np.float32)
