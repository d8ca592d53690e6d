"""A run's data: its dataset, its split (made, given or its own ``split.csv``), the rows each stage learns
from, the pixel sources and preprocessing of each split, and each split's cached embeddings.

The same call serves training, rescoring and the diagnostics, so all three see the very same images.
"""

from __future__ import annotations

import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from siamese.config import RunConfig
from siamese.data import DatasetTable, load_dataset
from siamese.data.audit import audit_manifest
from siamese.data.balance import balanced_subset
from siamese.data.duplicates import drop_conflicts, read_pairs_for
from siamese.data.images import ImageDataset, PixelRows, build_transform, channel_stats, pixel_source
from siamese.data.splits import SPLITS, apply_manifest, read_manifest, split_table, write_manifest
from siamese.data.table import DataError
from siamese.evaluation.reference_scores import colour_split_features
from siamese.inference.lesion_masks import crop_boxes
from siamese.inference.preprocess import Preprocessing
from siamese.models import EmbeddingNet
from siamese.models.backbones import imagenet_statistics
from siamese.robustness.artefacts import ArtefactPixels
from siamese.runtime.device import resolve_compute
from siamese.runtime.digest import file_sha256
from siamese.training.embeddings import cached_embeddings, compute_embeddings


def load_run_table(config: RunConfig) -> DatasetTable:
    """The dataset, with duplicate pairs' label conflicts dropped when asked."""
    data = config.data
    seed = config.seed if data.synthetic_seed is None else data.synthetic_seed
    table = load_dataset(data.dataset, data.data_dir, data.metadata, binary=data.binary, seed=seed,
                         lesions_per_class=data.synthetic_lesions_per_class, only_present=data.only_present)
    if data.duplicates and data.drop_conflicts:
        table = drop_conflicts(table, read_pairs_for(data.duplicates, table.frame["image_id"]))
    return table


def resolve_split(table: DatasetTable, config: RunConfig, run_dir: Path) -> DatasetTable:
    """Use the run's own split.csv (resume), a given manifest, the source's split, or make one.

    A split without test rows (``data.test_fraction`` 0, or such a manifest) makes a final model.
    Raises DataError when the split has no training or no validation images."""
    own = run_dir / "split.csv"
    data = config.data
    pairs = _pairs(config, table)
    if own.is_file():
        manifest = read_manifest(own)
    elif data.split:
        manifest = read_manifest(data.split)
    elif "split" in table.frame.columns:
        manifest = table.frame[["image_id", "label", "group", "split"]].astype(str)
    else:
        manifest = split_table(table.frame, pairs, data.val_fraction, data.test_fraction, seed=config.seed)
    write_manifest(manifest, own)
    _audit_split(manifest, pairs, run_dir)
    table = apply_manifest(table, manifest)
    missing = [s for s in ("train", "val") if not (table.frame["split"] == s).any()]
    if missing:
        raise DataError(f"the split has no {missing} images; stage 1 needs train and val (test is optional: "
                        f"without it the run is a final model, scored on val)")
    return table


def _pairs(config: RunConfig, table: DatasetTable) -> pd.DataFrame | None:
    return read_pairs_for(config.data.duplicates, table.frame["image_id"]) if config.data.duplicates else None


def _audit_split(manifest: pd.DataFrame, pairs: pd.DataFrame | None, run_dir: Path) -> None:
    """``split_audit.json`` beside ``split.csv`` (what ``python -m siamese audit`` reports), and warnings for
    what a reader of the results must know: a split that leaks, duplicate pairs with two labels, pairs the
    list names that are not here (counted, not an error: a list for a whole challenge set names many)."""
    audit = audit_manifest(manifest, pairs)
    (run_dir / "split_audit.json").write_text(json.dumps(audit, indent=2) + "\n")
    if audit["leaks"]:
        warnings.warn(f"the split leaks: {audit['leaking_groups']} group(s) and {audit['straddling_duplicate_pairs']} "
                      f"duplicate pair(s) straddle splits (see {run_dir / 'split_audit.json'})", stacklevel=3)
    if audit["label_conflict_pairs"]:
        warnings.warn(f"{audit['label_conflict_pairs']} near-duplicate pair(s) carry two labels (examples in "
                      f"split_audit.json; --drop-conflicts drops both images)", stacklevel=3)
    if pairs is not None:
        print(f"duplicates: {audit['duplicate_pairs']} pair(s) with both images here, kept in one split; "
              f"{audit['duplicate_pairs_not_in_manifest']} of the list's {len(pairs)} name an image not here",
              file=sys.stderr)


