"""The leaked-vs-clean experiment: one model, one budget, two splits, and how far the naive one flatters it.

The naive split is image-level and random (what many notebooks do); the clean one keeps lesions,
patients and near-duplicates whole. Each model is scored on its own test split, so the gap between the
two rows is the inflation that leakage buys.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd

from siamese.config import RunConfig
from siamese.data import audit_manifest, planted_pairs, split_table, write_manifest
from siamese.data.duplicates import read_pairs_for
from siamese.diagnostics.plots import confusion_matrix_panels
from siamese.diagnostics.report import markdown_table
from siamese.training.pipeline import load_run_table, run_training

STRATEGIES = {"naive": "random", "grouped": "grouped"}
COLUMNS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")


def run_leakage_experiment(config: RunConfig, out_dir: str | Path, duplicates: str | None = None) -> pd.DataFrame:
    """Train on both splits (resuming runs already there) and write the comparison table and figures."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    table = load_run_table(config)
    if duplicates:
        pairs = read_pairs_for(duplicates, table.frame["image_id"])
    elif "duplicate_of" in table.frame.columns:
        pairs = planted_pairs(table)
    else:
        pairs = None
    rows, matrices = [], {}
    for name, strategy in STRATEGIES.items():
        manifest = split_table(table.frame, pairs if strategy == "grouped" else None, config.data.val_fraction,
                               config.data.test_fraction, seed=config.seed, strategy=strategy)
        split_path = out_dir / f"split_{name}.csv"
        write_manifest(manifest, split_path)
        audit = audit_manifest(manifest, pairs)
        (out_dir / f"audit_{name}.json").write_text(json.dumps(audit, indent=2) + "\n")
        run = out_dir / name
        if (run / "config.json").is_file():
            run_training(RunConfig(), resume=run)
        else:
            run_config = copy.deepcopy(config)
            run_config.data.split, run_config.data.duplicates, run_config.out = str(split_path), None, str(run)
            run_training(run_config)
        metrics = json.loads((run / "metrics.json").read_text())
        for model in ("classifier", "knn"):
            rows.append({"split": name, "model": model, **{c: metrics[model][c] for c in COLUMNS},
                         "leaking_groups": audit["leaking_groups"],
                         "straddling_duplicate_pairs": audit["straddling_duplicate_pairs"],
                         "test_images": metrics["split_sizes"]["test"]})
        matrices[f"{name} split (classifier)"] = metrics["classifier"]["confusion_matrix"]
        classes = metrics["classifier"]["classes"]
    result = pd.DataFrame(rows)
    result.to_csv(out_dir / "leakage_table.csv", index=False)
    (out_dir / "leakage_table.md").write_text(markdown_table(result) + "\n")
    confusion_matrix_panels(matrices, classes, out_dir / "confusion_matrices.png")
    return result
