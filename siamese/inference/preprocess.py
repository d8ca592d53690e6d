"""What inference must repeat exactly from training: image size, normalisation and the class order."""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from siamese.data.crops import Box, box_for_image, mask_folder
from siamese.data.decode import load_image
from siamese.data.table import DataError
from siamese.inference.contract import pipeline
from siamese.inference.lesion_masks import predicted_box
from siamese.runtime.json_files import read_json


@dataclass
class Preprocessing:
    """What inference must repeat exactly: size, normalisation, the class order and the lesion crop."""

    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classes: list[str]
    crop: str = "none"
    crop_margin: float = 0.15
    seg_run: str | None = None  # the segmentation run whose masks give ``crop='lesion'`` its boxes

    def read(self, image: str | Path, masks: str | Path | None = None) -> np.ndarray:
        """An image decoded, lesion-cropped (from its mask or the segmenter's, as the run was trained) and
        resized."""
        return load_image(image, self.image_size, self.box(image, masks))

    def box(self, image: str | Path, masks: str | Path | None = None) -> Box | None:
        """The lesion crop of an image as the run was trained (None: the whole image)."""
        if masks is not None:
            mask_folder(masks)
        if self.crop != "lesion":
            return box_for_image(image, self.crop, self.crop_margin, masks)
        box = predicted_box(image, self.seg_run, self.crop_margin) if self.seg_run else None
        if box is None:
            warnings.warn(f"{image}: no lesion found by {self.seg_run}; using the whole image", stacklevel=2)
        return box

    def save(self, path: Path) -> None:
        """The settings, and under ``pipeline`` every step from an image file to ``model.onnx``'s input (for
        clients that do not run this package; :func:`load` reads only the settings)."""
        contract = pipeline(self.image_size, self.mean, self.std, self.crop, self.crop_margin)
        path.write_text(json.dumps({**self.__dict__, "pipeline": contract}, indent=2) + "\n")

    @classmethod
    def load(cls, path: Path) -> Preprocessing:
        if not path.is_file():
            raise DataError(f"{path}: not found; is this a finished run folder?")
        values = read_json(path)
        return cls(values["image_size"], tuple(values["mean"]), tuple(values["std"]), values["classes"],
                   values.get("crop", "none"), values.get("crop_margin", 0.15), values.get("seg_run"))