def training_rows(frame: pd.DataFrame, config: RunConfig) -> pd.DataFrame:
    """Stage 1's images: the balanced subset by default (binary data 50/50, as the original ISIC 2020 study
    trained its embedding), the whole training split with ``--full-dataset``. Stage 2 always learns from
    the whole training split, oversampled to balance."""
    train = frame[frame["split"] == "train"]
    if config.data.full_dataset:
        return train.reset_index(drop=True)
    cap = None if train["label"].nunique() == 2 else config.data.per_class_cap
    return balanced_subset(train, cap, seed=config.seed)


@dataclass
class RunData:
    """A run's images per split (``train``, ``val``, ``test`` unless the run is a final model, and ``stage1``:
    the training rows stage 1 learns from), targets and preprocessing."""

    parts: dict[str, pd.DataFrame]
    sources: dict[str, Any]
    targets: dict[str, np.ndarray]
    prep: Preprocessing
    excluded: dict[str, int]
    cropping: dict[str, Any]

    @property
    def splits(self) -> tuple[str, ...]:
        """The run's splits in order: ``train``, ``val`` and, unless it is a final model, ``test``."""
        return tuple(s for s in SPLITS if s in self.parts)

    @property
    def scored(self) -> str:
        """The split the evaluation scores: ``test``, or ``val`` for a final model (no test split)."""
        return "test" if "test" in self.parts else "val"

    def dataset(self, split: str, augment: str = "none", artefacts: ArtefactPixels | None = None) -> ImageDataset:
        source = self.sources[split] if artefacts is None else artefacts.over(self.sources[split])
        return ImageDataset(source, self.targets[split], build_transform(augment, self.prep.image_size))


def build_run_data(config: RunConfig, run_dir: Path) -> RunData:
    """Dataset, split and pixel sources of a run; the same call serves training and later diagnostics."""
    table = resolve_split(load_run_table(config), config, run_dir)
    classes = table.classes
    code = {c: i for i, c in enumerate(classes)}
    frame = table.frame
    splits = [s for s in SPLITS if (frame["split"] == s).any()]
    parts = {**{s: frame[frame["split"] == s].reset_index(drop=True) for s in splits},
             "stage1": training_rows(frame, config)}
    size, crop, margin, seg_run = (config.data.image_size, config.data.crop, config.data.crop_margin,
                                   config.data.seg_run)
    used = frame[frame["split"].isin(splits)]
    boxes = crop_boxes(DatasetTable(used, table.images), crop, margin, seg_run)  # once: may run the segmenter
    box_of = None if boxes is None else dict(zip(used["image_id"], boxes, strict=True))
    sources: dict[str, Any] = {
        s: pixel_source(DatasetTable(parts[s], table.images), size, config.data.cache_dir,
                        None if box_of is None else [box_of[i] for i in parts[s]["image_id"]])
        for s in splits}
    position = pd.Series(np.arange(len(parts["train"])), index=parts["train"]["image_id"])
    sources["stage1"] = PixelRows(sources["train"], position[parts["stage1"]["image_id"]].to_numpy())
    cropping: dict[str, Any] = {"mode": crop}
    if boxes is not None:
        cropping.update(margin=margin, kept_whole=sum(box is None for box in boxes),
                        **({"seg_run": seg_run} if seg_run else {}))
        if cropping["kept_whole"]:
            warnings.warn(f"{cropping['kept_whole']} image(s) have no usable lesion mask and stay whole",
                          stacklevel=2)
    saved = run_dir / "preprocess.json"
    if saved.is_file():
        prep = Preprocessing.load(saved)
    else:
        if config.data.normalization == "train":
            mean, std = channel_stats(sources["train"], seed=config.seed)
        else:
            mean, std = imagenet_statistics(config.model.backbone)
        prep = Preprocessing(size, tuple(mean), tuple(std), classes, crop, margin,
                             str(Path(seg_run).resolve()) if seg_run else None)
        prep.save(saved)
    targets = {s: rows["label"].map(code).to_numpy() for s, rows in parts.items()}
    return RunData(parts, sources, targets, prep, table.excluded, cropping)


