"""Figures written into every run folder (PNG, readable without any dashboard)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

CURVES = {
    "embed": (("loss", "triplet loss"), ("triplets_per_batch", "mined triplets / batch"),
              ("val_precision_at_1", "val precision@1"), ("val_map_at_r", "val MAP@R"),
              ("val_knn_accuracy", "val k-NN accuracy"), ("empty_batch_fraction", "batches with no triplets")),
    "classifier": (("loss", "train loss"), ("val_loss", "val loss"), ("val_accuracy", "val accuracy"),
                   ("val_balanced_accuracy", "val balanced accuracy")),
}


def training_curves(history: pd.DataFrame, stage: str, path: Path) -> Path | None:
    """One panel per logged quantity for a stage; None when the stage has no epochs yet."""
    rows = history[history["stage"] == stage]
    panels = [(c, t) for c, t in CURVES[stage] if c in rows.columns and rows[c].notna().any()]
    if rows.empty or not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3), squeeze=False)
    for ax, (column, title) in zip(axes[0], panels, strict=True):
        ax.plot(rows["epoch"], rows[column], marker="o", markersize=3)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    fig.suptitle(f"{stage} stage", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
