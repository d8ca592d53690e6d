"""The reference models a single run is scored beside, on its own test split.

They are the cross-validation's (one registry: :mod:`siamese.evaluation.reference_models`): the probes
(``colour_baseline``, ``imagenet_probe``, ``majority``, ``colour_embedding``) are fitted on the images the run's
two stages learnt from (its training and validation splits) on the pixels its embedder sees; ``finetune`` trains
on the same images (:mod:`siamese.training.finetune`). A train/val/test run thus
answers the same question a CV does: has metric learning earned its cost against what a researcher tries
first and second? Features are cached under ``RUN/references/`` with the image ids they belong to.

A final model (no test split) is scored on its validation split; the references are then fitted on the
training split alone, so that their figures stay held out (``colour_embedding`` less so: the embedder's
best epoch was picked on that split), while the two stages' are optimistic. A reference ahead of the
classifier there is thus a real sign; the classifier ahead of one is not.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from siamese.data.images import PixelRows, PixelSource
from siamese.evaluation.reference_features import colour_feature_matrix, imagenet_feature_matrix
from siamese.evaluation.reference_models import check_references, probe_scores
from siamese.runtime.atomic import written_whole
from siamese.training.embeddings import cached_arrays

FIT_SPLITS = ("train", "val")


class FeatureStore:
    """Per-image reference features shared by runs (the seeds of one experiment draw other splits of the
    same images): one ``.npz`` per (kind, pixels) in ``folder``, rows keyed by image file (or id), so only
    images not met before are computed. ``pixels`` must name everything that changes the pixels (dataset,
    size, crop, backbone)."""

    def __init__(self, folder: str | Path, kind: str, pixels: str) -> None:
        digest = hashlib.sha1(pixels.encode()).hexdigest()[:12]
        self.path = Path(folder) / "reference_features" / f"{kind}_{digest}.npz"

    def features(self, keys: np.ndarray, source: PixelSource, compute: Any) -> dict[str, np.ndarray]:
        """``compute(source)`` for the rows of ``source`` whose ``keys`` are not stored yet; all rows'."""
        stored = dict(np.load(self.path)) if self.path.is_file() else {}
        known = pd.Index(stored.get("key", np.array([], dtype=str)))
        missing = np.flatnonzero(~pd.Index(keys).isin(known))
        if len(missing):
            new = compute(PixelRows(source, missing))
            extra = {k: v for k, v in new.items() if k != "features"}
            merged = {"key": np.concatenate([known.to_numpy(dtype=str), keys[missing]]),
                      "features": (np.vstack([stored["features"], new["features"]]) if stored
                                   else new["features"]), **extra}
            with written_whole(self.path) as partial:
                np.savez(partial, **merged)
            stored, known = merged, pd.Index(merged["key"])
        rows = known.get_indexer(keys)
        return {"features": stored["features"][rows], **{k: v for k, v in stored.items()
                                                          if k not in ("key", "features")}}


def reference_probabilities(run_dir: Path, *, sources: dict[str, Any], ids: dict[str, np.ndarray],
                            targets: dict[str, np.ndarray], embeddings: dict[str, np.ndarray], n_classes: int,
                            names: Sequence[str], backbone: str, seed: int = 0, scored: str = "test",
                            shared: tuple[str | Path, str, dict[str, np.ndarray]] | None = None
                            ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Probabilities ``(N_scored, n_classes)`` on the ``scored`` split of each probe in ``names``
    (:func:`~siamese.evaluation.reference_models.probe_scores`; a trained reference such as ``finetune`` is the
    caller's), fitted on the :data:`FIT_SPLITS` other than ``scored`` (``val``: a final model's, see the module),
    and notes (the backbone ``imagenet_probe`` used: the run's own, or the packaged EfficientNet-Lite0 when its
    ImageNet weights cannot be had offline).

    ``sources``, ``ids``, ``targets`` and ``embeddings`` are keyed by split (``train``, ``val``, ``test``).
    ``shared`` = (folder, pixel description, per-split image keys) keeps the features in a
    :class:`FeatureStore` too (the run's ``--cache-dir``), so runs over other splits of the same images
    compute each image's features once.
    Raises ValueError naming an unknown reference model.
    """
    check_references(names)
    fit = tuple(s for s in FIT_SPLITS if s != scored)
    notes: dict[str, str] = {}

    def cached(kind: str, compute: Any) -> tuple[np.ndarray, np.ndarray]:
        arrays = {s: cached_split_features(run_dir, kind, s, ids[s], sources[s], compute, shared, backbone)
                  for s in (*fit, scored)}
        if "backbone" in arrays[scored]:
            notes["imagenet_probe"] = f"frozen ImageNet {arrays[scored]['backbone']} features"
        return np.vstack([arrays[s]["features"] for s in fit]), arrays[scored]["features"]

    def imagenet(source: Any) -> dict[str, np.ndarray]:
        values, used = imagenet_feature_matrix(source, backbone)
        return {"features": values, "backbone": np.asarray(used)}

    def features(kind: str) -> tuple[np.ndarray, np.ndarray]:
        if kind == "embedding":
            return np.vstack([embeddings[s] for s in fit]), embeddings[scored]
        if kind == "colour":
            return cached("colour", _colour)
        return cached("imagenet", imagenet)

    proba = probe_scores(names, features, np.concatenate([targets[s] for s in fit]), len(ids[scored]), n_classes,
                         seed)
    return proba, notes


def _colour(source: PixelSource) -> dict[str, np.ndarray]:
    return {"features": colour_feature_matrix(source)}


def cached_split_features(run_dir: Path, kind: str, split: str, ids: np.ndarray, source: PixelSource,
                          compute: Any, shared: tuple[str | Path, str, dict[str, np.ndarray]] | None = None,
                          backbone: str = "") -> dict[str, np.ndarray]:
    """One split's features of ``kind`` (``features``: ``(N, D)``; ``compute(source)`` makes them), kept in
    ``RUN_DIR/references/KIND_SPLIT.npz`` for these image ``ids`` and, given ``shared`` (see
    :func:`reference_probabilities`), in the cache folder's :class:`FeatureStore`, so each image is computed
    once across runs."""
    folder = Path(run_dir) / "references"
    folder.mkdir(exist_ok=True)

    def split_features() -> dict[str, np.ndarray]:
        if shared is None:
            return compute(source)
        store = FeatureStore(shared[0], kind, f"{shared[1]}|{kind}|{backbone}")
        return store.features(np.asarray(shared[2][split], dtype=str), source, compute)

    return cached_arrays(folder / f"{kind}_{split}.npz", np.asarray(ids, dtype=str), split_features)


def colour_split_features(run_dir: Path, split: str, ids: np.ndarray, source: PixelSource,
                          shared: tuple[str | Path, str, dict[str, np.ndarray]] | None = None,
                          backbone: str = "") -> np.ndarray:
    """``(N, 66)`` colour statistics of one split's images (:func:`~siamese.evaluation.reference_features.
    colour_feature_matrix`), shared with ``colour_baseline``'s cache (:func:`cached_split_features`)."""
    return cached_split_features(run_dir, "colour", split, ids, source, _colour, shared, backbone)["features"]
