"""Figures written into every run folder (PNG, readable without any dashboard).

Drawn with matplotlib's object API (:class:`~matplotlib.figure.Figure`, no pyplot state): importing or
calling this module leaves the caller's backend alone (a notebook's inline plots keep working) and
registers no figure with pyplot, so nothing has to be closed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

CURVES = {
    "selfsup": (("loss", "NT-Xent loss (two views)"),),
    "embed": (("loss", "stage-1 loss"), ("triplets_per_batch", "mined tuples / batch"),
              ("val_precision_at_1", "val precision@1"), ("val_map_at_r", "val MAP@R"),
              ("val_knn_accuracy", "val k-NN accuracy"), ("empty_batch_fraction", "batches the miner left empty")),
    "classifier": (("loss", "train loss"), ("val_loss", "val loss"), ("val_accuracy", "val accuracy"),
                   ("val_balanced_accuracy", "val balanced accuracy")),
}


def training_curves(history: pd.DataFrame, stage: str, path: Path) -> Path | None:
    """One panel per logged quantity for a stage; None when the stage has no epochs yet."""
    rows = history[history["stage"] == stage]
    panels = [(c, t) for c, t in CURVES[stage] if c in rows.columns and rows[c].notna().any()]
    if rows.empty or not panels:
        return None
    ncols = min(3, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = new_figure(nrows, ncols, figsize=(3.6 * ncols, 2.9 * nrows), squeeze=False)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (column, title) in zip(axes.flat, panels, strict=False):
        ax.plot(rows["epoch"], rows[column], marker="o", markersize=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{stage} stage", fontsize=10)
    return save_figure(fig, path)


def new_figure(nrows: int = 1, ncols: int = 1, *, figsize: tuple[float, float], layout: str | None = None,
               **subplots: Any) -> tuple[Figure, Any]:
    """A figure of its own and its axes (``Figure.subplots``: one Axes, or an array of them).

    Args:
        nrows: rows of panels.
        ncols: columns of panels.
        figsize: width and height in inches.
        layout: matplotlib's layout engine (``"constrained"``), or None to lay it out on saving.
        **subplots: passed to :meth:`matplotlib.figure.Figure.subplots` (``squeeze``, ``sharey``).

    Returns:
        The figure and its axes.
    """
    fig = Figure(figsize=figsize, layout=layout)
    return fig, fig.subplots(nrows, ncols, **subplots)


def save_figure(fig: Figure, path: Path) -> Path:
    """Tight layout (unless the figure lays itself out), 110 dpi, cropped to what was drawn: equal-aspect panels
    (confusion matrices) keep their titles and axis labels, which the layout alone can push off the canvas."""
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path


def confusion_matrices(y_true: np.ndarray, y_pred: np.ndarray, classes: list[str], path: Path) -> Path:
    """Counts and row-normalised side by side: the second shows per-class recall at a glance."""
    labels = np.arange(len(classes))
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, axes = new_figure(1, 2, figsize=(2 * size, size))
    for ax, normalize, title in ((axes[0], None, "counts"), (axes[1], "true", "row-normalised (recall)")):
        ConfusionMatrixDisplay.from_predictions(y_true, y_pred, labels=labels, display_labels=classes,
                                                normalize=normalize, ax=ax, colorbar=False,
                                                values_format=".2f" if normalize else "d", xticks_rotation=45)
        ax.set_title(title)
    return save_figure(fig, path)


POSITIVE_NAMES = ("malignant", "melanoma")


def positive_class(classes: list[str]) -> int:
    """The class a binary ROC is drawn for: the malignant one when it is named so (PH2's ``melanoma`` sorts
    before ``nevus``), else the second."""
    named = [i for i, c in enumerate(classes) if c in POSITIVE_NAMES]
    return named[0] if named else 1


def roc_curves(y_true: np.ndarray, proba: np.ndarray, classes: list[str], path: Path,
               split: str = "test") -> Path | None:
    """Binary ROC, or one-vs-rest for every class present in the scored split (named in the title)."""
    fig, ax = new_figure(figsize=(5, 5))
    if len(classes) == 2:
        c = positive_class(classes)
        RocCurveDisplay.from_predictions(y_true == c, proba[:, c], name=f"{classes[c]} vs {classes[1 - c]}", ax=ax)
    else:
        for c, name in enumerate(classes):
            if 0 < (y_true == c).sum() < len(y_true):
                RocCurveDisplay.from_predictions(y_true == c, proba[:, c], name=name, ax=ax)
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_title(f"ROC ({split})")
    return save_figure(fig, path)


def model_roc_curves(y_true: np.ndarray, probas: dict[str, np.ndarray], classes: list[str], path: Path) -> Path:
    """Several models' ROC curves on the same images: one panel (binary) or one panel per class (one vs rest)."""
    if len(classes) == 2:
        positive = positive_class(classes)
        panels = [(positive, f"{classes[positive]} vs {classes[1 - positive]}")]
    else:
        panels = [(c, f"{name} vs rest") for c, name in enumerate(classes)]
    fig, axes = new_figure(1, len(panels), figsize=(4.6 * len(panels), 4.6), squeeze=False)
    for ax, (c, title) in zip(axes[0], panels, strict=True):
        for model, proba in probas.items():
            RocCurveDisplay.from_predictions(y_true == c, proba[:, c], name=model, ax=ax)
        ax.plot([0, 1], [0, 1], "k--", lw=0.8)
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, path)


def per_class_bars(per_class: pd.DataFrame, path: Path, split: str = "test") -> Path:
    """Precision, recall and F1 per class on the scored split, one group of bars per class."""
    frame = per_class.set_index("class")[["precision", "recall", "f1"]]
    fig, ax = new_figure(figsize=(max(5, 0.9 * len(frame) + 2), 3.5))
    frame.plot.bar(ax=ax, rot=0, ylim=(0, 1.05))
    ax.set_title(f"per-class precision / recall / F1 ({split})")
    ax.grid(axis="y", alpha=0.3)
    return save_figure(fig, path)


def image_grid(images: list[np.ndarray], captions: list[str], path: Path, title: str, columns: int = 4) -> Path:
    """Images with a caption each (the most confident errors, duplicate pairs, ...)."""
    rows = max(1, -(-len(images) // columns))
    lines = max((caption.count("\n") + 1 for caption in captions), default=1)
    # constrained layout reserves each row's titles: with tight_layout a second row's two-line captions
    # covered the bottom of the images above them
    fig, axes = new_figure(rows, columns, figsize=(3.1 * columns, (2.8 + 0.16 * lines) * rows + 0.4),
                           squeeze=False, layout="constrained")
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions, strict=False):
        ax.imshow(image)
        ax.set_title(caption, fontsize=7)
    if not images:
        axes[0, 0].text(0.5, 0.5, "none", ha="center", va="center")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path)


def confusion_matrix_panels(matrices: dict[str, list[list[int]]], classes: list[str], path: Path) -> Path:
    """Row-normalised confusion matrices side by side, one per named model or split."""
    size = max(4.0, 0.6 * len(classes) + 2)
    fig, axes = new_figure(1, len(matrices), figsize=(size * len(matrices), size), squeeze=False)
    for ax, (title, counts) in zip(axes[0], matrices.items(), strict=True):
        counts = np.asarray(counts, dtype=float)
        shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
        ConfusionMatrixDisplay(shares, display_labels=classes).plot(ax=ax, colorbar=False, values_format=".2f",
                                                                     xticks_rotation=45)
        ax.set_title(title)
    return save_figure(fig, path)
