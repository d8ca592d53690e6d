"""The leaked-vs-clean experiment: one model, one budget, two splits, and how far the naive one flatters it.

The naive split is image-level and random (what many notebooks do); the clean one keeps lesions,
patients and near-duplicates whole. Each model is scored on its own test split, so the gap between the
two rows is the inflation that leakage buys.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from siamese.config import RunConfig
from siamese.data import audit_manifest, planted_pairs, split_table, write_manifest
from siamese.data.duplicates import read_pairs_for
from siamese.evaluation.figures import confusion_matrix_panels
from siamese.evaluation.seeds import paired_interval
from siamese.evaluation.tables import markdown_table
from siamese.runtime.json_files import read_json
from siamese.workflows.run_data import load_run_table
from siamese.workflows.training_run import run_training

STRATEGIES = {"naive": "random", "grouped": "grouped"}
COLUMNS = ("accuracy", "balanced_accuracy", "macro_f1", "roc_auc")
MODELS = ("classifier", "knn")


def run_leakage_experiment(config: RunConfig, out_dir: str | Path, duplicates: str | None = None,
                           seeds: Sequence[int] | None = None) -> pd.DataFrame:
    """Train on both splits for every seed (the split and the training draw both follow it; runs already
    there are resumed) and write, into ``out_dir``: ``leakage_table.csv`` (one row per seed, split and
    model), ``leakage_paired.csv`` (naive minus grouped per seed: mean, sd and a 95 % t-interval over the
    seeds), ``leakage_table.md`` and the first seed's confusion matrices. Each seed's runs and split
    audits are in ``out_dir/seed{s}/``. The reference models are not fitted: the question is the leak.
    Raises ValueError for ``data.test_fraction`` 0 (no test split to compare) or a setting
    :meth:`RunConfig.validate` refuses, before anything is written."""
    config.validate()
    if config.data.test_fraction <= 0:
        raise ValueError("the leakage experiment compares test scores; --test-fraction must be above 0")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seeds = tuple(seeds) if seeds else (config.seed,)
    config = copy.deepcopy(config)
    if config.data.synthetic_seed is None:  # every seed's runs must see the same generated images
        config.data.synthetic_seed = config.seed
    table = load_run_table(config)
    if duplicates:
        pairs = read_pairs_for(duplicates, table.frame["image_id"])
    elif "duplicate_of" in table.frame.columns:
        pairs = planted_pairs(table)
    else:
        pairs = None
    rows, matrices = [], {}
    for seed in seeds:
        seed_dir = out_dir / f"seed{seed}"
        seed_dir.mkdir(exist_ok=True)
        for name, strategy in STRATEGIES.items():
            manifest = split_table(table.frame, pairs if strategy == "grouped" else None, config.data.val_fraction,
                                   config.data.test_fraction, seed=seed, strategy=strategy)
            split_path = seed_dir / f"split_{name}.csv"
            write_manifest(manifest, split_path)
            audit = audit_manifest(manifest, pairs)
            (seed_dir / f"audit_{name}.json").write_text(json.dumps(audit, indent=2) + "\n")
            run = seed_dir / name
            if (run / "config.json").is_file():
                run_training(RunConfig(), resume=run)
            else:
                run_config = copy.deepcopy(config)
                run_config.data.split, run_config.out = str(split_path), str(run)
                run_config.data.duplicates = duplicates  # the split is given: only its audit reads the pairs
                run_config.seed, run_config.references = seed, ()
                run_training(run_config)
            metrics = read_json(run / "metrics.json")
            for model in MODELS:
                rows.append({"seed": seed, "split": name, "model": model, **{c: metrics[model][c] for c in COLUMNS},
                             "leaking_groups": audit["leaking_groups"],
                             "straddling_duplicate_pairs": audit["straddling_duplicate_pairs"],
                             "test_images": metrics["split_sizes"]["test"]})
            if seed == seeds[0]:
                matrices[f"{name} split (classifier)"] = metrics["classifier"]["confusion_matrix"]
            classes = metrics["classifier"]["classes"]
    result = pd.DataFrame(rows)
    paired = paired_inflation(result)
    result.to_csv(out_dir / "leakage_table.csv", index=False)
    paired.to_csv(out_dir / "leakage_paired.csv", index=False)
    (out_dir / "leakage_table.md").write_text(markdown_table(result) + "\n\n" + markdown_table(paired) + "\n")
    confusion_matrix_panels(matrices, classes, out_dir / "confusion_matrices.png")
    return result


def paired_inflation(table: pd.DataFrame) -> pd.DataFrame:
    """Per model and metric, naive minus grouped test score paired by seed: mean, sd and a 95 %
    Student-t interval over the seeds (no interval from a single seed)."""
    rows = []
    for model in MODELS:
        runs = table[table["model"] == model].pivot(index="seed", columns="split", values=list(COLUMNS))
        for column in COLUMNS:
            difference = (runs[(column, "naive")] - runs[(column, "grouped")]).dropna().to_numpy()
            mean, sd, low, high = paired_interval(difference)
            rows.append({"model": model, "metric": column, "seeds": len(difference), "naive_minus_grouped": mean,
                         "sd": sd, "ci95_low": low, "ci95_high": high})
    return pd.DataFrame(rows)
