"""Datasets, splits, audits and image loading: everything between files on disk and a torch batch."""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from siamese.data.registry import DATASETS, DatasetSource, dataset_entry, register_dataset
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
    """Any registered dataset (:mod:`siamese.data.registry`) by name.

    Args:
        name: a registered dataset (:data:`DATASETS`).
        data_dir: its folder (or, for the one-file formats, the file itself).
        metadata: its table, where it is not found in ``data_dir``.
        require_images: False to read the table alone (``split``, ``audit``).
        binary: a two-class view (HAM: malignant vs benign, ISIC 2019: mel, bcc, ak and scc malignant, PH2:
            melanoma vs nevus).
        seed: the ``synthetic`` set's generator seed.
        lesions_per_class: the ``synthetic`` set's size.
        only_present: use the images of a partial download and count the rest.

    Returns:
        The dataset's table.

    Raises:
        DataError: an unknown name, or files that do not hold the dataset.
    """
    entry = dataset_entry(name)
    table = entry.load(DatasetSource(data_dir, metadata, require_images, only_present, seed, lesions_per_class))
    if not binary:
        return table
    if entry.binary is not None:
        return entry.binary(table)
    if set(table.classes) != {"benign", "malignant"}:
        from siamese.data.readers import to_binary

        table = to_binary(table)
    return table


__all__ = [
    "DATASETS", "DataError", "DatasetTable", "ImageDataset", "ImageError", "audit_manifest", "balanced_subset",
    "build_transform", "class_balanced_sampler", "drop_conflicts", "kfold_table", "label_conflicts",
    "load_dataset", "load_image", "make_synthetic", "oversample", "pixel_source", "planted_pairs",
    "read_digits", "read_manifest", "read_pairs", "read_ph2", "register_dataset", "split_table", "to_binary",
    "write_manifest",
]
