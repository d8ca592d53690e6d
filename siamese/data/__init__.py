"""Datasets, splits, audits and image loading: everything between files on disk and a torch batch."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from siamese.config import DATASETS
from siamese.data.table import DataError, DatasetTable

# Exports load on first use (PEP 562), so `predict` does not pay for the samplers, splitters and
# pytorch-metric-learning it never touches.
_EXPORTS = {
    "audit_manifest": "audit", "balanced_subset": "balance", "class_balanced_sampler": "balance",
    "oversample": "balance", "drop_conflicts": "duplicates", "label_conflicts": "duplicates",
    "read_pairs": "duplicates", "make_synthetic": "embedded", "planted_pairs": "embedded",
    "read_digits": "embedded", "ImageDataset": "images", "ImageError": "decode", "build_transform": "images",
    "load_image": "decode", "pixel_source": "images", "read_ham10000": "readers", "read_image_csv": "readers",
    "read_isic2020": "readers", "read_npz": "readers", "read_ph2": "readers", "to_binary": "readers",
    "kfold_table": "splits", "read_manifest": "splits", "split_table": "splits", "write_manifest": "splits",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"siamese.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'siamese.data' has no attribute {name!r}")


def load_dataset(name: str, data_dir: str | Path | None = None, metadata: str | Path | None = None,
                 require_images: bool = True, binary: bool = False, seed: int = 0,
                 lesions_per_class: int = 24, only_present: bool = False) -> DatasetTable:
    """Any supported dataset by name; ``binary`` gives a two-class view (HAM: malignant vs benign, ISIC 2019:
    mel, bcc, ak and scc malignant, PH2: melanoma vs nevus); ``only_present`` uses the images of a partial
    download and counts the rest."""
    from siamese.data.embedded import make_synthetic, read_digits
    from siamese.data.readers import (
        ISIC2019_MALIGNANT,
        PH2_MALIGNANT,
        read_ham10000,
        read_image_csv,
        read_isic2019,
        read_isic2020,
        read_isic2024,
        read_npz,
        read_ph2,
        to_binary,
    )

    if name == "ham10000":
        table = read_ham10000(data_dir, metadata, require_images=require_images, only_present=only_present)
    elif name == "isic2019":
        table = read_isic2019(data_dir, metadata, require_images=require_images, only_present=only_present)
        if binary:
            return to_binary(table, ISIC2019_MALIGNANT)
    elif name == "isic2020":
        table = read_isic2020(data_dir, metadata, require_images=require_images, only_present=only_present)
    elif name == "isic2024":
        table = read_isic2024(data_dir, metadata, require_images=require_images, only_present=only_present)
    elif name == "ph2":
        table = read_ph2(data_dir, require_images=require_images)
        if binary:
            return to_binary(table, PH2_MALIGNANT, ("nevus", "melanoma"))
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
    "read_digits", "read_manifest", "read_pairs", "read_ph2", "split_table", "to_binary", "write_manifest",
]
