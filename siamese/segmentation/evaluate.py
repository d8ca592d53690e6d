"""``segment evaluate``: per-image Dice, IoU, sensitivity, specificity and the ISIC 2018 score, for a run's
predictions or for a folder of masks made by anything else, with a figure of the worst cases."""

from __future__ import annotations

import heapq
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from siamese.data.crops import find_mask, read_mask
from siamese.data.decode import image_size, load_image
from siamese.data.table import DataError, DatasetTable
from siamese.inference.lesion_masks import MaskPredictor, outline, resize_to
from siamese.segmentation.metrics import lesion_extent, mask_scores, summarize_scores

WORST_SHOWN = 8
FIGURE_SIDE = 256


def evaluate_masks(predict: Callable[[Path], np.ndarray], rows: pd.DataFrame, out: Path) -> dict[str, Any]:
    """Score ``predict(path)`` (a boolean mask at the image's size) against every row's ``mask``; writes
    ``per_image.csv`` (scores and ``lesion_extent`` of the true mask) and ``worst_cases.png`` into ``out``
    and returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    records, worst = [], []  # worst: a heap of the lowest-Dice cases so far, not every mask in memory
    for number, row in enumerate(tqdm(rows.itertuples(index=False), total=len(rows), desc="scoring masks",
                                      leave=False)):
        predicted = predict(Path(row.path))
        truth = read_mask(row.mask, (predicted.shape[1], predicted.shape[0]))
        scores = mask_scores(predicted, truth)
        records.append({"image_id": row.image_id, **scores, **lesion_extent(truth)})
        case = (-scores["dice"], number, (row.image_id, row.path, predicted, truth, scores["dice"]))
        (heapq.heappush if len(worst) < WORST_SHOWN else heapq.heappushpop)(worst, case)
    per_image = pd.DataFrame(records)
    per_image.to_csv(out / "per_image.csv", index=False)
    worst_cases([case for _, _, case in sorted(worst, reverse=True)], out / "worst_cases.png")
    return summarize_scores(per_image)


def evaluate_run(run_dir: str | Path, table: DatasetTable, out: str | Path, engine: str = "auto") -> dict[str, Any]:
    """A segmentation run scored on ``table``'s images with masks, leaving out any image the run trained or
    validated on (counted in the summary): scores on training images say nothing about new ones."""
    run_dir, out = Path(run_dir), Path(out)
    frame = table.frame
    split = pd.read_csv(run_dir / "split.csv", dtype=str) if (run_dir / "split.csv").is_file() else None
    seen = set() if split is None else set(split.loc[split["split"].isin(["train", "val"]), "image_id"])
    held_out = frame[~frame["image_id"].astype(str).isin(seen)].reset_index(drop=True)
    if held_out.empty:
        raise DataError(f"every image with a mask was used to train or validate {run_dir}; nothing is held out")
    predictor = MaskPredictor(run_dir, engine)
    summary = evaluate_masks(predictor.mask, held_out, out)
    summary.update(run=str(run_dir), engine=predictor.engine.name, left_out_seen_in_training=len(frame) - len(held_out),
                   excluded=table.excluded)
    _write_summary(out, summary)
    return summary


def evaluate_folders(predicted_dir: str | Path, masks_dir: str | Path, out: str | Path) -> dict[str, Any]:
    """Masks in ``predicted_dir`` (``STEM_segmentation.png``, as ``segment predict`` writes, or any name
    ``find_mask`` knows) against the true masks in ``masks_dir``, matched by image stem."""
    predicted_dir, masks_dir, out = Path(predicted_dir), Path(masks_dir), Path(out)
    for folder in (predicted_dir, masks_dir):
        if not folder.is_dir():
            raise DataError(f"{folder}: folder not found")
    rows, unmatched = [], 0
    for path in sorted(p for p in predicted_dir.iterdir() if p.name.endswith("_segmentation.png")):
        stem = path.name.removesuffix("_segmentation.png")
        truth = find_mask(masks_dir / f"{stem}.png", masks_dir)
        if truth is None:
            unmatched += 1
        else:
            rows.append({"image_id": stem, "path": str(path), "mask": str(truth)})
    if not rows:
        raise DataError(f"no mask in {predicted_dir} (STEM_segmentation.png) has a true mask in {masks_dir}")
    summary = evaluate_masks(lambda p: read_mask(p), pd.DataFrame(rows), out)
    summary.update(predicted=str(predicted_dir), truth=str(masks_dir), without_true_mask=unmatched)
    _write_summary(out, summary)
    return summary


def _write_summary(out: Path, summary: dict[str, Any]) -> None:
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


def worst_cases(cases: list[tuple[str, str, np.ndarray, np.ndarray, float]], path: Path) -> Path:
    """The lowest-Dice images with the true outline in green and the predicted one in red (a predicted
    mask file is shown as its own grey picture)."""
    from siamese.evaluation.figures import new_figure, save_figure

    columns = min(4, len(cases))
    rows = -(-len(cases) // columns)
    fig, axes = new_figure(rows, columns, figsize=(3 * columns, 3.3 * rows), squeeze=False, layout="constrained")
    for axis in axes.flat:
        axis.axis("off")
    for axis, (image_id, image, predicted, truth, dice) in zip(axes.flat, cases, strict=False):
        width, height = image_size(image)
        scale = FIGURE_SIDE / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = load_image(image)
        shown = np.asarray(resize_to(pixels, size)).copy()
        shown[outline(resize_to(truth, size), 2)] = (40, 220, 40)
        shown[outline(resize_to(predicted, size), 2)] = (255, 40, 40)
        axis.imshow(shown)
        axis.set_title(f"{image_id}\nDice {dice:.3f}", fontsize=8)
    fig.suptitle("Worst cases: true outline green, predicted red", fontsize=9)
    return save_figure(fig, path)
