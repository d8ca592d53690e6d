"""Test-set metrics for a classifier's probabilities, as JSON-able values and a per-class table."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics


def classification_metrics(y_true: np.ndarray, proba: np.ndarray, classes: list[str]) -> tuple[dict[str, Any],
                                                                                             pd.DataFrame]:
    """Accuracy, balanced accuracy, macro P/R/F1, ROC-AUC, top-3 (multiclass) and the confusion matrix."""
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
    if len(classes) > 2:
        k = min(3, len(classes) - 1)
        summary[f"top{k}_accuracy"] = float(metrics.top_k_accuracy_score(y_true, proba, k=k, labels=labels))
    return summary, per_class


def roc_auc(y_true: np.ndarray, proba: np.ndarray) -> float | None:
    """Binary AUC, or one-vs-rest macro AUC over the classes present; None when undefined."""
    present = np.unique(y_true)
    if len(present) < 2:
        return None
    if proba.shape[1] == 2:
        return float(metrics.roc_auc_score(y_true, proba[:, 1]))
    scores = [metrics.roc_auc_score(y_true == c, proba[:, c]) for c in present]
    return float(np.mean(scores))
