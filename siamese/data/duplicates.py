"""Near-duplicate pair files and the label conflicts they reveal.

Pairs come from fastdup-style output (``from_img,to_img,distance`` or ``similarity``), any two-column
pair CSV, or this package's own ``dedup`` command; ids may carry ``.jpg``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from siamese.data.readers import read_csv, strip_suffix
from siamese.data.table import DataError, DatasetTable

PAIR_COLUMNS = ("from_img", "to_img", "distance")


def read_pairs(path: str | Path) -> pd.DataFrame:
    """Pairs as ``from_img,to_img,distance`` (distance NaN when the file has none)."""
    frame = read_csv(path)
    if {"from_img", "to_img"} <= set(frame.columns):
        a, b = frame["from_img"], frame["to_img"]
    elif frame.shape[1] >= 2:
        a, b = frame.iloc[:, 0], frame.iloc[:, 1]
    else:
        raise DataError(f"{path}: a pair file needs from_img,to_img columns (or two columns); "
                        f"found {list(frame.columns)}")
    if "distance" in frame.columns:
        distance = frame["distance"].astype(float)
    elif "similarity" in frame.columns:
        distance = 1.0 - frame["similarity"].astype(float)
    else:
        distance = pd.Series(np.nan, index=frame.index)
    pairs = pd.DataFrame({"from_img": a.astype(str).map(strip_suffix), "to_img": b.astype(str).map(strip_suffix),
                          "distance": distance.to_numpy()})
    if "method" in frame.columns:
        pairs["method"] = frame["method"].to_numpy()
    return pairs


def known_pairs(pairs: pd.DataFrame, image_ids: pd.Series) -> tuple[pd.DataFrame, int]:
    """Pairs whose both images are in the table, and how many were not (to be reported, not hidden)."""
    ids = set(image_ids)
    inside = pairs["from_img"].isin(ids) & pairs["to_img"].isin(ids)
    return pairs[inside].reset_index(drop=True), int((~inside).sum())


def label_conflicts(frame: pd.DataFrame, pairs: pd.DataFrame) -> pd.DataFrame:
    """Pairs of near-duplicates whose labels differ: the same picture cannot be two diagnoses."""
    labels = frame.set_index("image_id")["label"]
    pairs, _ = known_pairs(pairs, frame["image_id"])
    out = pairs.assign(from_label=pairs["from_img"].map(labels), to_label=pairs["to_img"].map(labels))
    return out[out["from_label"] != out["to_label"]].reset_index(drop=True)


def drop_conflicts(table: DatasetTable, pairs: pd.DataFrame) -> DatasetTable:
    """Remove both images of every label-conflicting pair, counted in ``excluded``."""
    conflicts = label_conflicts(table.frame, pairs)
    ids = set(conflicts["from_img"]) | set(conflicts["to_img"])
    return table.exclude(table.frame["image_id"].isin(ids), "label-conflicting near-duplicate")
