"""Images paired with their lesion masks, at the training size, and the joint augmentation.

The same random geometry must move image and mask together (a flipped image with an unflipped mask
teaches the U-Net nothing), while colour jitter touches the image alone: torchvision's v2 transforms do
both when the mask is a ``tv_tensors.Mask`` (nearest-neighbour for it, colour ops skip it).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2
from tqdm.auto import tqdm

from siamese.data.crops import find_mask, mask_folder, read_mask
from siamese.data.decode import image_size, load_image
from siamese.data.table import DataError, DatasetTable
from siamese.inference.lesion_masks import resize_to

NO_MASK = "no lesion mask (left out of segmentation)"


def with_masks(table: DatasetTable, masks_dir: str | Path | None = None) -> DatasetTable:
    """The rows that have a lesion mask, in ``mask``; the others are dropped and counted.

    PH2 lists its masks itself; HAM10000 and ISIC 2018 masks come from ``masks_dir``
    (``ISIC_xxxxxxx_segmentation.png``, the published layout)."""
    frame = table.frame
    if "path" not in frame.columns:
        raise DataError(f"segmentation needs image files; dataset {table.name} is held in memory")
    if masks_dir is not None:
        folder = mask_folder(masks_dir)
        masks = ["" if m is None else str(m) for m in (find_mask(p, folder) for p in frame["path"])]
    elif "mask" in frame.columns:
        masks = frame["mask"].fillna("").astype(str).tolist()
    else:
        raise DataError(f"dataset {table.name} lists no lesion masks; give --masks DIR "
                        "(the folder of ISIC_xxxxxxx_segmentation.png files)")
    if not any(masks):
        raise DataError(f"none of the {len(frame)} images of {table.name} has a lesion mask")
    marked = DatasetTable(frame.assign(mask=masks), table.images, dict(table.excluded))
    return marked.exclude(marked.frame["mask"] == "", NO_MASK)


def load_pair(image: str | Path, mask: str | Path, size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """An image and its boolean mask, both resized to ``size`` (nearest for the mask) when given; a mask
    of another size than its image is refused by name."""
    truth = read_mask(mask, image_size(image))
    pixels = load_image(image, size)
    if size is not None:
        truth = resize_to(truth, (size, size))
    return pixels, truth


def load_pairs(frame: pd.DataFrame, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Every row's image and mask at the training size, decoded once (PH2's 160 pairs: a few seconds)."""
    images = np.empty((len(frame), size, size, 3), dtype=np.uint8)
    masks = np.empty((len(frame), size, size), dtype=bool)
    rows = zip(frame["path"], frame["mask"], strict=True)
    for i, (path, mask) in enumerate(tqdm(rows, total=len(frame), desc="reading images and masks", leave=False)):
        images[i], masks[i] = load_pair(path, mask, size)
    return images, masks


def joint_transform(size: int, colour: bool = True) -> v2.Compose:
    """Random geometry applied identically to image and mask (any rotation and flip: a lesion has no up;
    crops of 60-100 % of the area, resized back), then colour jitter on the image only."""
    steps = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomRotation(180),
             v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.8, 1.25))]
    if colour:
        steps.append(v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2))
    return v2.Compose(steps)


class SegmentationDataset(Dataset):
    """``(uint8 3xSxS image, float 1xSxS mask)`` pairs, jointly augmented when a transform is given."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, transform: v2.Compose | None = None) -> None:
        if len(images) != len(masks):
            raise ValueError(f"{len(images)} images but {len(masks)} masks")
        self.images, self.masks, self.transform = images, masks, transform

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = tv_tensors.Image(torch.from_numpy(np.ascontiguousarray(self.images[i])).permute(2, 0, 1))
        mask = tv_tensors.Mask(torch.from_numpy(self.masks[i].astype(np.uint8))[None])
        if self.transform is not None:
            image, mask = self.transform(image, mask)
        return image.as_subclass(torch.Tensor), mask.as_subclass(torch.Tensor).float()
