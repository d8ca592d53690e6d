"""Compare found duplicate pairs with a reference list (e.g. the published HAM10000 lists).

Run ``dedup`` with a loose threshold, then read where the reference pairs' distances sit against the
extra pairs' distances: the gap between the two is where the threshold belongs.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from siamese.data.table import DataError


def _key(frame: pd.DataFrame) -> pd.Series:
    a, b = frame["from_img"].astype(str), frame["to_img"].astype(str)
    return pd.Series([tuple(sorted(p)) for p in zip(a, b, strict=True)], index=frame.index)


def _describe(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"n": 0, "min": None, "median": None, "p90": None, "max": None}
    return {"n": int(len(values)), "min": float(values.min()), "median": float(np.median(values)),
            "p90": float(np.quantile(values, 0.9)), "max": float(values.max())}


def compare_pairs(found: pd.DataFrame, reference: pd.DataFrame) -> dict[str, Any]:
    """Recall of the reference pairs, the extra pairs, and the distance distribution of each."""
    if found["distance"].isna().any():
        raise DataError(f"{found['distance'].isna().sum()} found pair(s) have no distance: compare-pairs needs the "
                        "pairs CSV written by dedup (from_img,to_img,distance,method)")
    found = found.assign(key=_key(found)).sort_values("distance").drop_duplicates("key")
    reference_keys = set(_key(reference))
    hit = found["key"].isin(reference_keys)
    missed = sorted(reference_keys - set(found["key"]))
    matched_distances = found.loc[hit, "distance"].to_numpy(dtype=float)
    extra_distances = found.loc[~hit, "distance"].to_numpy(dtype=float)
    return {
        "reference_pairs": len(reference_keys),
        "found_pairs": int(len(found)),
        "recall": len(reference_keys & set(found["key"])) / max(len(reference_keys), 1),
        "extra_pairs": int((~hit).sum()),
        "reference_pair_distance": _describe(matched_distances),
        "extra_pair_distance": _describe(extra_distances),
        "missed_examples": [list(p) for p in missed[:10]],
        "threshold_for_found_reference_pairs": None if len(matched_distances) == 0 else float(
            matched_distances.max()),
    }
