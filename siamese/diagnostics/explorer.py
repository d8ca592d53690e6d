"""The embedding explorer: one self-contained HTML page of a run's 2-D projection to ask questions of.

Points are coloured by class, split, correct or wrong, the errors by true class, predicted probability or a
metadata column; hovering shows an image's thumbnail and prediction; clicking lists its nearest training
images (in the embedding space, not the projection, which distorts distances) and marks the other images of
its lesion and its near-duplicate partners. The page is written by :func:`write_run_explorer` (called by
``python -m siamese visualize RUN --html``); :func:`explorer_payload` is the data it holds, testable alone.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.neighbors import NearestNeighbors

from siamese.config import RunConfig
from siamese.data.duplicates import read_pairs
from siamese.data.table import DataError
from siamese.diagnostics.page import THUMBNAIL_PX, group_noun, thumbnail_uri, write_page
from siamese.models.classifier import DenseClassifier
from siamese.training.classify import predict_proba
from siamese.workflows.run_data import colour_features

NEIGHBOURS = 5
MAX_CATEGORIES = 30
"""A text column with more distinct values than this (an id, a free-text note) is no colouring."""
NOT_METADATA = {"image_id", "label", "group", "lesion_id", "split", "path", "index", "row"}
EXPLORER_FILE = "explorer.html"


def nearest_training(queries: np.ndarray, query_ids: np.ndarray, train: np.ndarray, train_ids: np.ndarray,
                     k: int = NEIGHBOURS) -> tuple[np.ndarray, np.ndarray]:
    """Positions in ``train`` (``M x D``) of the ``k`` nearest training embeddings of each query (``N x D``),
    by Euclidean distance as the run's k-NN vote, nearest first, and their distances: two ``N x k`` arrays.
    A training image is never its own neighbour (matched by id); ``k`` shrinks to what the training split
    allows. Raises DataError when it has too few images for one neighbour."""
    k = min(k, len(train) - 1)
    if k < 1:
        raise DataError(f"{len(train)} training image(s): too few to list nearest neighbours")
    distances, positions = NearestNeighbors(n_neighbors=k + 1).fit(train).kneighbors(queries)
    keep = train_ids[positions] != np.asarray(query_ids)[:, None]
    # a query outside the training split keeps its k+1 nearest: drop the farthest so every row has k
    keep[keep.all(axis=1), -1] = False
    return positions[keep].reshape(len(queries), k), distances[keep].reshape(len(queries), k)


def metadata_columns(frame: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """The columns of ``frame`` worth colouring by: numbers (``kind`` "number", missing as None) and text
    with 2 to :data:`MAX_CATEGORIES` values (``kind`` "category", missing as "unknown"); one value each row."""
    columns: dict[str, dict[str, Any]] = {}
    for name in frame.columns:
        if name in NOT_METADATA:
            continue
        column = frame[name]
        if pd.api.types.is_numeric_dtype(column) and not pd.api.types.is_bool_dtype(column):
            if column.nunique() > 1:
                values = [None if pd.isna(v) else round(float(v), 4) for v in column]
                columns[str(name)] = {"kind": "number", "values": values}
        elif 2 <= column.nunique() <= MAX_CATEGORIES:
            columns[str(name)] = {"kind": "category", "values": column.fillna("unknown").astype(str).tolist()}
    return columns


def explorer_payload(points: pd.DataFrame, coords: dict[str, np.ndarray], embeddings: np.ndarray,
                     catalogue: pd.DataFrame, train_embeddings: np.ndarray, thumbnail: Callable[[str, int], str],
                     classes: list[str], total: int, proba: np.ndarray | None = None, pairs: pd.DataFrame | None = None,
                     title: str = "embedding explorer", k: int = NEIGHBOURS, group: str = "lesion") -> dict[str, Any]:
    """The data of an explorer page.

    ``points``: the ``N`` images drawn (``image_id``, ``split``, ``label``, ``group``, ``row``: position in its
    split, and any metadata columns); ``coords``: projection name to ``N x 2``; ``embeddings``: ``N x D``;
    ``catalogue``: every image of the run (``image_id``, ``split``, ``label``, ``group``, ``row``), whose
    training rows, in order, are ``train_embeddings``; ``thumbnail(split, row)``: an image's data URI;
    ``total``: how many images the ``N`` were drawn from (more when sampled); ``proba``:
    ``N x len(classes)`` class probabilities, or None; ``pairs``: near-duplicate pairs (``from_img``,
    ``to_img``), or None; ``group``: what the ``group`` column names (:func:`~siamese.diagnostics.page.group_noun`).

    Records (``records``) are the drawn images first, then the undrawn images the page shows beside them
    (neighbours, duplicate partners); ``neighbours``/``distances`` and ``partners`` index records.
    Raises ValueError when the arrays do not match ``points``.
    """
    n = len(points)
    if len(embeddings) != n or any(len(c) != n for c in coords.values()) or (proba is not None and len(proba) != n):
        raise ValueError(f"{n} points but embeddings, coordinates or probabilities of another length")
    catalogue = catalogue.reset_index(drop=True)
    train = catalogue[catalogue["split"] == "train"].reset_index(drop=True)
    if len(train) != len(train_embeddings):
        raise ValueError(f"{len(train)} training images in the catalogue but {len(train_embeddings)} embeddings")
    where = pd.Series(np.arange(len(catalogue)), index=catalogue["image_id"].astype(str))
    record_of: dict[str, int] = {}
    order: list[int] = []  # catalogue positions of the records

    def record(image_id: str) -> int:
        if image_id not in record_of:
            record_of[image_id] = len(order)
            order.append(int(where[image_id]))
        return record_of[image_id]

    ids = points["image_id"].astype(str).to_numpy()
    for image_id in ids:
        record(image_id)
    train_ids = train["image_id"].astype(str).to_numpy()
    positions, distances = nearest_training(embeddings, ids, train_embeddings, train_ids, k)
    neighbours = [[record(train_ids[p]) for p in row] for row in positions]
    partner_ids = _partners(pairs, set(where.index)) if pairs is not None else {}
    partners = [[record(p) for p in partner_ids.get(i, [])] for i in ids]
    rows = catalogue.iloc[order]
    sizes = catalogue["group"].astype(str).value_counts()
    groups = rows["group"].astype(str)
    return {
        "title": title, "classes": list(map(str, classes)), "total": int(total), "drawn": n,
        "k": int(positions.shape[1]),
        "projections": {name: {"x": np.round(c[:, 0], 4).tolist(), "y": np.round(c[:, 1], 4).tolist()}
                        for name, c in coords.items()},
        "records": {"id": rows["image_id"].astype(str).tolist(), "split": rows["split"].astype(str).tolist(),
                    "label": rows["label"].astype(str).tolist(), "group": groups.tolist(),
                    "thumb": [thumbnail(s, int(r)) for s, r in zip(rows["split"], rows["row"], strict=True)]},
        "proba": None if proba is None else np.round(proba, 4).tolist(),
        "neighbours": neighbours, "distances": np.round(distances, 4).tolist(), "partners": partners,
        "group_sizes": {g: int(sizes[g]) for g in groups.unique() if sizes[g] > 1},
        "metadata": metadata_columns(points), "group_noun": group,
    }


def _partners(pairs: pd.DataFrame, known: set[str]) -> dict[str, list[str]]:
    """Each image's near-duplicate partners among ``known`` (a pair list may name images the run lacks)."""
    partners: dict[str, list[str]] = {}
    for a, b in zip(pairs["from_img"].astype(str), pairs["to_img"].astype(str), strict=True):
        if a in known and b in known and a != b:
            partners.setdefault(a, []).append(b)
            partners.setdefault(b, []).append(a)
    return {image: sorted(set(others)) for image, others in partners.items()}


