"""Predictions for new images from a finished run folder, with the nearest training exemplars.

Imports neither torch nor torchvision unless the torch engine is chosen (see ``siamese.inference.engines``).
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from siamese.config import RunConfig
from siamese.data.decode import ImageError, to_batch
from siamese.data.files import image_files
from siamese.data.formats import unused_summary, warn_unused
from siamese.data.hdf5 import SUFFIXES as HDF5_SUFFIXES
from siamese.data.hdf5 import member, member_keys
from siamese.data.table import DataError
from siamese.inference.engines import checkpoint_digests, open_engine
from siamese.inference.preprocess import Preprocessing

SUPERPIXELS = "_superpixels.png"
"""ISIC 2017 and 2018 Task 1-2 input folders hold ``ISIC_xxxxxxx_superpixels.png`` beside each image: an
index map, not a photograph. Reading it as an image would also put a second file with the image's number
in a Task 1 submission, which the official scorer refuses ("Multiple matching submissions")."""

COPY_DISTANCE = 2e-3
"""Euclidean distance between unit embeddings below which a new image is taken for a copy of a training
image: the same pixels land within the float rounding of the engines of the run's own embedding, while
distinct images lie several times further even in a tight space (docs/prediction.md has the figures)."""


def expand_inputs(items: list[str]) -> list[Path]:
    """Files as given, folders expanded to every file in them that an installed Pillow plugin identifies,
    whatever its extension (sorted). The rest of a folder is accounted for in a warning: files that are not
    images (each with why: no decoder for its format, naming the package, or not an image), sub-folders and
    ISIC superpixel maps. An HDF5 archive of encoded images (ISIC 2024's ``test-image.hdf5``) gives every
    image it stores (sorted by key). A path that does not exist is kept: reading it raises the same
    :class:`ImageError` as a corrupt file, so a caller that goes past bad images (``predict``) accounts for a
    missing one like any other. A folder with no image or a run folder (its figures are no lesions) is an
    error."""
    paths: list[Path] = []
    for item in items:
        path = Path(item)
        if path.is_dir() and (path / "config.json").is_file() and (path / "embedder.pt").is_file():
            raise DataError(f"{path} is a run folder, not a folder of images (its PNG files are figures): name "
                            f"it once, with --run, and the images to predict after it")
        if path.is_dir():
            found, unused = image_files(path)
            superpixels = [p for p in found if p.name.endswith(SUPERPIXELS)]
            if superpixels:
                warnings.warn(f"{path}: left out {len(superpixels)} ISIC superpixel map(s) (*{SUPERPIXELS})",
                              stacklevel=2)
                found = [p for p in found if not p.name.endswith(SUPERPIXELS)]
            if not found:
                empty = f"{unused_summary(path, unused)}; no image to read" if unused else f"{path}: empty folder"
                raise DataError(empty)
            warn_unused(path, unused)
            paths += found
        elif path.is_file() and path.suffix.lower() in HDF5_SUFFIXES:
            try:
                keys = sorted(member_keys(path))
            except OSError as exc:
                raise DataError(f"{path}: not a readable HDF5 file ({exc})") from exc
            paths += [Path(member(path, key)) for key in keys]
        else:
            paths.append(path)
    return paths


@dataclass
class Prediction:
    """One image's answer; ``probabilities`` holds every class's, in the run's class order (what a challenge
    submission needs), ``top_k`` the highest few by name."""

    image: str
    label: str
    top_k: list[tuple[str, float]]
    neighbours: list[tuple[str, str, float]]
    seconds: float
    probabilities: np.ndarray


def check_made_by_embedder(reference: Any, run_dir: Path) -> None:
    """Refuse training embeddings (an ``np.load`` of ``embeddings/train.npz``) that record another
    ``embedder.pt`` than the run's: its neighbours would be another model's. Files written before the digest
    was recorded pass.

    Raises:
        DataError: naming the file and the command that recomputes it.
    """
    if "embedder_sha256" in reference.files:
        path = run_dir / "embeddings" / "train.npz"
        if str(reference["embedder_sha256"]) != checkpoint_digests(run_dir, ("embedder.pt",))["embedder.pt"]:
            raise DataError(f"{path}: made by another embedder.pt than the run's; recompute the run's embeddings with "
                            f"`python -m siamese rescore {run_dir}`")


class Predictor:
    """Loads a run once; ``predict`` then costs one forward pass per image.

    Args:
        run_dir: a finished run folder.
        device: where the torch engine runs; ONNX Runtime runs on the CPU.
        engine: ``auto`` (ONNX Runtime when the run's export is current, else torch), ``onnx`` or ``torch``.
        masks: a folder of lesion masks, for a run trained with ``--crop lesion-mask``.
        seg_run: a segmentation run whose masks crop the images, for a run trained with ``--crop lesion``.

    Raises:
        FileNotFoundError: the run has not finished (no config, preprocessing or embeddings).
        EngineError: the chosen engine cannot run the model.
    """

    def __init__(self, run_dir: str | Path, device: str = "cpu", engine: str = "auto",
                 masks: str | Path | None = None, seg_run: str | Path | None = None) -> None:
        run_dir = Path(run_dir)
        self.config = RunConfig.load(run_dir / "config.json")
        self.prep = Preprocessing.load(run_dir / "preprocess.json")
        if seg_run is not None:
            self.prep.seg_run = str(seg_run)
        self.masks = masks
        self.engine = open_engine(run_dir, _classification_graph, engine, device)
        reference = np.load(run_dir / "embeddings" / "train.npz")
        check_made_by_embedder(reference, run_dir)
        self.reference_ids = reference["image_id"]
        self.reference_labels = _reference_labels(run_dir, self.reference_ids)
        self.reference = reference["embedding"].astype(np.float32)
        self.fitted_on = _fitted_on(run_dir)

    def fitted_split(self, path: str | Path) -> str | None:
        """``train`` or ``val`` when the run was fitted or selected on an image of this file's name (its stem
        is an ``image_id`` of those splits of ``split.csv``), else None: its prediction tests nothing."""
        return self.fitted_on.get(Path(path).stem)

    def embed(self, paths: list[Path]) -> tuple[np.ndarray, np.ndarray]:
        """Embeddings and class probabilities of the images at ``paths``."""
        return self.engine(to_batch([self.prep.read(p, self.masks) for p in paths]))

    def nearest(self, embedding: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Exact Euclidean neighbours among the training embeddings (a matmul: they are unit vectors)."""
        distance = np.sqrt(np.clip(2 - 2 * embedding @ self.reference.T, 0, None))
        rows = np.argsort(distance, axis=1, kind="stable")[:, :k]
        return np.take_along_axis(distance, rows, axis=1), rows

    def predict(self, paths: list[Path], top_k: int = 3, neighbours: int = 3) -> list[Prediction]:
        """Each image's class, its ``top_k`` classes and ``neighbours`` nearest training images.

        Args:
            paths: image files (any format an installed Pillow plugin reads).
            top_k: how many classes to name, highest first.
            neighbours: how many nearest training images to name.

        Returns:
            One :class:`Prediction` per image, in order.

        Raises:
            ValueError: ``top_k`` or ``neighbours`` below 1.
            ImageError: a file that is not a readable image.
        """
        if top_k < 1:
            raise ValueError(f"top_k must be at least 1; got {top_k}")
        if neighbours < 1:
            raise ValueError(f"neighbours must be at least 1; got {neighbours}")
        results = []
        for path in paths:
            start = time.perf_counter()
            embedding, proba = self.embed([path])
            order = np.argsort(proba[0])[::-1][:top_k]
            distances, rows = self.nearest(embedding, neighbours)
            results.append(Prediction(
                image=os.fspath(path), label=self.prep.classes[order[0]],
                top_k=[(self.prep.classes[i], float(proba[0, i])) for i in order],
                neighbours=[(str(self.reference_ids[r]), str(self.reference_labels[r]), float(d))
                            for r, d in zip(rows[0], distances[0], strict=True)],
                seconds=time.perf_counter() - start, probabilities=proba[0]))
        return results


    def predict_each(self, paths: list[Path], top_k: int = 3, neighbours: int = 3
                     ) -> tuple[list[Prediction], list[ImageError]]:
        """:meth:`predict` over ``paths`` that goes past an image (or its mask) that cannot be read: the
        predictions of the others, in order, and the errors, each naming its file, so that every path is
        accounted for in one or the other. Warns when some images are ones the run was fitted on: by name
        (:meth:`fitted_split`), or by pixels under another name (a nearest training image closer than
        :data:`COPY_DISTANCE`)."""
        seen = [(path, split) for path in paths if (split := self.fitted_split(path))]
        if seen:
            path, split = seen[0]
            warnings.warn(f"{len(seen)} of the {len(paths)} image(s) have the name of an image of the run's "
                          f"train or val split (first: {path} in {split}): their predictions and neighbours "
                          "say nothing about new lesions", stacklevel=2)
        predictions: list[Prediction] = []
        unreadable: list[ImageError] = []
        for path in paths:
            try:
                predictions += self.predict([path], top_k, neighbours)
            except ImageError as exc:
                unreadable.append(exc)
        named = {os.fspath(path) for path, _ in seen}
        copies = [p for p in predictions if p.image not in named and p.neighbours[0][2] < COPY_DISTANCE]
        if copies:  # a renamed copy escapes the check by name; its embedding does not
            first = copies[0]
            warnings.warn(f"{len(copies)} of the {len(paths)} image(s) have the pixels of a training image under "
                          f"another name (first: {first.image}, at embedding distance {first.neighbours[0][2]:.4f} "
                          f"from {first.neighbours[0][0]}): their predictions say nothing about new lesions",
                          stacklevel=2)
        return predictions, unreadable


