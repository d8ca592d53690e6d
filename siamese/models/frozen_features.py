"""Frozen CNN descriptors: a backbone's global-average-pooled features of uint8 images, averaged with each
mirror image. Used by the near-duplicate search (``dedup``) and by the ImageNet probe reference model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from siamese.data.images import ImageDataset, PixelSource, build_transform
from siamese.models.backbones import build_backbone, imagenet_statistics
from siamese.models.embedder import EmbeddingNet, InputNormalization
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
