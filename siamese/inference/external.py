"""A trained run scored on another dataset: other patients, clinics and cameras than it was trained on.

A grouped test split keeps lesions and patients apart, but not sources: HAM10000's test images come from
the same two clinics, cameras and years as its training images. Scoring the same model on a dataset it
never saw (ISIC 2020's images of other patients, PH2 from Porto) measures how much of its quality is the
method and how much is the source. The other dataset's labels are mapped onto the run's classes
(``melanoma=mel``); images whose label maps to none of them are counted and left out.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score
from tqdm.auto import tqdm

from siamese.data.table import DataError, DatasetTable
from siamese.evaluation.metrics import classification_metrics
from siamese.inference.predictor import Predictor

BATCH = 32


def parse_label_map(items: Sequence[str]) -> dict[str, str]:
    """``["melanoma=mel", "nevus=nv"]`` to a dict. Raises ValueError on an item without ``=``."""
    mapping = {}
    for item in items:
        source, sep, target = item.partition("=")
        if not sep or not source or not target:
            raise ValueError(f"--map takes LABEL=CLASS pairs (e.g. melanoma=mel); got {item!r}")
        mapping[source] = target
    return mapping


def score_external(run_dir: str | Path, table: DatasetTable, label_column: str = "label",
                   label_map: dict[str, str] | None = None, engine: str = "auto"
                   ) -> tuple[dict[str, Any], pd.DataFrame, pd.DataFrame]:
    """The run's classifier on every image of ``table`` whose ``label_column`` value is one of the run's
    classes or maps onto one through ``label_map``: the test metrics of ``metrics.json`` (balanced accuracy,
    macro P/R/F1 and AUC over the classes present) with each present class's one-vs-rest ROC-AUC, a
    per-class table and one row of probabilities per image. Warns when images are in the run's own split.

    Raises DataError when the column is missing, a mapping names a label absent from the column or targets
    no class of the run, or no image maps.
    """
    predictor = Predictor(run_dir, engine=engine)
    classes = list(predictor.prep.classes)
    label_map = dict(label_map or {})
    frame = table.frame
    if label_column not in frame.columns:
        raise DataError(f"{table.name}: no column {label_column!r}; its columns are {list(frame.columns)}")
    wrong = sorted(set(label_map.values()) - set(classes))
    if wrong:
        raise DataError(f"--map targets {wrong}, which are not classes of {run_dir} ({classes})")
    labels = frame[label_column].astype(str)
    unused = sorted(set(label_map) - set(labels))
    if unused:
        raise DataError(f"--map {unused} match no {label_column} value of {table.name} "
                        f"({sorted(labels.unique())[:8]})")
    mapped = labels.map(lambda v: label_map.get(v, v if v in classes else None))
    kept = frame[mapped.notna()].reset_index(drop=True)
    if kept.empty:
        raise DataError(f"none of {table.name}'s {label_column} values ({sorted(labels.unique())[:8]}) is a class "
                        f"of the run ({classes}); map them with --map LABEL=CLASS")
    seen = set(pd.read_csv(Path(run_dir) / "split.csv", dtype={"image_id": str})["image_id"])
    own = int(kept["image_id"].astype(str).isin(seen).sum())
    if own:
        warnings.warn(f"{own} of the {len(kept)} images are in {run_dir}'s own split.csv (trained on, or picked "
                      f"its epochs): these figures are not of unseen images", stacklevel=2)
    y = mapped[mapped.notna()].map({c: i for i, c in enumerate(classes)}).to_numpy()
    paths = [Path(p) for p in kept["path"]]
    proba = np.vstack([predictor.embed(paths[start:start + BATCH])[1]
                       for start in tqdm(range(0, len(paths), BATCH), desc=f"scoring {table.name}")])
    with warnings.catch_warnings():  # classes absent here but predicted: balanced accuracy leaves them out, as said
        warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")
        summary, per_class = classification_metrics(y, proba, classes)
    present = per_class["support"] > 0  # the macro figures over the classes present, as balanced accuracy is
    summary.update({f"macro_{m}": float(per_class.loc[present, m].mean()) for m in ("precision", "recall", "f1")})
    summary["one_vs_rest_roc_auc"] = {classes[c]: float(roc_auc_score(y == c, proba[:, c])) for c in np.unique(y)
                                      if 0 < (y == c).sum() < len(y)}
    summary.update(dataset=table.name, label_column=label_column, label_map=label_map, images_in_run_split=own,
                   left_out={str(k): int(v) for k, v in labels[mapped.isna()].value_counts().items()})
    predictions = pd.DataFrame({"image_id": kept["image_id"], "label": kept[label_column].astype(str),
                                "mapped": np.array(classes)[y], "prediction": np.array(classes)[proba.argmax(1)],
                                **{f"p_{c}": proba[:, i] for i, c in enumerate(classes)}})
    return summary, per_class, predictions


def write_external(out: str | Path, summary: dict[str, Any], per_class: pd.DataFrame,
                   predictions: pd.DataFrame) -> list[Path]:
    """``external_metrics.json``, ``external_per_class.csv`` and ``external_predictions.csv`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = [out / "external_metrics.json", out / "external_per_class.csv", out / "external_predictions.csv"]
    paths[0].write_text(json.dumps(summary, indent=2) + "\n")
    per_class.to_csv(paths[1], index=False)
    predictions.to_csv(paths[2], index=False)
    return paths
