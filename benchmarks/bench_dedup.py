"""Exact near-duplicate search time at HAM10000 (10,015) and ISIC 2020 (33,126) sizes.

    python -m benchmarks.bench_dedup [--dim 2048] [--sizes 10015 33126]

Project: chunked exact cosine neighbours (torch matmul) and pHash Hamming pairs. Baseline in the same run:
scikit-learn's brute-force ``NearestNeighbors.radius_neighbors`` with the cosine metric.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.neighbors import NearestNeighbors

from benchmarks.harness import isolated, positive, print_table
from siamese.config import DEFAULT_PHASH_THRESHOLD
from siamese.dedup.features import HASH_SIZE, VARIANTS
from siamese.dedup.search import cosine_pairs, hamming_pairs

THRESHOLD = 0.1


def features(n: int, dim: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, dim)).astype(np.float32)
    x[n // 2: n // 2 + 50] = x[:50] + 0.05 * rng.normal(size=(50, dim))
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def project(n: int, dim: int) -> dict:
    x = features(n, dim)
    start = time.perf_counter()
    pairs = cosine_pairs(x, threshold=THRESHOLD)
    return {"seconds": time.perf_counter() - start, "pairs": len(pairs)}


def sklearn_baseline(n: int, dim: int) -> dict:
    x = features(n, dim)
    start = time.perf_counter()
    index = NearestNeighbors(radius=THRESHOLD, metric="cosine", algorithm="brute").fit(x)
    found = index.radius_neighbors(x, return_distance=False)
    pairs = sum(len(f) - 1 for f in found) // 2
    return {"seconds": time.perf_counter() - start, "pairs": pairs}


def phash(n: int) -> dict:
    shape = (n, VARIANTS, HASH_SIZE * HASH_SIZE // 64)
    codes = np.random.default_rng(0).integers(0, 2**63, size=shape, dtype=np.int64).astype(np.uint64)
    start = time.perf_counter()
    hamming_pairs(codes, threshold=DEFAULT_PHASH_THRESHOLD)
    return {"seconds": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dim", type=positive, default=2048)
    parser.add_argument("--sizes", type=positive, nargs="+", default=[10015, 33126])
    args = parser.parse_args()
    for n in args.sizes:
        rows = [{"case": "sklearn radius_neighbors (cosine)", **isolated(sklearn_baseline, n, args.dim)},
                {"case": "project cosine_pairs (chunked)", **isolated(project, n, args.dim)},
                {"case": "project pHash hamming_pairs", **isolated(phash, n)}]
        print_table(f"duplicate search: {n} images, {args.dim}-d features, cosine distance <= {THRESHOLD}", rows,
                    "seconds", "sklearn radius_neighbors (cosine)", higher_is_better=False)
        print(f"pairs found: sklearn {rows[0]['pairs']}, project {rows[1]['pairs']}")


if __name__ == "__main__":
    main()
