"""Exact nearest-neighbour pair search (cosine on features, Hamming on hashes) and DBSCAN clusters."""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from scipy.sparse import coo_matrix
from sklearn.cluster import DBSCAN
from tqdm.auto import tqdm

from siamese.dedup.features import CROPS_FROM


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


def hamming_pairs(a: np.ndarray, b: np.ndarray | None = None, threshold: float = 0.125,
                  chunk: int = 2048) -> pd.DataFrame:
    """Pairs whose pHashes differ in at most ``threshold`` of their bits, taking the closest of: the first
    image against every variant of the second (orientations, crops), and the first's crops against the second.

    ``a`` and ``b`` are ``(N, variants, words)`` from :func:`~siamese.dedup.features.phash_codes`; comparing
    crops in both directions finds a cropped copy whichever of the two comes first. Bits become +-1 floats,
    so the Hamming distance of two hashes is ``(bits - dot) / 2``, exact in float32, and the search runs as
    chunked matrix products like :func:`cosine_pairs`.
    """
    within = b is None
    signs_a = _signs(a)
    signs_ref = signs_a if within else _signs(b)
    bits_total = signs_a.shape[2]
    found_i, found_j, found_d = [], [], []
    for start in tqdm(range(0, len(a), chunk), desc="hash pairs", disable=None):
        offset = start if within else 0
        query, ref = signs_a[start:start + chunk], signs_ref[offset:]
        dot = query[:, 0] @ ref[:, 0].T
        for v in range(1, ref.shape[1]):
            torch.maximum(dot, query[:, 0] @ ref[:, v].T, out=dot)
        for v in range(CROPS_FROM, query.shape[1]):
            torch.maximum(dot, query[:, v] @ ref[:, 0].T, out=dot)
        bits = (bits_total - dot) / 2
        hits = bits <= threshold * bits_total
        if within:
            hits = torch.triu(hits, diagonal=1)
        i, j = torch.nonzero(hits, as_tuple=True)
        found_i.append(i.numpy() + start)
        found_j.append(j.numpy() + offset)
        found_d.append((bits[i, j] / bits_total).numpy())
    return pd.DataFrame({"i": np.concatenate(found_i), "j": np.concatenate(found_j),
                         "distance": np.concatenate(found_d).astype(float)})


def _signs(codes: np.ndarray) -> torch.Tensor:
    """``(N, variants, words)`` uint64 hash words to ``(N, variants, 64 * words)`` floats of +-1."""
    bits = np.unpackbits(codes.astype(">u8").view(np.uint8), axis=-1)
    return torch.from_numpy(bits.astype(np.float32) * 2 - 1)


def dbscan_clusters(n: int, pairs: pd.DataFrame, threshold: float) -> np.ndarray:
    """DBSCAN (min_samples=2) on the sparse graph of found pairs; -1 marks images with no duplicate.

    Only the pairs within ``threshold`` are stored, so this stays cheap for tens of thousands of images.
    """
    offset = 1e-9  # stored zeros would read as 'no edge' in a sparse precomputed matrix
    i, j = pairs["i"].to_numpy(), pairs["j"].to_numpy()
    # one edge per pair of images, at its shortest: the sparse matrix would add up a pair found twice (by
    # two methods, or in both orders) into a distance past the threshold
    edges = pd.DataFrame({"i": np.minimum(i, j), "j": np.maximum(i, j), "d": pairs["distance"].to_numpy()})
    edges = edges.groupby(["i", "j"], as_index=False)["d"].min()
    i, j, d = edges["i"].to_numpy(), edges["j"].to_numpy(), edges["d"].to_numpy() + offset
    graph = coo_matrix((np.concatenate([d, d]), (np.concatenate([i, j]), np.concatenate([j, i]))),
                       shape=(n, n)).tocsr()
    return DBSCAN(eps=threshold + offset, min_samples=2, metric="precomputed").fit(graph).labels_
