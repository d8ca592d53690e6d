"""Seconds for t-SNE and UMAP on N embeddings (default 10,015, HAM10000's size) on this machine.

    python -m benchmarks.bench_projection [--points 10015] [--dim 128]

Baseline in the same run: PCA to 2-D, the cheapest projection, so the ratio says what the nonlinear
methods cost on top of it.
"""

import argparse
import time

import numpy as np
from sklearn.decomposition import PCA

from benchmarks.harness import positive
from siamese.diagnostics.projection import project


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--points", type=positive, default=10015)
    parser.add_argument("--dim", type=positive, default=128)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(7, args.dim))
    x = centres[rng.integers(0, 7, args.points)] + 0.5 * rng.normal(size=(args.points, args.dim))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    start = time.perf_counter()
    PCA(n_components=2).fit_transform(x)
    baseline = time.perf_counter() - start
    print(f"{'method':8s} {'points':>7s} {'seconds':>8s} {'x PCA':>8s}")
    print(f"{'pca':8s} {args.points:7d} {baseline:8.2f} {1.0:8.1f}")
    for method in ("tsne", "umap"):
        start = time.perf_counter()
        project(x, method)
        seconds = time.perf_counter() - start
        print(f"{method:8s} {args.points:7d} {seconds:8.2f} {seconds / baseline:8.1f}")


if __name__ == "__main__":
    main()
