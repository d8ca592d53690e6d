"""The ``dedup`` command's page: found pairs side by side, with their distance, their groups (lesions or
patients) and whether they
straddle a split, beside a histogram of all the distances. One self-contained file, as the explorer's
(:mod:`siamese.diagnostics.page`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from siamese.data import DatasetTable, pixel_source
from siamese.data.table import DataError, first_offenders
from siamese.diagnostics.page import group_noun, thumbnail_uri, write_page

MAX_PAIRS = 500
"""Pairs shown with their images (the closest first); the histogram counts them all."""
THUMBNAIL_PX = 96  # larger than the explorer's: a pair is judged by looking at its two images closely

BODY = """<div id="bar"><h1 id="title"></h1><span id="note"></span>
<label><input type="checkbox" id="straddling"> only pairs across splits</label>
<label><input type="checkbox" id="groups"><span id="groups-label"></span></label>
<span id="shown"></span></div>
<div id="histogram" style="height:220px"></div>
<table class="pairs"><tbody id="pairs"></tbody></table>"""


def dedup_payload(pairs: pd.DataFrame, images: pd.DataFrame, thumbnail: Any, splits: pd.Series | None,
                  title: str, max_pairs: int = MAX_PAIRS, group_noun: str = "lesion") -> dict[str, Any]:
    """The data of a dedup page. ``pairs``: ``from_img``, ``to_img``, ``distance``, ``method``, closest first;
    ``images``: ``image_id``, ``label``, ``group`` of every image a pair may name; ``thumbnail(image_id)``:
    its data URI; ``splits``: image id to split, or None when no split is known (then nothing straddles);
    ``group_noun``: what the ``group`` column names (:func:`~siamese.diagnostics.page.group_noun`).
    A pair straddles when its two images are in different known splits. Raises DataError naming an image
    that ``images`` lacks."""
    info = images.assign(image_id=images["image_id"].astype(str)).drop_duplicates("image_id").set_index("image_id")
    named = pd.unique(pairs[["from_img", "to_img"]].astype(str).to_numpy().ravel())
    unknown = [i for i in named if i not in info.index]
    if unknown:
        raise DataError(f"pairs name images that are not in the table: {first_offenders(unknown)}")

    def split_of(ids: pd.Series) -> list[str | None]:
        if splits is None:
            return [None] * len(ids)
        return [None if pd.isna(s) else str(s) for s in ids.astype(str).map(splits)]

    a, b = pairs["from_img"].astype(str), pairs["to_img"].astype(str)
    split_a, split_b = split_of(a), split_of(b)
    straddles = [x is not None and y is not None and x != y for x, y in zip(split_a, split_b, strict=True)]
    same_group = (info.loc[a, "group"].astype(str).to_numpy() == info.loc[b, "group"].astype(str).to_numpy())
    shown = min(max_pairs, len(pairs))
    side: dict[str, dict[str, list]] = {}
    for key, ids, split in (("a", a, split_a), ("b", b, split_b)):
        side[key] = {"id": ids[:shown].tolist(), "label": info.loc[ids[:shown], "label"].astype(str).tolist(),
                     "group": info.loc[ids[:shown], "group"].astype(str).tolist(), "split": split[:shown],
                     "thumb": [thumbnail(i) for i in ids[:shown]]}
    distance = pairs["distance"].astype(float)
    return {"title": title, "total": len(pairs), "shown": shown, "splits_known": splits is not None,
            "distance": [None if np.isnan(d) else round(float(d), 6) for d in distance],
            "method": pairs["method"].astype(str).tolist() if "method" in pairs.columns else ["?"] * len(pairs),
            "straddles": straddles, "same_group": same_group.tolist(), "group_noun": group_noun, **side}


def write_dedup_page(pairs: pd.DataFrame, table: DatasetTable, path: str | Path, against: DatasetTable | None = None,
                     splits: pd.Series | None = None, image_size: int = 128, max_pairs: int = MAX_PAIRS) -> Path:
    """Write the page of ``pairs`` (as :func:`~siamese.dedup.find.find_duplicates` returns them) at ``path``:
    images of ``table`` (and ``against`` for pairs across two datasets) read at ``image_size``; ``splits``:
    image id to split (a split manifest's), or None to take the table's own ``split`` column if it has one."""
    tables = [table] if against is None else [table, against]
    if splits is None and all("split" in t.frame.columns for t in tables):
        splits = pd.concat([t.frame.set_index(t.frame["image_id"].astype(str))["split"] for t in tables])
    where: dict[str, tuple[Any, int]] = {}
    for t in tables:
        pixels = pixel_source(t, image_size)
        for row, image_id in enumerate(t.frame["image_id"].astype(str)):
            where.setdefault(image_id, (pixels, row))

    def thumbnail(image_id: str) -> str:
        pixels, row = where[image_id]
        return thumbnail_uri(pixels[row], THUMBNAIL_PX)

    images = pd.concat([t.frame[["image_id", "label", "group"]] for t in tables], ignore_index=True)
    payload = dedup_payload(pairs, images, thumbnail, splits, f"{Path(path).stem}: near-duplicate pairs", max_pairs,
                            group_noun(table.name))
    return write_page(path, payload["title"], BODY, payload, "dedup.js")
