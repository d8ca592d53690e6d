"""siamese-lesions: metric learning and leakage-free evaluation for dermoscopic lesion images.

The public API, for a notebook or a script (each name loads its module on first use, so ``import siamese``
costs nothing and ``predict`` does not pay for the training stack)::

    import siamese

    config = siamese.preset("tiny")                   # a RunConfig; change any field
    run_dir = siamese.run_training(config)            # train both stages, score, write the run folder
    run = siamese.load_run(run_dir)                   # its config, metrics.json and split
    answers = run.predictor().predict([image_path])   # or siamese.Predictor(run_dir)

    table = siamese.load_dataset("ph2", "data/ph2")   # any registered dataset
    manifest = siamese.split_table(table.frame)       # grouped train/val/test split
    siamese.audit_manifest(manifest)["leaks"]         # False: no lesion or patient straddles splits
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "RunConfig": "siamese.config", "CVConfig": "siamese.config", "preset": "siamese.config",
    "load_dataset": "siamese.data", "register_dataset": "siamese.data.registry",
    "register_backbone": "siamese.models.registry",
    "split_table": "siamese.data.splits", "kfold_table": "siamese.data.splits",
    "audit_manifest": "siamese.data.audit",
    "run_training": "siamese.workflows.training_run", "rescore_run": "siamese.workflows.scoring",
    "run_cv": "siamese.workflows.crossval.runner", "load_run": "siamese.workflows.run_folder",
    "Run": "siamese.workflows.run_folder", "Predictor": "siamese.inference.predictor",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'siamese' has no attribute {name!r}")


def __dir__() -> list[str]:
    # the public names and the module's own dunders, not the helpers this file imports
    return sorted([*_EXPORTS, *(name for name in globals() if name.startswith("__"))])


__all__ = ["CVConfig", "Predictor", "Run", "RunConfig", "audit_manifest", "kfold_table", "load_dataset", "load_run",
           "preset", "register_backbone", "register_dataset", "rescore_run", "run_cv", "run_training",
           "split_table"]
