"""Audit a split manifest for leakage, whoever made it.

An audit of a naive image-level split is how the leakage of published splits is shown, so this reads
any ``image_id,label,group,split`` CSV, not only ours.
"""

from __future__ import annotations

from typing import Any

import pandas as pd

from siamese.data.duplicates import known_pairs, label_conflicts

EXAMPLES = 10


OWN_GROUPS = ("lesions: every image is its own group (group equals image_id), so the manifest cannot show images "
              "of one lesion or patient in two splits")


def audit_manifest(manifest: pd.DataFrame, pairs: pd.DataFrame | None = None) -> dict[str, Any]:
    """Leakage facts as plain JSON-able values; ``leaks`` is true when any group or pair straddles.

    ``unchecked`` lists what the audit could not see, so that ``leaks: false`` is never read as more than it
    is: groups that are only the images themselves, and duplicate pairs naming images the manifest lacks.

    Args:
        manifest: a split (``image_id``, ``label``, ``group``, ``split``), as :func:`~siamese.data.splits.split_table`
            makes or ``split.csv`` holds.
        pairs: near-duplicate pairs to check as well.

    Returns:
        Counts, examples and shares: ``leaks``, ``leaking_groups``, the duplicate pairs that straddle, label
        conflicts, class counts per split, ``unchecked``.
    """
    splits_per_group = manifest.groupby("group")["split"].nunique()
    leaking = splits_per_group[splits_per_group > 1]
    counts = pd.crosstab(manifest["split"], manifest["label"])
    shares = counts.div(counts.sum(axis=1), axis=0)
    overall = manifest["label"].value_counts(normalize=True)
    gap = (shares - overall).abs().max().max() * 100
    report: dict[str, Any] = {
        "images": int(len(manifest)),
        "groups": int(manifest["group"].nunique()),
        "splits": sorted(manifest["split"].unique()),
        "leaking_groups": int(len(leaking)),
        "leaking_group_examples": [str(g) for g in leaking.index[:EXAMPLES]],
        "images_in_leaking_groups": int(manifest["group"].isin(leaking.index).sum()),
        "class_counts": {s: {k: int(v) for k, v in row.items()} for s, row in counts.iterrows()},
        "max_class_share_gap_pp": round(float(gap), 3),
        "duplicate_pairs": 0,
        "duplicate_pairs_not_in_manifest": 0,
        "straddling_duplicate_pairs": 0,
        "straddling_examples": [],
        "label_conflict_pairs": 0,
        "label_conflict_examples": [],
        "unchecked": [OWN_GROUPS] if (manifest["group"] == manifest["image_id"]).all() else [],
    }
    if pairs is not None:
        inside, outside = known_pairs(pairs, manifest["image_id"])
        split_of = manifest.set_index("image_id")["split"]
        a, b = inside["from_img"].map(split_of), inside["to_img"].map(split_of)
        straddling = inside[a.to_numpy() != b.to_numpy()]
        conflicts = label_conflicts(manifest, inside)
        report.update({
            "duplicate_pairs": int(len(inside)),
            "duplicate_pairs_not_in_manifest": outside,
            "straddling_duplicate_pairs": int(len(straddling)),
            "straddling_examples": [[str(x), str(y)] for x, y in
                                    straddling[["from_img", "to_img"]].to_numpy()[:EXAMPLES]],
            "label_conflict_pairs": int(len(conflicts)),
            "label_conflict_examples": [
                {"from_img": str(r.from_img), "to_img": str(r.to_img), "from_label": str(r.from_label),
                 "to_label": str(r.to_label)} for r in conflicts.head(EXAMPLES).itertuples()
            ],
        })
        if outside:
            report["unchecked"].append(f"duplicates: {outside} of {len(pairs)} pair(s) name an image the manifest "
                                       f"does not hold")
    report["leaks"] = bool(report["leaking_groups"] or report["straddling_duplicate_pairs"])
    return report
