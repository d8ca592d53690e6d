"""Lesion-centred crops: the lesion's bounding box from its mask, with a margin, made square.

On a few hundred images the embedder cannot afford to learn that rulers, hair, vignetting and the skin
around a lesion are irrelevant; cropping to the lesion removes most of them and puts every lesion at
the same scale. Without a usable mask an image stays whole, and the count of such images is reported.
"""

from __future__ import annotations

import glob
import warnings
from pathlib import Path

import numpy as np

from siamese.data.decode import decode, is_image
from siamese.data.files import image_suffixes, the_image
from siamese.data.table import DataError

Box = tuple[int, int, int, int]
"""``(left, top, right, bottom)`` in pixels, PIL's crop convention."""

MASK_THRESHOLD = 127
GREY_TOLERANCE = 0.01
"""Share of a 0-255 mask's pixels that may be clearly grey (32-223): JPEG edges stay well under it, a soft
probability map or a photograph given as a mask is far above it."""


def read_mask(path: str | Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """A boolean lesion mask (0/255 or 0/1 files alike, thresholded at 127); ``size`` (width, height) must
    match when given. A mask that is not binary to begin with (many grey pixels) is refused rather than
    thresholded into a lesion nobody drew."""
    values = np.asarray(decode(path, "L", kind="lesion mask", labels=True))
    if size is not None and (values.shape[1], values.shape[0]) != tuple(size):
        raise DataError(f"{path}: mask is {values.shape[1]}x{values.shape[0]} but its image is {size[0]}x{size[1]}")
    if values.max() <= 1:
        return values > 0
    grey = float(((values > 32) & (values < 223)).mean())
    if grey > GREY_TOLERANCE:
        raise DataError(f"{path}: not a binary mask ({grey:.0%} of its pixels are grey; a lesion mask is 0/255 "
                        f"or 0/1)")
    return values > MASK_THRESHOLD


def lesion_box(mask: np.ndarray, margin: float = 0.15) -> Box | None:
    """The mask's bounding box grown by ``margin`` of its size on every side and squared around its
    centre, shifted (then clipped) to stay inside the image; None for an empty mask."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    height, width = mask.shape
    top, bottom, left, right = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    side = max(bottom - top, right - left) * (1 + 2 * margin)
    side = int(round(min(side, max(height, width))))
    centre_y, centre_x = (top + bottom) / 2, (left + right) / 2
    x0 = int(round(min(max(centre_x - side / 2, 0), max(width - side, 0))))
    y0 = int(round(min(max(centre_y - side / 2, 0), max(height - side, 0))))
    return x0, y0, min(x0 + side, width), min(y0 + side, height)


def mask_boxes(mask_paths: list[str], margin: float = 0.15) -> list[Box | None]:
    """One box per image from its mask file; an empty path or an empty mask gives None (image kept whole)."""
    return [lesion_box(read_mask(p), margin) if p else None for p in mask_paths]


MASK_PATTERNS = ("{stem}_lesion", "{stem}_segmentation", "{stem}_Segmentation", "{stem}")


def mask_folder(masks_dir: str | Path) -> Path:
    """A ``--masks`` folder, refused by name when it does not exist (rather than every image lacking a mask)."""
    folder = Path(masks_dir)
    if not folder.is_dir():
        raise DataError(f"{folder}: mask folder not found (--masks names a folder of lesion masks)")
    return folder


def find_mask(image: str | Path, masks_dir: str | Path | None = None) -> Path | None:
    """The lesion mask of an image: in ``masks_dir`` as ``STEM_lesion.*`` (PH2), ``STEM_segmentation.*``
    (HAM10000 and ISIC 2018 Task 1) or ``STEM.*``, any image format; without a folder, beside it in the PH2 layout
    (``IMDxxx/IMDxxx_lesion/IMDxxx_lesion.*``)."""
    image = Path(image)
    stem = image.stem
    folder = Path(masks_dir) if masks_dir is not None else image.parent.parent / f"{stem}_lesion"
    if not folder.is_dir():
        return None
    for pattern in MASK_PATTERNS:
        # any image by contents, or by name (a corrupt mask is then refused with its reason, not skipped)
        candidates = [path for path in folder.glob(glob.escape(pattern.format(stem=stem)) + ".*")
                      if path != image and path.is_file()
                      and (path.suffix.lower() in image_suffixes() or is_image(path))]
        if candidates:
            return the_image(sorted(candidates))
    return None


def box_for_image(image: str | Path, crop: str, margin: float, masks_dir: str | Path | None = None) -> Box | None:
    """The crop a run trained with ``crop`` needs for a new image; None (whole image, with a warning, as
    in training) when its mask is missing or empty."""
    if crop == "none":
        return None
    mask = find_mask(image, masks_dir)
    box = lesion_box(read_mask(mask), margin) if mask is not None else None
    if box is None:
        warnings.warn(f"{image}: no lesion mask found (run trained with --crop {crop}; give --masks DIR); "
                      f"using the whole image", stacklevel=2)
    return box
