"""The reference models every cross-validated figure is scored beside, in the very same folds.

``colour_baseline`` is what a dermoscopy researcher tries first: colour histograms and per-channel
statistics in RGB and HSV, standardised, into scikit-learn's logistic regression. ``majority`` predicts
the training folds' class shares for every image. A learned embedding that cannot beat the first has
learned nothing colour alone does not already say; one that cannot beat the second has learned nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from PIL import Image
from scipy.stats import skew
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm.auto import tqdm

if TYPE_CHECKING:
    from siamese.data.images import PixelSource

HISTOGRAM_BINS = 8


def colour_features(pixels: np.ndarray) -> np.ndarray:
    """Per-channel normalised histograms plus mean, standard deviation and skewness, in RGB and HSV."""
    hsv = np.asarray(Image.fromarray(pixels).convert("HSV"))
    features = []
    for space in (pixels, hsv):
        channels = space.reshape(-1, 3).astype(np.float64)
        for c in range(3):
            counts, _ = np.histogram(channels[:, c], bins=HISTOGRAM_BINS, range=(0, 256))
            features.append(counts / len(channels))
        values = channels / 255.0
        features += [values.mean(axis=0), values.std(axis=0), np.nan_to_num(skew(values, axis=0))]
    return np.concatenate(features).astype(np.float32)


def colour_feature_matrix(source: PixelSource) -> np.ndarray:
    return np.stack([colour_features(source[i]) for i in tqdm(range(len(source)), desc="colour features",
                                                               leave=False)])


def colour_baseline_proba(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int,
                          seed: int = 0) -> np.ndarray:
    """Class-balanced logistic regression on standardised colour features; probabilities for every class,
    including any absent from the training folds (as zero)."""
    model = make_pipeline(StandardScaler(), LogisticRegression(class_weight="balanced", max_iter=5000,
                                                               random_state=seed))
    model.fit(x_train, y_train)
    proba = np.zeros((len(x_test), n_classes))
    proba[:, model.classes_] = model.predict_proba(x_test)
    return proba


def majority_proba(y_train: np.ndarray, n_test: int, n_classes: int) -> np.ndarray:
    """The training folds' class shares for every test image: its argmax is the majority class."""
    shares = np.bincount(y_train, minlength=n_classes) / len(y_train)
    return np.tile(shares, (n_test, 1))