def _classification_graph(run_dir: Path) -> Any:
    from siamese.inference.graph import InferenceGraph

    return InferenceGraph.from_run(run_dir)


def _fitted_on(run_dir: Path) -> dict[str, str]:
    split = pd.read_csv(run_dir / "split.csv", dtype=str)
    fitted = split[split["split"].isin(("train", "val"))]
    return dict(zip(fitted["image_id"], fitted["split"], strict=True))


def _reference_labels(run_dir: Path, ids: np.ndarray) -> np.ndarray:
    split = pd.read_csv(run_dir / "split.csv", dtype=str).set_index("image_id")["label"]
    return split.reindex(ids).fillna("?").to_numpy()


def predictions_table(predictions: list[Prediction]) -> list[dict[str, Any]]:
    """Flat rows (for CSV/JSON): one per image."""
    rows = []
    for p in predictions:
        row: dict[str, Any] = {"image": p.image, "prediction": p.label, "seconds": round(p.seconds, 4)}
        for rank, (label, prob) in enumerate(p.top_k, 1):
            row[f"top{rank}"] = label
            row[f"top{rank}_p"] = round(prob, 4)
        for rank, (image_id, label, distance) in enumerate(p.neighbours, 1):
            row[f"nn{rank}"] = image_id
            row[f"nn{rank}_label"] = label
            row[f"nn{rank}_distance"] = round(distance, 4)
        rows.append(row)
    return rows


def predictions_text(frame: pd.DataFrame) -> str:
    """:func:`predictions_table`'s rows as an aligned text table, every probability, distance and time with
    four decimals (pandas alone would print a column that rounds to zero as ``0.0`` beside ``0.5000``)."""
    return frame.to_string(index=False, float_format=lambda value: f"{value:.4f}")
