"""Pixels at the training size, augmentation, and the optional pre-resized uint8 cache.

A "pixel source" is anything indexable that returns an ``HxWx3`` uint8 array already resized; files,
in-memory arrays and the on-disk cache all look the same to the torch ``Dataset``, so the cache is a
drop-in that saves decoding a 600x450 JPEG every epoch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision.transforms import v2
from tqdm.auto import tqdm

from siamese.data.crops import Box
from siamese.data.decode import load_image
from siamese.data.registry import AUGMENTATIONS
from siamese.data.table import DatasetTable
from siamese.runtime.atomic import written_whole


class PixelSource(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, i: int) -> np.ndarray: ...


class FilePixels:
    def __init__(self, paths: Sequence[str], size: int, boxes: Sequence[Box | None] | None = None) -> None:
        self.paths, self.size = list(paths), size
        self.boxes = list(boxes) if boxes is not None else [None] * len(self.paths)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> np.ndarray:
        return load_image(self.paths[i], self.size, self.boxes[i])


class ArrayPixels:
    def __init__(self, images: np.ndarray, index: Sequence[int], size: int) -> None:
        self.images, self.index, self.size = images, np.asarray(index), size

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> np.ndarray:
        pixels = self.images[self.index[i]]
        if pixels.shape[:2] == (self.size, self.size):
            return np.ascontiguousarray(pixels)
        image = Image.fromarray(pixels).resize((self.size, self.size), Image.Resampling.BILINEAR)
        return np.array(image)


class MemmapPixels:
    """Rows of the on-disk cache, copied out so torch gets writable memory."""

    def __init__(self, array: np.ndarray) -> None:
        self.array = array

    def __len__(self) -> int:
        return len(self.array)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.array(self.array[i])


def pixel_source(table: DatasetTable, size: int, cache_dir: str | Path | None = None,
                 boxes: Sequence[Box | None] | None = None) -> PixelSource:
    """Pixels for the rows of ``table``, each cropped to its box when ``boxes`` (from
    :func:`siamese.inference.lesion_masks.crop_boxes`) are given; with ``cache_dir`` they come from (and build) a
    memmap cache."""
    frame = table.frame
    if "index" in frame.columns and table.images is not None:
        source: PixelSource = ArrayPixels(table.images, frame["index"].to_numpy(), size)
    else:
        source = FilePixels(frame["path"].tolist(), size, boxes)
    if cache_dir is None:
        return source
    return cached_pixels(source, cache_path(table, size, cache_dir, boxes))


class PixelRows:
    """A view of some rows (``(N,)`` positions) of a pixel source, itself a pixel source."""

    def __init__(self, source: PixelSource, rows: np.ndarray) -> None:
        self.source, self.rows = source, rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.source[int(self.rows[i])]


def cache_path(table: DatasetTable, size: int, cache_dir: str | Path, boxes: Sequence[Box | None] | None = None
               ) -> Path:
    """One cache file per (dataset, rows, size, crop): a different split, size or crop never reuses a stale
    cache."""
    frame = table.frame
    key = hashlib.sha1()
    key.update(f"{table.name}|{size}|{boxes}|".encode())
    key.update("\n".join(frame["image_id"].astype(str)).encode())
    if "path" in frame.columns:
        key.update("\n".join(frame["path"].astype(str)).encode())
    return Path(cache_dir) / f"{table.name}_{size}px_{len(frame)}_{key.hexdigest()[:12]}.npy"


def cached_pixels(source: PixelSource, path: Path) -> MemmapPixels:
    """Decode every image once into an ``N x S x S x 3`` uint8 ``.npy``; later runs memory-map it.

    The file is written under a temporary name of this process's own and renamed when complete
    (:func:`written_whole`), so an interrupted build is rebuilt rather than read half-empty, and runs
    sharing a cache folder that build the same file at once each finish with a whole one.
    """
    if path.is_file():
        return MemmapPixels(np.load(path, mmap_mode="r"))
    first = source[0]
    with written_whole(path) as partial:
        out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(source), *first.shape))
        out[0] = first
        for i in tqdm(range(1, len(source)), desc=f"caching {path.name}", leave=False, initial=1,
                      total=len(source)):
            out[i] = source[i]
        out.flush()
        del out
    return MemmapPixels(np.load(path, mmap_mode="r"))


def channel_stats(source: PixelSource, max_images: int = 2000, seed: int = 0) -> tuple[tuple, tuple]:
    """Per-channel mean and std on (a sample of) the training images, for ``normalization='train'``."""
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(source), size=min(max_images, len(source)), replace=False)
    pixels = np.stack([source[int(i)] for i in picks]).astype(np.float64) / 255.0
    mean = pixels.mean(axis=(0, 1, 2))
    std = pixels.std(axis=(0, 1, 2)) + 1e-6
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)


def build_transform(augment: str = "none", size: int | None = None) -> v2.Compose:
    """uint8 image tensors, augmented; the float conversion, normalisation and the recipe's Gaussian noise
    happen in the model's first layer (``InputNormalization``), on its device.

    ``lesion`` is the original recipe (flips, rotation, brightness/contrast/saturation jitter; the noise is
    the model's ``input_noise``): a lesion has no up or down. ``dermoscopy`` keeps colour nearly intact
    (hue and saturation carry the diagnosis: blue-grey, dark brown, black) and varies geometry instead:
    any rotation, flips, and crops of 60-100 % of the area resized back to ``size``. Hue is left alone in
    both: its RGB-HSV round trip cost half the time of the whole pipeline (9.7 -> 4.6 ms per 256 px image
    on one core). ``light`` (small shifts and rotations, no flips) suits digits, where a flip turns a 6
    into a 9. ``none`` is for evaluation. Augmentation runs on PIL images, converted to a tensor last:
    PIL's C code does the lesion recipe in 1.4 ms per 256 px image on one core, the same v2 ops on uint8
    tensors in 3.3 ms."""
    if augment not in AUGMENTATIONS:
        raise ValueError(f"augment must be one of {AUGMENTATIONS}; got {augment!r}")
    if augment == "none":
        return v2.Compose([v2.ToImage()])
    if augment == "lesion":
        steps = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomRotation(30),
                 v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2)]
    elif augment == "dermoscopy":
        if size is None:
            raise ValueError("the dermoscopy augmentation needs the image size (its crops are resized back)")
        steps = [v2.RandomHorizontalFlip(), v2.RandomVerticalFlip(), v2.RandomRotation(180),
                 v2.RandomResizedCrop(size, scale=(0.6, 1.0), ratio=(0.85, 1.18)),
                 v2.ColorJitter(brightness=0.1, contrast=0.1)]
    else:
        steps = [v2.RandomAffine(degrees=10, translate=(0.08, 0.08), scale=(0.9, 1.1))]
    return v2.Compose([v2.ToPILImage(), *steps, v2.ToImage()])


LESION_NOISE = 0.02
"""Sigma (0-1 scale) of the lesion recipe's Gaussian noise, added by the model in training mode."""


class ImageDataset(Dataset):
    """``(image tensor, class index)`` pairs from a pixel source."""

    def __init__(self, source: PixelSource, targets: Sequence[int], transform: v2.Compose) -> None:
        if len(source) != len(targets):
            raise ValueError(f"{len(source)} images but {len(targets)} targets")
        self.source, self.targets, self.transform = source, np.asarray(targets), transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.source[i]), int(self.targets[i])
