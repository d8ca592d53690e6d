"""``segment train``: a U-Net on real lesion masks, one grouped split or k folds, resumable.

The splits are the project's own (grouped, stratified by diagnosis), so a lesion's masks never sit on
both sides, and a PH2 fold here holds out the same kind of images as a ``cv`` fold. Each run folder keeps
its config, split, best checkpoint (by validation Dice), the last epoch's training state for ``--resume``,
its history and the held-out scores at every image's own size.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from siamese.config import SegmentConfig, differing_settings, resumed
from siamese.data import load_dataset
from siamese.data.splits import apply_manifest, fold_manifest, kfold_table, read_manifest, split_table, write_manifest
from siamese.data.table import DataError, DatasetTable
from siamese.inference.lesion_masks import CHECKPOINT, CONFIG_FILE, MaskPredictor
from siamese.models.checkpoint import load_checkpoint, load_training_state, save_checkpoint, save_training_state
from siamese.models.segmenter import LesionSegmenter, check_segment_size
from siamese.runtime.device import (
    Compute,
    autocast,
    machine_description,
    prepare_model,
    resolve_compute,
    resolve_device,
    seed_everything,
    to_device,
)
from siamese.runtime.errors import ExportError
from siamese.runtime.json_files import read_json
from siamese.runtime.tracking import Tracker
from siamese.segmentation.data import SegmentationDataset, joint_transform, load_pairs, with_masks
from siamese.segmentation.evaluate import evaluate_masks
from siamese.segmentation.export import export_segmenter
from siamese.segmentation.metrics import mask_scores, summarize_scores

LAST_STATE = "last.pt"
FOLD_METRICS = ("dice_mean", "iou_mean", "sensitivity_mean", "specificity_mean", "isic2018_score")


@dataclass
class SegmentResult:
    """What a ``segment train`` call produced: per-run held-out summaries and the files written."""

    summaries: list[dict[str, Any]]
    files: list[Path]


def segmentation_table(config: SegmentConfig) -> DatasetTable:
    """The configured dataset's images that have a lesion mask (the others counted in ``excluded``)."""
    table = load_dataset(config.dataset, config.data_dir, config.metadata, only_present=config.only_present)
    return with_masks(table, config.masks)


def train_segmentation(config: SegmentConfig, resume: str | Path | None = None,
                       changes: dict[str, Any] | None = None) -> SegmentResult:
    """Train on one grouped split, or on every fold with ``config.folds > 1`` (then the mean and sd over
    folds go to ``segment_cv_summary.csv``). Interrupted work resumes: finished folds are read back, an
    unfinished one continues from its last epoch, with the saved settings and those of ``changes`` that are
    safe to change (others are refused by name, as for :func:`siamese.config.resumed`)."""
    if resume is not None:
        saved = Path(resume) / CONFIG_FILE
        config = replace(resumed(SegmentConfig.load(saved), changes or {}, saved), out=str(resume))
    if not config.out:
        raise DataError("segment train needs --out (the run folder)")
    config.validate()
    check_segment_size(config.image_size)
    out = Path(config.out)
    table = segmentation_table(config)  # before the folder is claimed: bad input leaves nothing behind
    _claim(out, config, resume is not None)
    if config.folds > 1:
        return _train_folds(config, table, out)
    val = config.val_fraction * (1 - config.test_fraction)
    manifest = _own_or_new(out, lambda: split_table(table.frame, None, val, config.test_fraction, seed=config.seed))
    summary = train_one(config, apply_manifest(table, manifest), out)
    return SegmentResult([summary], [out / "per_image.csv", out / "summary.json", out / "worst_cases.png"])


def _claim(out: Path, config: SegmentConfig, resuming: bool) -> None:
    """A folder holds one segmentation experiment: the same settings continue it, others are refused."""
    saved = out / CONFIG_FILE
    changed = (sorted(differing_settings(read_json(saved), json.loads(json.dumps(asdict(config)))))
               if saved.is_file() else [])
    if changed and not resuming:
        raise DataError(f"{out} holds a segmentation run with other settings ({', '.join(changed)}); pass "
                        f"--resume {out} to continue it, or choose another --out")
    out.mkdir(parents=True, exist_ok=True)
    config.save(saved)


def _own_or_new(run_dir: Path, make: Any) -> pd.DataFrame:
    path = run_dir / "split.csv"
    if path.is_file():
        return read_manifest(path)
    run_dir.mkdir(parents=True, exist_ok=True)
    manifest = make()
    write_manifest(manifest, path)
    return manifest


