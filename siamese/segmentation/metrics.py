"""Per-image segmentation scores and their summary, including the ISIC 2018 Task 1 score.

Scores are per image, at the image's own size, then averaged: a pooled Dice over all pixels lets large
lesions hide the small ones a segmenter misses. ISIC 2018 Task 1 ranked by the "thresholded Jaccard":
the mean of per-image IoU with every IoU below 0.65 counted as 0, because a mask that poor needs a
human to redraw it anyway.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

SCORES = ("dice", "iou", "sensitivity", "specificity")
ISIC_IOU_FLOOR = 0.65


def mask_scores(predicted: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    """Dice, IoU, sensitivity and specificity of one boolean mask against another of the same shape (an
    empty prediction of an empty truth scores 1: nothing was there and nothing was found)."""
    import segmentation_models_pytorch as smp

    if predicted.shape != truth.shape:
        raise ValueError(f"predicted mask is {predicted.shape} but the true mask is {truth.shape}")
    counts = smp.metrics.get_stats(torch.from_numpy(predicted[None, None].astype(np.int64)),
                                   torch.from_numpy(truth[None, None].astype(np.int64)), mode="binary")
    # In float64, as the ISIC scorer computes them: integer counts divide into torch's default float32,
    # which moved a 30-image thresholded Jaccard by 2e-9 from the official figure.
    stats = [count.to(torch.float64) for count in counts]
    functions = {"dice": smp.metrics.f1_score, "iou": smp.metrics.iou_score,
                 "sensitivity": smp.metrics.sensitivity, "specificity": smp.metrics.specificity}
    return {name: float(f(*stats, reduction="none", zero_division=1.0)) for name, f in functions.items()}


def lesion_extent(truth: np.ndarray) -> dict[str, float | int | bool]:
    """Where a true mask (boolean, H x W) lies in its image: the fraction of pixels that are lesion, how many
    of the four edges it touches, and ``fills_frame`` when it touches all four (the lesion runs past the
    field of view, so its border is partly unknown and Dice rewards covering the image)."""
    edges = int(truth[0].any()) + int(truth[-1].any()) + int(truth[:, 0].any()) + int(truth[:, -1].any())
    return {"lesion_fraction": float(truth.mean()), "edges_touched": edges, "fills_frame": edges == 4}


def isic_score(iou: pd.Series | np.ndarray) -> float:
    """ISIC 2018 Task 1: mean per-image IoU, an IoU below 0.65 counting as 0."""
    iou = np.asarray(iou, dtype=float)
    return float(np.where(iou >= ISIC_IOU_FLOOR, iou, 0.0).mean())


def summarize_scores(per_image: pd.DataFrame) -> dict[str, float | int]:
    """Mean (and sd) of every score over the images, the ISIC 2018 score and the image count; with a
    ``fills_frame`` column (``lesion_extent``), how many true lesions fill the frame and the Dice and ISIC
    2018 score of those and of the rest apart."""
    summary: dict[str, float | int] = {"images": int(len(per_image))}
    for name in SCORES:
        summary[f"{name}_mean"] = float(per_image[name].mean())
        summary[f"{name}_sd"] = float(per_image[name].std(ddof=1)) if len(per_image) > 1 else 0.0
    summary["isic2018_score"] = isic_score(per_image["iou"])
    if "fills_frame" in per_image.columns:  # reported apart, not dropped: they are real cases, but easy for Dice
        fills = per_image["fills_frame"].astype(bool)
        summary["fills_frame_images"] = int(fills.sum())
        for name, rows in (("fills_frame", per_image[fills]), ("inside_frame", per_image[~fills])):
            if len(rows):
                summary[f"{name}_dice_mean"] = float(rows["dice"].mean())
                summary[f"{name}_isic2018_score"] = isic_score(rows["iou"])
    return summary