BODY = """<div id="bar"><h1 id="title"></h1><span id="note"></span>
<label>projection <select id="projection"></select></label>
<label>colour by <select id="colour"></select></label>
<label>find image <input id="find" list="ids" size="16" placeholder="image id"></label><datalist id="ids"></datalist>
</div>
<div id="main"><div id="plot"></div><div id="side"><div id="legend"></div><div id="panel">
<p class="hint">Hover over a point to see its image; click it for its nearest training images.</p></div></div></div>
<div id="hover"></div>"""


def write_run_explorer(run_dir: Path, points: pd.DataFrame, coords: dict[str, np.ndarray], embeddings: np.ndarray,
                       data: Any, train_embeddings: np.ndarray, total: int, thumbnail_px: int = THUMBNAIL_PX) -> Path:
    """``RUN_DIR/projections/explorer.html`` for the ``N`` drawn ``points`` (``split``, ``row``) of a run's
    ``total`` images, with their ``N x 2`` coordinates per projection and ``N x D`` embeddings (see
    :func:`explorer_payload`; ``data``: the run's :class:`~siamese.workflows.run_data.RunData`, for the pixels,
    the lesion groups and the metadata). Predictions are the stage-2 classifier's (``classifier.pt``) on
    every split, so training errors show too; a run without one gets a page without them. Near-duplicate
    partners come from the run's ``--duplicates`` list when it has one."""
    run_dir = Path(run_dir)
    config = RunConfig.load(run_dir / "config.json")
    table = pd.concat([data.parts[s].assign(split=s, row=np.arange(len(data.parts[s]))) for s in data.splits],
                      ignore_index=True)
    # each drawn image with its own table row: lesion group and metadata (age, sex, site, ...)
    described = points[["split", "row"]].merge(table, on=["split", "row"], how="left", validate="one_to_one")
    proba = None
    if (run_dir / "classifier.pt").is_file():
        classifier = DenseClassifier.from_checkpoint(run_dir / "classifier.pt").eval()
        inputs = embeddings
        if classifier.colour_inputs:
            inputs = np.hstack([embeddings, _colour_of(run_dir, points, data, config)])
        proba = predict_proba(classifier, inputs, torch.device("cpu"))
    pairs = read_pairs(config.data.duplicates) if config.data.duplicates else None
    catalogue = table[["image_id", "label", "group", "split", "row"]]

    def thumbnail(split: str, row: int) -> str:
        return thumbnail_uri(data.sources[split][row], thumbnail_px)

    payload = explorer_payload(described, coords, embeddings, catalogue, train_embeddings, thumbnail,
                               list(data.prep.classes), total, proba, pairs, f"{run_dir.name}: embeddings",
                               group=group_noun(config.data.dataset))
    return write_explorer(run_dir / "projections" / EXPLORER_FILE, payload)


def _colour_of(run_dir: Path, points: pd.DataFrame, data: Any, config: RunConfig) -> np.ndarray:
    """``(N, 66)`` colour statistics of the drawn ``points`` (``split``, ``row``), from the run's cache."""
    colour = colour_features(run_dir, data, config, list(points["split"].unique()))
    return np.stack([colour[s][r] for s, r in zip(points["split"], points["row"], strict=True)])


def write_explorer(path: str | Path, payload: dict[str, Any]) -> Path:
    """The explorer page of ``payload`` (:func:`explorer_payload`) at ``path``. The thumbnails are deferred
    data (``page_data(path, "thumbs")``, one data URI per record): the page parses them at the first hover,
    so the first drawing waits only for the coordinates and labels."""
    records = dict(payload["records"])
    thumbs = records.pop("thumb")
    return write_page(path, payload["title"], BODY, {**payload, "records": records}, "explorer.js",
                      deferred={"thumbs": thumbs})