def _train_folds(config: SegmentConfig, table: DatasetTable, out: Path) -> SegmentResult:
    folds = kfold_table(table.frame, None, folds=config.folds, seed=config.seed)
    rows = []
    for fold in tqdm(range(config.folds), desc="segmentation folds"):
        fold_dir = out / f"fold{fold}"
        manifest = _own_or_new(fold_dir, lambda f=fold: fold_manifest(folds, f, None, config.val_fraction,
                                                                       config.seed))
        fold_config = replace(config, out=str(fold_dir), folds=0)
        fold_config.save(fold_dir / CONFIG_FILE)
        rows.append({"fold": fold, **train_one(fold_config, apply_manifest(table, manifest), fold_dir)})
    per_fold = pd.DataFrame(rows)
    summary = pd.DataFrame([{"metric": m, "mean": per_fold[m].mean(), "std": per_fold[m].std(ddof=1)}
                            for m in (*FOLD_METRICS, "train_seconds")])
    pooled = summarize_scores(pd.concat([pd.read_csv(out / f"fold{fold}" / "per_image.csv")
                                         for fold in range(config.folds)], ignore_index=True))
    per_fold.to_csv(out / "segment_cv_folds.csv", index=False)
    summary.to_csv(out / "segment_cv_summary.csv", index=False)
    (out / "segment_cv_pooled.json").write_text(json.dumps(pooled, indent=2) + "\n")
    report = out / "segment_cv_report.md"
    report.write_text(_cv_report(config, per_fold, summary, pooled, table))
    return SegmentResult(rows, [out / "segment_cv_folds.csv", out / "segment_cv_summary.csv",
                                out / "segment_cv_pooled.json", report])


def _cv_report(config: SegmentConfig, per_fold: pd.DataFrame, summary: pd.DataFrame, pooled: dict[str, Any],
               table: DatasetTable) -> str:
    lines = [f"# Lesion segmentation, {config.folds}-fold CV on {config.dataset}", "",
             f"U-Net ({config.encoder} encoder, weights {config.weights}), {config.image_size} px, "
             f"{len(table.frame)} images with masks; scores per held-out image at its own size, then averaged "
             "over the fold; mean and sd over folds.", "",
             "| metric | mean | sd |", "|---|---|---|"]
    lines += [f"| {r.metric} | {r.mean:.3f} | {r.std:.3f} |" for r in summary.itertuples()]
    lines += ["", f"Pooled over the {pooled['images']} held-out images: Dice {pooled['dice_mean']:.3f}, "
              f"ISIC 2018 score {pooled['isic2018_score']:.3f}."]
    if "inside_frame_dice_mean" in pooled:
        fills = (f"Dice {pooled['fills_frame_dice_mean']:.3f}, ISIC 2018 score "
                 f"{pooled['fills_frame_isic2018_score']:.3f}" if pooled["fills_frame_images"] else "none")
        lines += [f"Lesions that fill the frame (touching all four edges, {pooled['fills_frame_images']}): {fills}; "
                  f"the others: Dice {pooled['inside_frame_dice_mean']:.3f}, ISIC 2018 score "
                  f"{pooled['inside_frame_isic2018_score']:.3f}."]
    lines += ["", f"Excluded: {table.excluded or 'none'}.",
              f"Training time, all folds: {per_fold['train_seconds'].sum() / 60:.1f} min on {machine_description()}."]
    return "\n".join(lines) + "\n"


