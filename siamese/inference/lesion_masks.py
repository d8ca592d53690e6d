"""Lesion masks for new images from a ``segment train`` run: at each image's own size, as PNG files, and
as the boxes that ``--crop lesion`` cuts the embedder's input to; and the crop box of every row of a table,
from those masks or the dataset's own (``--crop lesion-mask``).

Like ``predict.py`` this answers through the run's ``model.onnx`` with ONNX Runtime when the export is
current (no torch import, so ``predict --crop lesion`` keeps its fast start) and falls back to torch.
"""

from __future__ import annotations

import functools
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from siamese.config import SegmentConfig
from siamese.data.crops import Box, lesion_box, mask_boxes
from siamese.data.decode import image_size, load_image, to_batch
from siamese.data.registry import CROPS
from siamese.data.table import DataError, DatasetTable, first_offenders
from siamese.inference.engines import open_engine

CHECKPOINT = "segmenter.pt"
CONFIG_FILE = "segment_config.json"
THRESHOLD = 0.5


def segmenter_graph(run_dir: Path) -> Any:
    from siamese.models.segmenter import LesionSegmenter, SegmenterProbabilities

    return SegmenterProbabilities(LesionSegmenter.from_checkpoint(run_dir / CHECKPOINT)).eval()


def upsample(probability: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A probability map resized bilinearly to ``size`` (width, height), so the mask's outline is as smooth
    at the image's own size as the map allows, not blocky."""
    return np.asarray(Image.fromarray(probability.astype(np.float32), mode="F").resize(size, Image.Resampling.BILINEAR))


def resize_to(array: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A boolean mask (nearest neighbour) or an RGB image (bilinear) at ``size`` (width, height)."""
    if array.dtype == bool:
        image = Image.fromarray(array.astype(np.uint8) * 255).resize(size, Image.Resampling.NEAREST)
        return np.asarray(image) > 127
    return np.asarray(Image.fromarray(array).resize(size, Image.Resampling.BILINEAR))


class MaskPredictor:
    """Loads a segmentation run once; ``mask`` then costs one forward pass per image."""

    def __init__(self, run_dir: str | Path, engine: str = "auto", device: str = "cpu") -> None:
        self.run_dir = Path(run_dir)
        self.size = SegmentConfig.load(self.run_dir / CONFIG_FILE).image_size
        self.engine = open_engine(self.run_dir, segmenter_graph, engine, device, (CHECKPOINT,), "segment export")

    def probability(self, image: str | Path) -> np.ndarray:
        """The lesion probability of every pixel, at the image's own size."""
        (maps,) = self.engine(to_batch([load_image(image, self.size)]))
        return upsample(maps[0, 0], image_size(image))

    def mask(self, image: str | Path) -> np.ndarray:
        return self.probability(image) > THRESHOLD


@functools.lru_cache(maxsize=4)
def mask_predictor(run_dir: str) -> MaskPredictor:
    """One predictor per run for a whole process (crops ask for one image at a time)."""
    return MaskPredictor(run_dir)


def predicted_box(image: str | Path, seg_run: str | Path, margin: float = 0.15) -> Box | None:
    """The lesion-centred crop box of ``image`` from the mask ``seg_run`` predicts; None for an empty mask."""
    return lesion_box(mask_predictor(str(seg_run)).mask(image), margin)


def crop_boxes(table: DatasetTable, crop: str = "none", margin: float = 0.15, seg_run: str | Path | None = None
               ) -> list[Box | None] | None:
    """The lesion box of every row (None where its mask is missing or empty), or None when not cropping:
    from the dataset's own masks (``lesion-mask``) or from the masks a segmentation run predicts
    (``lesion``)."""
    if crop not in CROPS:
        raise ValueError(f"crop must be one of {CROPS}; got {crop!r}")
    if crop == "none":
        return None
    if "path" not in table.frame.columns:
        raise DataError(f"--crop {crop} needs image files; dataset {table.name} is held in memory")
    if crop == "lesion":
        if seg_run is None:
            raise DataError("--crop lesion needs --seg-run RUN (a `segment train` run folder)")
        from tqdm.auto import tqdm

        paths = tqdm(table.frame["path"], desc="lesion boxes from the segmenter", leave=False)
        return [predicted_box(path, seg_run, margin) for path in paths]
    if "mask" not in table.frame.columns:
        raise DataError(f"--crop {crop} needs lesion masks, and dataset {table.name} lists none (PH2 does)")
    return mask_boxes(table.frame["mask"].fillna("").astype(str).tolist(), margin)


def outline(mask: np.ndarray, width: int) -> np.ndarray:
    """The mask's boundary band, ``width`` pixels wide."""
    from scipy.ndimage import binary_erosion

    return mask & ~binary_erosion(mask, iterations=width, border_value=0)


def overlay(image: str | Path, mask: np.ndarray, colour: tuple[int, int, int] = (255, 40, 40)) -> np.ndarray:
    """The image with the predicted lesion's outline drawn on it."""
    pixels = load_image(image)
    pixels[outline(mask, max(1, max(mask.shape) // 200))] = colour
    return pixels


OVERLAYS = "overlays"


def write_masks(predictor: MaskPredictor, images: list[Path], out: str | Path) -> list[Path]:
    """``OUT/STEM_segmentation.png`` (0/255, 8-bit greyscale, the image's size) and
    ``OUT/overlays/STEM_overlay.png`` for every image.

    ``OUT`` is then an ISIC 2018 Task 1 submission folder as it stands (the published mask layout, so
    ``--masks OUT`` reads it back too): the official scorer matches a prediction to its image by the image's
    number anywhere in a file name, so an overlay beside its mask would make two matches, which it refuses.
    Raises DataError when two images share a stem (their masks would overwrite each other)."""
    from tqdm.auto import tqdm

    repeated = [stem for stem, count in Counter(path.stem for path in images).items() if count > 1]
    if repeated:
        raise DataError(f"images share a file name stem, so their masks would overwrite each other: "
                        f"{first_offenders(repeated)}")
    out = Path(out)
    (out / OVERLAYS).mkdir(parents=True, exist_ok=True)
    written = []
    for path in tqdm(images, desc="segmenting", leave=False):
        mask = predictor.mask(path)
        mask_file, overlay_file = out / f"{path.stem}_segmentation.png", out / OVERLAYS / f"{path.stem}_overlay.png"
        Image.fromarray(mask.astype(np.uint8) * 255).save(mask_file)
        Image.fromarray(overlay(path, mask)).save(overlay_file)
        written += [mask_file, overlay_file]
    return written