def split_embeddings(model: EmbeddingNet, dataset: ImageDataset, rows: pd.DataFrame, run_dir: Path,
                      config: RunConfig, device: Any) -> np.ndarray:
    path = run_dir / "embeddings" / f"{rows['split'].iloc[0]}.npz"
    compute = resolve_compute(config.compute, torch.device(device))
    path.parent.mkdir(exist_ok=True)
    ids = rows["image_id"].astype(str).to_numpy()
    return cached_embeddings(path, ids, lambda: compute_embeddings(
        model, dataset, device, config.embed.batch_size, config.data.num_workers, path.stem, compute.bf16,
        compute.channels_last), embedder_sha256(run_dir))


def embedder_sha256(run_dir: Path) -> str | None:
    """SHA-256 of the run's ``embedder.pt`` (None before stage 1 wrote one): its cached embeddings carry it, so
    a checkpoint copied in from another run never meets the embeddings of this one."""
    path = Path(run_dir) / "embedder.pt"
    return file_sha256(path) if path.is_file() else None


def shared_features(config: RunConfig, data: RunData) -> tuple[str, str, dict[str, np.ndarray]] | None:
    """Where the reference features of this run's images are kept for other runs (its ``--cache-dir``), what
    their pixels depend on, and each split's image keys (resolved file paths; ids for in-memory data)."""
    d = config.data
    if not d.cache_dir:
        return None
    pixels = f"{d.dataset}|{d.image_size}px|{d.crop}|{d.crop_margin}|{d.seg_run}"
    keys = {s: (data.parts[s]["path"].map(lambda p: str(Path(p).resolve())) if "path" in data.parts[s].columns
                else data.parts[s]["image_id"].astype(str)).to_numpy() for s in data.splits}
    return d.cache_dir, pixels, keys


def classifier_inputs(run_dir: Path, data: RunData, embeddings: dict[str, np.ndarray],
                      config: RunConfig) -> dict[str, np.ndarray]:
    """What the stage-2 classifier reads, per split: the ``(N, D)`` embeddings, or with
    ``classifier.inputs == "embedding+colour"`` the ``(N, D + 66)`` embeddings followed by each image's colour
    statistics (the ``colour_baseline``'s, computed once and shared with it)."""
    if config.classifier.inputs == "embedding":
        return embeddings
    colour = colour_features(run_dir, data, config, list(embeddings))
    return {s: np.hstack([e, colour[s]]).astype(np.float32) for s, e in embeddings.items()}


def colour_features(run_dir: Path, data: RunData, config: RunConfig, splits: list[str]) -> dict[str, np.ndarray]:
    """Each split's ``(N, 66)`` colour statistics, in the split's row order: the ``colour_baseline``'s, cached
    once in ``RUN_DIR/references/`` (and the ``--cache-dir`` store) for both."""
    shared = shared_features(config, data)
    return {s: colour_split_features(run_dir, s, data.parts[s]["image_id"].to_numpy(), data.sources[s], shared,
                                     config.model.backbone) for s in splits}
