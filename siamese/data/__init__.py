"""Datasets, splits, audits and image loading: everything between files on disk and a torch batch."""

from __future__ import annotations

from pathlib import Path

from siamese.data.audit import audit_manifest
from siamese.data.balance import balanced_subset, class_balanced_sampler, oversample
from siamese.data.duplicates import drop_conflicts, label_conflicts, read_pairs
from siamese.data.embedded import make_synthetic, planted_pairs, read_digits
from siamese.data.images import ImageDataset, ImageError, build_transform, load_image, pixel_source
from siamese.data.readers import read_ham10000, read_image_csv, read_isic2020, read_npz, to_binary
from siamese.data.splits import kfold_table, read_manifest, split_table, write_manifest
from siamese.data.table import DataError, DatasetTable

DATASETS = ("ham10000", "isic2020", "dermamnist", "csv", "digits", "synthetic")


def load_dataset(name: str, data_dir: str | Path | None = None, metadata: str | Path | None = None,
                 require_images: bool = True, binary: bool = False, seed: int = 0,
                 lesions_per_class: int = 24) -> DatasetTable:
    """Any supported dataset by name; ``binary`` gives HAM-style data a malignant-vs-benign view."""
    if name == "ham10000":
        table = read_ham10000(data_dir, metadata, require_images=require_images)
    elif name == "isic2020":
        table = read_isic2020(data_dir, metadata, require_images=require_images)
    elif name == "dermamnist":
        table = read_npz(_single_file(data_dir, metadata, "dermamnist.npz", name))
    elif name == "csv":
        table = read_image_csv(_single_file(data_dir, metadata, "images.csv", name))
    elif name == "digits":
        table = read_digits()
    elif name == "synthetic":
        table = make_synthetic(lesions_per_class=lesions_per_class, seed=seed)
    else:
        raise DataError(f"unknown dataset {name!r}; choose from {list(DATASETS)}")
    if binary and set(table.classes) != {"benign", "malignant"}:
        table = to_binary(table)
    return table


def _single_file(data_dir: str | Path | None, metadata: str | Path | None, default: str, name: str) -> Path:
    if metadata is not None:
        return Path(metadata)
    if data_dir is None:
        raise DataError(f"{name}: give --metadata FILE or --data-dir DIR")
    path = Path(data_dir)
    return path if path.is_file() else path / default


__all__ = [
    "DATASETS", "DataError", "DatasetTable", "ImageDataset", "ImageError", "audit_manifest", "balanced_subset",
    "build_transform", "class_balanced_sampler", "drop_conflicts", "kfold_table", "label_conflicts",
    "load_dataset", "load_image", "make_synthetic", "oversample", "pixel_source", "planted_pairs",
    "read_digits", "read_manifest", "read_pairs", "split_table", "to_binary", "write_manifest",
]
