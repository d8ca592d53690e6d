"""Image descriptors for duplicate search: CNN features and perceptual hashes, cached on disk.

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
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from siamese.data.images import ImageDataset, PixelSource, build_transform
from siamese.models import EmbeddingNet, InputNormalization, build_backbone
from siamese.models.backbones import imagenet_statistics
from siamese.runtime.atomic import written_whole
from siamese.runtime.device import Compute, autocast, prepare_model, resolve_compute, to_device


def descriptor_model(backbone: str = "efficientnet_lite0", weights: str = "imagenet",
                     run_dir: str | Path | None = None) -> nn.Module:
    """Pooled features (uint8 images in) of a backbone with the input scaling of its ImageNet checkpoint, or
    of a run's trained backbone with the run's own."""
    if run_dir is not None:
        embedder = EmbeddingNet.from_checkpoint(Path(run_dir) / "embedder.pt")
        return nn.Sequential(embedder.normalize, embedder.backbone).eval()
    model, _ = build_backbone(backbone, weights)
    return nn.Sequential(InputNormalization(*imagenet_statistics(backbone)), model).eval()


@torch.no_grad()
def cnn_features(model: nn.Module, pixels: PixelSource, batch_size: int = 64,
                 device: torch.device | None = None, desc: str = "features", compute: Compute | None = None
                 ) -> np.ndarray:
    """``(N, D)`` float32 features of ``model`` over ``pixels`` in order, averaged with each mirror image;
    ``compute`` (memory format, precision) defaults to ``auto`` for the device."""
    device = device or torch.device("cpu")
    compute = compute or resolve_compute("auto", device)
    model = prepare_model(model, device, compute).eval()
    dataset = ImageDataset(pixels, np.zeros(len(pixels), dtype=int), build_transform("none"))
    chunks = []
    for images, _ in tqdm(DataLoader(dataset, batch_size=batch_size), desc=desc):
        images = to_device(images, device, compute.channels_last)
        with autocast(device, compute.bf16):
            chunks.append(((model(images) + model(torch.flip(images, dims=[3]))) / 2).float().cpu())
    return torch.cat(chunks).numpy()


def normalise(features: np.ndarray) -> np.ndarray:
    return features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-12)


HASH_SIZE = 16
"""pHash side: 16 x 16 = 256 bits. On the 56 real HAM10000 images a 64-bit hash left brightened copies
(6 bits) as close as two different lesions (6 bits); 256 bits put every planted copy within 26 bits and
the closest distinct lesions 56 bits apart."""
CROP_VARIANTS = (0.03, 0.06)
"""Centre crops (share cut from every side, resized back) hashed beside each image: a copy cropped by a
few per cent moved a 256-bit pHash by up to 70 bits, its matching crop variant by at most 6."""
VARIANTS = 3 + len(CROP_VARIANTS)  # the image, its two mirrors, its crops


def _bits_to_words(hash_bits: np.ndarray) -> np.ndarray:
    return np.packbits(hash_bits.astype(np.uint8).reshape(-1)).view(">u8").astype(np.uint64)


def centre_crop(image: Image.Image, share: float) -> Image.Image:
    width, height = image.size
    dx, dy = round(width * share), round(height * share)
    return image.crop((dx, dy, width - dx, height - dy)).resize(image.size, Image.Resampling.BILINEAR)


def phash_codes(pixels: PixelSource, desc: str = "phash") -> np.ndarray:
    """``(N, VARIANTS, HASH_SIZE**2 / 64)`` pHash words of each image, its left-right and up-down mirrors
    and its mild centre crops (see :data:`CROP_VARIANTS`), in that order."""
    words = HASH_SIZE * HASH_SIZE // 64
    codes = np.zeros((len(pixels), VARIANTS, words), dtype=np.uint64)
    for i in tqdm(range(len(pixels)), desc=desc):
        grey = Image.fromarray(pixels[i]).convert("L")
        variants = (grey, grey.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                    grey.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
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
