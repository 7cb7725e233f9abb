"""The numpy array types every floor shares, one meaning each."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]  # measurements, scores, weights, counters summed
Float32s = npt.NDArray[np.float32]  # what is stored or served as float32: feature rows, counts
Vector = npt.NDArray[np.float32]  # an embedding
Vectors = npt.NDArray[np.float32]  # embeddings, a row each
Ints = npt.NDArray[np.int64]  # counts, offsets, positions, timestamps
UInts = npt.NDArray[np.uint64]  # hashed ids (the embeddings' collisionless table, windows' keys)
Bools = npt.NDArray[np.bool_]
Codes = npt.NDArray[np.int64]  # dense integer codes of items, creators and tags (api.codes)
Ids = npt.NDArray[np.object_]  # entity ids as Python strings
