"""Test-set metrics for a classifier's probabilities, as JSON-able values and a per-class table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> tuple[dict[str, Any],
                                                                                             pd.DataFrame]:
    """Accuracy, balanced accuracy, macro P/R/F1, ROC-AUC, the confusion matrix; top-3 accuracy (multiclass);
    sensitivity at 80 % and 90 % specificity and ISIC 2024's partial AUC above 80 % sensitivity (binary, of the
    :func:`positive_index` class).

    ``y_true`` is ``(N,)`` class indices into ``classes``, ``proba`` ``(N, C)`` probabilities."""
    labels = np.arange(len(classes))
    y_pred = proba.argmax(axis=1)
    p, r, f, support = metrics.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    per_class = pd.DataFrame({"class": classes, "precision": p, "recall": r, "f1": f, "support": support})
    summary: dict[str, Any] = {
        "n": int(len(y_true)),
        "accuracy": float(metrics.accuracy_score(y_true, y_pred)),
        "balanced_accuracy": float(metrics.balanced_accuracy_score(y_true, y_pred)),
        "macro_precision": float(p.mean()),
        "macro_recall": float(r.mean()),
        "macro_f1": float(f.mean()),
        "roc_auc": roc_auc(y_true, proba),
        "confusion_matrix": metrics.confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "classes": list(classes),
    }
    if len(classes) == 2 and len(np.unique(y_true)) == 2:
        positive = positive_index(classes)
        for specificity in SPECIFICITIES:
            summary[f"sensitivity_at_{round(specificity * 100)}_specificity"] = sensitivity_at_specificity(
                y_true == positive, proba[:, positive], specificity)
        summary[PARTIAL_AUC] = partial_auc(y_true == positive, proba[:, positive])
    if len(classes) > 2:
        k = min(3, len(classes) - 1)
        summary[f"top{k}_accuracy"] = float(metrics.top_k_accuracy_score(y_true, proba, k=k, labels=labels))
    return summary, per_class


SPECIFICITIES = (0.8, 0.9)
POSITIVE_CLASSES = ("malignant", "melanoma", "mel")
"""Names of the class a binary dermoscopy task screens for, in order of preference."""


def positive_index(classes: list[str]) -> int:
    """The index of the class a binary task screens for (malignant, melanoma); else the second class."""
    return next((classes.index(name) for name in POSITIVE_CLASSES if name in classes), 1)


def sensitivity_at_specificity(positive: np.ndarray, score: np.ndarray, specificity: float) -> float:
    """The highest sensitivity (true-positive rate) at a threshold whose specificity is at least
    ``specificity``: the ROC curve's operating point a screening study reports (ISIC 2020 papers use
    80 % and 90 %). ``positive`` is ``(N,)`` bool, ``score`` ``(N,)`` higher for positive."""
    fpr, tpr, _ = metrics.roc_curve(positive, score)
    return float(tpr[fpr <= 1 - specificity + 1e-12].max())


PARTIAL_AUC = "partial_auc_above_80_tpr"
MIN_TPR = 0.8


def partial_auc(positive: np.ndarray, score: np.ndarray, min_tpr: float = MIN_TPR) -> float:
    """ISIC 2024's metric: the area of the ROC curve above ``min_tpr`` true-positive rate, between 0 and
    ``1 - min_tpr`` (0.2 for a perfect ranking at 80 %). Computed as the challenge's scorer does: labels and
    scores flipped, the flipped curve's area up to false-positive rate ``1 - min_tpr``, its last segment
    interpolated linearly. ``positive`` is ``(N,)`` bool, ``score`` ``(N,)`` higher for positive."""
    max_fpr = 1 - min_tpr
    fpr, tpr, _ = metrics.roc_curve(~np.asarray(positive, dtype=bool), -np.asarray(score, dtype=np.float64))
    stop = int(np.searchsorted(fpr, max_fpr, "right"))
    if stop < len(fpr):
        tpr = np.append(tpr[:stop], np.interp(max_fpr, fpr[stop - 1:stop + 1], tpr[stop - 1:stop + 1]))
        fpr = np.append(fpr[:stop], max_fpr)
    return float(metrics.auc(fpr, tpr))


def roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float | None:
    """Binary AUC, or one-vs-rest macro AUC over the classes present; None when undefined."""
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if proba.shape[1] == 2:
        return float(metrics.roc_auc_score(y_true, proba[:, 1]))
    scores = [metrics.roc_auc_score(y_true == c, proba[:, c]) for c in present]
    return float(np.mean(scores))