def train_one(config: SegmentConfig, table: DatasetTable, run_dir: Path) -> dict[str, Any]:
    """Train on the ``train`` rows, keep the best epoch by validation Dice, score the ``test`` rows at their
    own size. A run whose ``summary.json`` exists is finished and only read back."""
    done = run_dir / "summary.json"
    if done.is_file():
        return read_json(done)
    seed_everything(config.seed)
    device = resolve_device(config.device)
    frame = table.frame
    parts = {s: frame[frame["split"] == s].reset_index(drop=True) for s in ("train", "val", "test")}
    empty = [s for s, rows in parts.items() if rows.empty]
    if empty:
        raise DataError(f"the split has no {empty} images with masks; segmentation needs train, val and test")
    start = time.perf_counter()
    _fit(config, parts, run_dir, device)
    seconds = time.perf_counter() - start
    best = MaskPredictor(run_dir, engine="torch", device=str(device))
    summary = evaluate_masks(best.mask, parts["test"], run_dir)
    summary.update(train_seconds=seconds, compute=resolve_compute(config.compute, device).name,
                   best_epoch=load_checkpoint(run_dir / CHECKPOINT)["epoch"],
                   split_sizes={s: len(rows) for s, rows in parts.items()}, excluded=table.excluded)
    _export(run_dir)
    done.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def _fit(config: SegmentConfig, parts: dict[str, pd.DataFrame], run_dir: Path, device: torch.device) -> None:
    import segmentation_models_pytorch as smp

    size = config.image_size
    train_images, train_masks = load_pairs(parts["train"], size)
    val_images, val_masks = load_pairs(parts["val"], size)
    compute = resolve_compute(config.compute, device, warn=True)
    model = prepare_model(LesionSegmenter(config.encoder, config.decoder_channels, config.weights), device, compute)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    dice, bce = smp.losses.DiceLoss("binary", from_logits=True), smp.losses.SoftBCEWithLogitsLoss()
    progress = load_training_state(run_dir / LAST_STATE, model, optimizer) or {
        "epoch": 0, "best_dice": -1.0, "best_epoch": 0, "history": []}
    loader = DataLoader(SegmentationDataset(train_images, train_masks, joint_transform(size)),
                        batch_size=config.batch_size, shuffle=True, num_workers=config.num_workers,
                        generator=torch.Generator().manual_seed(config.seed + progress["epoch"]))
    tracker = Tracker(run_dir, asdict(config), config.wandb)
    try:
        epochs = tqdm(range(progress["epoch"] + 1, config.epochs + 1), desc="segmentation epochs", leave=False)
        for epoch in epochs:
            if epoch - progress["best_epoch"] > config.patience and progress["best_epoch"]:
                break
            model.train()
            losses = []
            for images, masks in tqdm(loader, desc=f"epoch {epoch}", leave=False):
                images, masks = to_device(images, device, compute.channels_last), masks.to(device)
                with autocast(device, compute.bf16):
                    logits = model(images)
                loss = dice(logits.float(), masks) + bce(logits.float(), masks)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(loss.item())
            val_dice = validation_dice(model, val_images, val_masks, device, compute=compute)
            row = {"stage": "segment", "epoch": epoch, "train_loss": float(np.mean(losses)), "val_dice": val_dice}
            progress["history"].append(row)
            if val_dice > progress["best_dice"]:
                progress.update(best_dice=val_dice, best_epoch=epoch)
                save_checkpoint({"arch": model.arch, "state": model.state_dict(), "epoch": epoch,
                                 "val_dice": val_dice}, run_dir / CHECKPOINT)
            progress["epoch"] = epoch
            save_training_state(run_dir / LAST_STATE, model, optimizer, progress)
            tracker.log({"segment/train_loss": row["train_loss"], "segment/val_dice": val_dice}, step=epoch)
            epochs.set_postfix(loss=f"{row['train_loss']:.3f}", val_dice=f"{val_dice:.3f}")
        tracker.summary({"segment/best_val_dice": progress["best_dice"]})
    finally:
        tracker.finish()
    history = pd.DataFrame(progress["history"])
    history.to_csv(run_dir / "history.csv", index=False)
    _curves(history, run_dir / "curves_segment.png")


def validation_dice(model: LesionSegmenter, images: np.ndarray, masks: np.ndarray, device: torch.device,
                    batch_size: int = 32, compute: Compute | None = None) -> float:
    """Mean per-image Dice at the training size (cheap enough for every epoch), scored as evaluation is;
    ``compute`` as in training (``auto`` for the device when not given)."""
    compute = compute or resolve_compute("auto", device)
    model.eval()
    scores = []
    with torch.inference_mode():
        for i in range(0, len(images), batch_size):
            pixels = to_device(torch.from_numpy(images[i:i + batch_size]).permute(0, 3, 1, 2), device,
                               compute.channels_last)
            with autocast(device, compute.bf16):
                predicted = (model(pixels) > 0).squeeze(1).cpu().numpy()
            scores += [mask_scores(p, t)["dice"] for p, t in zip(predicted, masks[i:i + batch_size], strict=True)]
    return float(np.mean(scores))


def _curves(history: pd.DataFrame, path: Path) -> None:
    from siamese.evaluation.figures import new_figure, save_figure

    fig, loss_axis = new_figure(figsize=(6, 3.5))
    loss_axis.plot(history["epoch"], history["train_loss"], label="train loss (Dice + BCE)")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_ylabel("loss")
    dice_axis = loss_axis.twinx()
    dice_axis.plot(history["epoch"], history["val_dice"], color="tab:orange", label="validation Dice")
    dice_axis.set_ylabel("Dice")
    fig.legend(loc="upper center", ncol=2, fontsize=8)
    save_figure(fig, path)


def _export(run_dir: Path) -> None:
    """As for the classifier, the ONNX copy is a convenience: a failed export only warns."""
    try:
        export_segmenter(run_dir)
    except ExportError as exc:
        warnings.warn(str(exc), stacklevel=2)
