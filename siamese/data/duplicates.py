"""Near-duplicate pair files and the label conflicts they reveal.

Pairs come from published lists (``from_img,to_img,similarity``), fastdup's similarity table
(``from,to,distance``, where the "distance" is a cosine similarity, 1 for identical images), any
two-column pair CSV, or this package's own ``dedup`` command. Images are matched by file stem, so
``ISIC_0024306``, ``ISIC_0024306.jpg`` and ``/data/HAM10000_images_part_1/ISIC_0024306.jpg`` are one image.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from pathlib import Path, PureWindowsPath

import numpy as np
import pandas as pd

from siamese.data.files import read_csv, strip_suffix
from siamese.data.table import DataError, DatasetTable, first_offenders

PAIR_COLUMNS = ("from_img", "to_img", "distance")


def image_name(entry: object) -> str:
    """A pair list's entry as an image id: the file stem of a path or a file name (Windows separators too)."""
    return strip_suffix(PureWindowsPath(str(entry).strip()).name)


def read_pairs(path: str | Path) -> pd.DataFrame:
    """Pairs as ``from_img,to_img,distance`` (distance NaN when the file has none), images named by file stem."""
    frame = read_csv(path)  # at least two columns
    if {"from_img", "to_img"} <= set(frame.columns):
        a, b = frame["from_img"], frame["to_img"]
        read_from = "its columns 'from_img' and 'to_img'"
    elif {"from", "to"} <= set(frame.columns):  # fastdup, whose "distance" is a similarity (1: identical)
        a, b = frame["from"], frame["to"]
        frame = frame.rename(columns={"distance": "similarity"})
        read_from = "its columns 'from' and 'to'"
    else:
        a, b = frame.iloc[:, 0], frame.iloc[:, 1]
        read_from = (f"its first two columns, {str(a.name)!r} and {str(b.name)!r}, as it has neither "
                     f"from_img,to_img nor from,to")
    if "distance" in frame.columns:
        distance = _numbers(frame["distance"], path)
    elif "similarity" in frame.columns:
        distance = 1.0 - _numbers(frame["similarity"], path)
    else:
        distance = pd.Series(np.nan, index=frame.index)
    pairs = pd.DataFrame({"from_img": a.map(image_name), "to_img": b.map(image_name),
                          "distance": distance.to_numpy()})
    if "method" in frame.columns:
        pairs["method"] = frame["method"].to_numpy()
    # which of the file's columns named the images, for read_pairs_for's errors
    pairs.attrs.update(columns=(str(a.name), str(b.name)), read_from=read_from)
    return pairs


def _numbers(column: pd.Series, path: str | Path) -> pd.Series:
    values = pd.to_numeric(column, errors="coerce")
    bad = column[values.isna() & column.notna()]
    if len(bad):
        raise DataError(f"{path}: column {column.name!r} holds non-numbers: {first_offenders(bad.unique())}")
    return values.astype(float)


def read_pairs_for(path: str | Path, image_ids: Iterable[str]) -> pd.DataFrame:
    """:func:`read_pairs`, refused when none of the list's images is among ``image_ids``: a list that names
    images some other way, or lists other images, would otherwise keep nothing together and say nothing.
    (Some pairs outside the table are normal: a list for the whole of ISIC 2020 names mostly images that a
    subset lacks.)"""
    pairs = read_pairs(path)
    ids = set(map(str, image_ids))
    names = pd.unique(pairs[["from_img", "to_img"]].to_numpy().ravel())
    if any(name in ids for name in names):
        return pairs
    if pairs.attrs["columns"] == ("from", "to") and all(str(name).isdigit() for name in names):
        raise DataError(f"{path}: its pairs name images by row number (fastdup's first similarity format), which "
                        f"only fastdup's own file list (atrain_features.dat.csv) turns into images; write the pairs "
                        f"with file names or paths")
    raise DataError(f"{path}: none of its {len(names)} images ({first_offenders(names, 3)}), read from "
                    f"{pairs.attrs['read_from']}, is among the {len(ids)} here ({first_offenders(sorted(ids), 3)}); "
                    f"images are matched by file stem, so the list is for other images or names them some other way")


def known_pairs(pairs: pd.DataFrame, image_ids: pd.Series) -> tuple[pd.DataFrame, int]:
    """Pairs whose both images are in the table, and how many were not (to be reported, not hidden)."""
    ids = set(image_ids)
    inside = pairs["from_img"].isin(ids) & pairs["to_img"].isin(ids)
    return pairs[inside].reset_index(drop=True), int((~inside).sum())


def read_pair_lists(paths: Sequence[str | Path] | None, image_ids: pd.Series | None = None) -> pd.DataFrame | None:
    """Every pair list in ``paths`` as one table (None when there is none); with ``image_ids``, each list is refused
    when it matches none of them (:func:`read_pairs_for`) and how many of its pairs have both images here is
    said on stderr."""
    if not paths:
        return None
    lists = []
    for path in paths:
        if image_ids is None:
            lists.append(read_pairs(path))
            continue
        pairs = read_pairs_for(path, image_ids)
        inside, _ = known_pairs(pairs, image_ids)
        print(f"{path}: {len(inside)} of {len(pairs)} pair(s) have both images here", file=sys.stderr)
        lists.append(pairs)
    return pd.concat(lists, ignore_index=True)


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
