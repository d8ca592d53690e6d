"""Exact nearest-neighbour pair search (cosine on features, Hamming on hashes) and DBSCAN clusters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from sklearn.cluster import DBSCAN
from tqdm.auto import tqdm

HASH_BITS = 64


def cosine_pairs(a: np.ndarray, b: np.ndarray | None = None, threshold: float = 0.1,
                 chunk: int = 2048) -> pd.DataFrame:
    """All pairs with cosine distance <= threshold, exactly, in chunks so memory stays ``chunk x N``.

    Rows of ``a`` and ``b`` must be unit length. With ``b`` None pairs are within ``a`` (i < j), and each
    chunk is compared only with the rows from its own start on: half the work of the full square.
    """
    within = b is None
    ref = torch.from_numpy(np.ascontiguousarray(a if within else b, dtype=np.float32))
    query = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    found_i, found_j, found_d = [], [], []
    for start in tqdm(range(0, len(query), chunk), desc="neighbours", disable=None):
        offset = start if within else 0
        similarity = query[start:start + chunk] @ ref[offset:].T
        hits = similarity >= 1 - threshold
        if within:
            hits = torch.triu(hits, diagonal=1)
        i, j = torch.nonzero(hits, as_tuple=True)
        found_i.append(i.numpy() + start)
        found_j.append(j.numpy() + offset)
        found_d.append((1 - similarity[i, j]).clamp_min(0).numpy())
    return pd.DataFrame({"i": np.concatenate(found_i), "j": np.concatenate(found_j),
                         "distance": np.concatenate(found_d).astype(float)})


def hamming_pairs(a: np.ndarray, b: np.ndarray | None = None, threshold: float = 0.1,
                  chunk: int = 1024) -> pd.DataFrame:
    """Pairs whose pHash (any mirror of the second image) differs in at most ``threshold * 64`` bits."""
    within = b is None
    ref = a if within else b
    found_i, found_j, found_d = [], [], []
    for start in tqdm(range(0, len(a), chunk), desc="hash pairs", disable=None):
        offset = start if within else 0
        query = a[start:start + chunk, 0][:, None, None]
        bits = np.bitwise_count(query ^ ref[None, offset:, :]).min(axis=2)
        hits = bits <= threshold * HASH_BITS
        if within:
            hits = np.triu(hits, k=1)
        i, j = np.nonzero(hits)
        found_i.append(i + start)
        found_j.append(j + offset)
        found_d.append(bits[i, j].astype(float) / HASH_BITS)
    return pd.DataFrame({"i": np.concatenate(found_i), "j": np.concatenate(found_j),
                         "distance": np.concatenate(found_d)})


def dbscan_clusters(n: int, pairs: pd.DataFrame, threshold: float) -> np.ndarray:
    """DBSCAN (min_samples=2) on the sparse graph of found pairs; -1 marks images with no duplicate.

    Only the pairs within ``threshold`` are stored, so this stays cheap for tens of thousands of images.
    """
    offset = 1e-9  # stored zeros would read as 'no edge' in a sparse precomputed matrix
    d = pairs["distance"].to_numpy() + offset
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    graph = coo_matrix((np.concatenate([d, d]), (np.concatenate([i, j]), np.concatenate([j, i]))),
                       shape=(n, n)).tocsr()
    return DBSCAN(eps=threshold + offset, min_samples=2, metric="precomputed").fit(graph).labels_
