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


def descriptor_model(backbone: str = "resnet50", weights: str = "imagenet",
                     run_dir: str | Path | None = None) -> nn.Module:
    """Pooled features (uint8 images in) of a torchvision backbone with ImageNet normalisation, or of a
    run's trained backbone with the run's own."""
    if run_dir is not None:
        embedder = EmbeddingNet.from_checkpoint(Path(run_dir) / "embedder.pt")
        return nn.Sequential(embedder.normalize, embedder.backbone).eval()
    model, _ = build_backbone(backbone, weights)
    return nn.Sequential(InputNormalization(), model).eval()


@torch.no_grad()
def cnn_features(model: nn.Module, pixels: PixelSource, batch_size: int = 64,
                 device: torch.device | None = None, desc: str = "features") -> np.ndarray:
    device = device or torch.device("cpu")
    model = model.to(device).eval()
    dataset = ImageDataset(pixels, np.zeros(len(pixels), dtype=int), build_transform("none"))
    chunks = []
    for images, _ in tqdm(DataLoader(dataset, batch_size=batch_size), desc=desc):
        images = images.to(device)
        chunks.append(((model(images) + model(torch.flip(images, dims=[3]))) / 2).float().cpu())
    return torch.cat(chunks).numpy()


def normalise(features: np.ndarray) -> np.ndarray:
    return features / (np.linalg.norm(features, axis=1, keepdims=True) + 1e-12)


def _bits_to_uint64(hash_bits: np.ndarray) -> np.uint64:
    return np.packbits(hash_bits.astype(np.uint8).reshape(-1)).view(">u8")[0].astype(np.uint64)


def phash_codes(pixels: PixelSource, desc: str = "phash") -> np.ndarray:
    """``(N, 3)`` 64-bit pHashes of each image, its left-right and its up-down mirror."""
    codes = np.zeros((len(pixels), 3), dtype=np.uint64)
    for i in tqdm(range(len(pixels)), desc=desc):
        image = Image.fromarray(pixels[i])
        variants = (image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
                    image.transpose(Image.Transpose.FLIP_TOP_BOTTOM))
        codes[i] = [_bits_to_uint64(imagehash.phash(v).hash) for v in variants]
    return codes


def cached(path: Path, compute: Callable[[], np.ndarray]) -> np.ndarray:
    """Load ``path`` if present, else compute, save (atomically) and return."""
    if path.is_file():
        return np.load(path)
    values = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.stem + ".partial.npy")
    np.save(partial, values)
    partial.replace(path)
    return values


def cache_key(*parts: object) -> str:
    digest = hashlib.sha1()
    for part in parts:
        digest.update(str(part).encode())
        digest.update(b"\0")
    return digest.hexdigest()[:16]
