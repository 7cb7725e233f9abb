"""Item-vector index benchmark: build time, top-k latency and recall, upsert cost, memory.

    python bench/index.py --items 1000000 --dim 64 --k 10000 --queries 200   # ~40 s
    python bench/index.py --items 200000                                     # quick check

Items are unit vectors around 1,000 gaussian centres; `bulk_load` takes them all and the
benchmark waits for the background IVF build (`build_s` covers both). Queries are item vectors
plus gaussian noise (norm ~0.8 before normalising: a user near, not on, what they watched).
Latency is one query at a time on one thread (`faiss.omp_set_num_threads(1)` while timing),
through `VectorIndex.search`, so it includes the id mapping. Recall is against an exact flat
index on 20 of the queries, after the upserts. `upsert_1000_ms` is the median of five batches,
each replacing 1,000 random existing items. `rss_mb` is the peak RSS before that flat index is
built; it includes the benchmark's own copy of the vectors. `index_mb` is what the index holds
(`VectorIndex.memory`: the vectors once, in its lists, their ids and its direct map).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

import faiss
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from api.index import VectorIndex
from swipeloop.arrays import Vectors

CLUSTERS = 1_000
RECALL_QUERIES = 20
UPSERT_ROUNDS = 5  # upsert_1000_ms is their median


def clustered(items: int, dim: int, rng: np.random.Generator) -> Vectors:
    """Unit vectors around CLUSTERS gaussian centres, generated in float32 to spare memory."""
    centres = rng.standard_normal((CLUSTERS, dim), dtype=np.float32)
    matrix = centres[rng.integers(0, CLUSTERS, items)]
    matrix += 0.5 * rng.standard_normal((items, dim), dtype=np.float32)
    matrix /= np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def measure(items: int, dim: int, k: int, queries: int) -> dict[str, float]:
    """Build an index over `items` clustered vectors and time it; one flat dict of numbers."""
    rng = np.random.default_rng(0)
    matrix = clustered(items, dim, rng)
    ids = [f"v{i:07d}" for i in range(items)]
    noisy = matrix[rng.integers(0, items, queries)]
    noisy += 0.1 * rng.standard_normal(noisy.shape, dtype=np.float32)
    noisy /= np.linalg.norm(noisy, axis=1, keepdims=True)

    index = VectorIndex(dim)
    started = time.perf_counter()
    index.bulk_load(ids, matrix)
    index.wait_ready()
    build_s = time.perf_counter() - started

    threads = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        latencies = []
        for query in noisy:
            t0 = time.perf_counter()
            index.search(query, k)
            latencies.append((time.perf_counter() - t0) * 1000)
    finally:
        faiss.omp_set_num_threads(threads)

    upserts = []
    for _ in range(UPSERT_ROUNDS):
        replaced = rng.choice(items, 1_000, replace=False)
        fresh = clustered(1_000, dim, rng)
        batch = {ids[row]: fresh[i] for i, row in enumerate(replaced)}
        t0 = time.perf_counter()
        index.upsert(batch)
        upserts.append((time.perf_counter() - t0) * 1000)
        matrix[replaced] = fresh
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    held_mb = sum(index.memory().values()) / 2**20

    flat = faiss.IndexFlatIP(dim)
    flat.add(matrix)
    probe = noisy[:RECALL_QUERIES]
    _, truth = flat.search(probe, k)
    recalls = []
    for query, expected in zip(probe, truth, strict=True):
        names, _ = index.search(query, k)
        recalls.append(len(set(names) & {ids[row] for row in expected}) / len(expected))

    nlist = index.describe()["nlist"]
    assert isinstance(nlist, int)
    return {
        "items": items,
        "dim": dim,
        "k": k,
        "queries": queries,
        "nlist": nlist,
        "build_s": round(build_s, 2),
        "faiss_top10k_p50_ms": round(percentile(latencies, 0.50), 2),
        "faiss_top10k_p99_ms": round(percentile(latencies, 0.99), 2),
        "recall_at_10k_vs_flat": round(float(np.mean(recalls)), 4),
        "upsert_1000_ms": round(percentile(upserts, 0.5), 2),
        "rss_mb": round(rss_mb, 1),
        "index_mb": round(held_mb, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description="Item-vector index benchmark")
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--k", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=200)
    args = parser.parse_args()
    print(json.dumps(measure(args.items, args.dim, args.k, args.queries)))


if __name__ == "__main__":
    main()
