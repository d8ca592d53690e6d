"""Image descriptors for duplicate search: CNN features (:mod:`siamese.models.frozen_features`) and perceptual
hashes, cached on disk.

CNN features are global-average-pooled backbone activations, averaged over the image and its mirror (a
flipped copy is still a copy) and L2-normalised. With ``--run`` the run's trained *backbone* is used, not
its embedding head: metric learning pulls every image of a class together, which is the opposite of
telling one picture from another.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from siamese.data.images import PixelSource
from siamese.runtime.atomic import written_whole


def normalise(features: np.ndarray) -> np.ndarray:
    return features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-12)


HASH_SIZE = 16
"""pHash side: 16 x 16 = 256 bits. On the 56 real HAM10000 images a 64-bit hash left brightened copies
(6 bits) as close as two different lesions (6 bits); 256 bits put every planted copy within 26 bits and
the closest distinct lesions 56 bits apart."""
CROP_VARIANTS = (0.03, 0.06)
"""Centre crops (share cut from every side, resized back) hashed beside each image: a copy cropped by a
few per cent moved a 256-bit pHash by up to 70 bits, its matching crop variant by at most 6."""
ORIENTATIONS = (Image.Transpose.FLIP_LEFT_RIGHT, Image.Transpose.FLIP_TOP_BOTTOM, Image.Transpose.ROTATE_90,
                Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270, Image.Transpose.TRANSPOSE,
                Image.Transpose.TRANSVERSE)
"""The image's mirrors and right-angle turns hashed beside it (all eight orientations of the square): a
dermoscope has no "up", and a copy turned by 90 degrees moved a pHash as far as an unrelated image."""
CROPS_FROM = 1 + len(ORIENTATIONS)
"""Index of the first crop variant in :func:`phash_codes`' output."""
VARIANTS = CROPS_FROM + len(CROP_VARIANTS)  # the image, its other orientations, its crops


def _bits_to_words(hash_bits: np.ndarray) -> np.ndarray:
    return np.packbits(hash_bits.astype(np.uint8).reshape(-1)).view(">u8").astype(np.uint64)


def centre_crop(image: Image.Image, share: float) -> Image.Image:
    width, height = image.size
    dx, dy = round(width * share), round(height * share)
    return image.crop((dx, dy, width - dx, height - dy)).resize(image.size, Image.Resampling.BILINEAR)


def phash_codes(pixels: PixelSource, desc: str = "phash") -> np.ndarray:
    """``(N, VARIANTS, HASH_SIZE**2 / 64)`` pHash words of each image, its other orientations (see
    :data:`ORIENTATIONS`) and its mild centre crops (see :data:`CROP_VARIANTS`), in that order."""
    words = HASH_SIZE * HASH_SIZE // 64
    codes = np.zeros((len(pixels), VARIANTS, words), dtype=np.uint64)
    for i in tqdm(range(len(pixels)), desc=desc):
        grey = Image.fromarray(pixels[i]).convert("L")
        variants = (grey, *(grey.transpose(turn) for turn in ORIENTATIONS),
                    *(centre_crop(grey, share) for share in CROP_VARIANTS))
        codes[i] = [_bits_to_words(imagehash.phash(v, hash_size=HASH_SIZE).hash) for v in variants]
    return codes


def cached(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Load ``path`` if present, else compute, save (atomically, also beside another process saving it) and
    return."""
    if path.is_file():
        return np.load(path)
    values = compute()
    with written_whole(path) as partial:
        np.save(partial, values)
    return values


def cache_key(*parts: object) -> str:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]
