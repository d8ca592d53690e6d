"""The embedding network: backbone, fully connected head, L2-normalised output."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from siamese.data.decode import IMAGENET_MEAN, IMAGENET_STD
from siamese.models.backbones import build_backbone
from siamese.models.checkpoint import load_model
from siamese.models.colour import COLOUR_FEATURES, ColourBranch, check_colour_settings


class InputNormalization(nn.Module):
    """uint8 images in, normalised floats out, as the model's first layer.

    Loaders then ship uint8 batches (a quarter of the bytes through worker queues, pinning and the PCIe
    copy; on the H100 float batches left the GPU waiting for data) and the float work runs on the model's
    device, as timm's ``PrefetchLoader`` does. The statistics travel with the checkpoint, so inference
    repeats training exactly. ``noise`` (the original recipe's Gaussian noise, sigma on the 0-1 scale) is
    added in training mode only, like Keras' ``GaussianNoise`` layer. Floating-point input is taken to be
    normalised already and passes through.
    """

    def __init__(self, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD,
                 noise: float = 0.0) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))
        self.noise = noise

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.is_floating_point():
            return x
        x = x.float().div_(255)
        if self.training and self.noise > 0:
            x = x + self.noise * torch.randn_like(x)
        return (x - self.mean) / self.std

    def pixels(self, x: torch.Tensor) -> torch.Tensor:
        """The 0-255 pixels behind an input, whether it came as uint8 or already normalised."""
        if not x.is_floating_point():
            return x
        return torch.round((x * self.std + self.mean) * 255).clamp(0, 255)


TTA_VIEWS = (1, 2, 4, 8)


def flip_views(x: torch.Tensor, views: int) -> list[torch.Tensor]:
    """The first ``views`` (:data:`TTA_VIEWS`) of an ``(N, C, H, W)`` batch's flips: itself, mirrored, upside
    down, both; then the four transposed (for 8). A lesion has no up, down or handedness."""
    if views not in TTA_VIEWS:
        raise ValueError(f"tta must be one of {TTA_VIEWS} views; got {views}")
    flips = [x, x.flip(3), x.flip(2), x.flip(2).flip(3)]
    flips += [v.transpose(2, 3) for v in flips] if views == 8 else []
    return flips[:views]


class EmbeddingNet(nn.Module):
    """Maps an image to a unit vector, so distances are comparable across the whole space."""

    def __init__(self, backbone: str = "inception_v3", weights: str = "imagenet", *, embedding_dim: int = 128,
                 head_hidden: int = 512, dropout: float = 0.2, mean: tuple[float, ...] = IMAGENET_MEAN,
                 std: tuple[float, ...] = IMAGENET_STD, input_noise: float = 0.0, pooling: str = "last",
                 tta: int = 1, colour_stats: bool = False, colour_noise: float = 0.0) -> None:
        super().__init__()
        if tta not in TTA_VIEWS:
            raise ValueError(f"tta must be one of {TTA_VIEWS} views; got {tta}")
        check_colour_settings(colour_stats, colour_noise)
        self.tta = tta
        self.normalize = InputNormalization(mean, std, input_noise)
        self.backbone, feature_dim = build_backbone(backbone, weights, pooling)
        self.colour = ColourBranch(colour_noise) if colour_stats else None
        head_in = feature_dim + (COLOUR_FEATURES if colour_stats else 0)
        self.head = nn.Sequential(
            nn.Linear(head_in, head_hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(head_hidden, embedding_dim),
        )
        self.arch = {"backbone": backbone, "embedding_dim": embedding_dim, "head_hidden": head_hidden}
        if pooling != "last":  # absent from checkpoints written before pooling was a choice
            self.arch["pooling"] = pooling
        if tta != 1:
            self.arch["tta"] = tta
        if colour_stats:
            self.arch["colour_stats"] = True

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (what the near-duplicate search compares)."""
        return self.backbone(self.normalize(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The unit embedding; in eval mode with ``tta`` views, the renormalised mean over the image's flips
        (and transposes, for 8): a lesion has no up, down or handedness, so neither should its embedding.
        Colour statistics do not change under flips, so they are computed once for all views."""
        colour = None if self.colour is None else self.colour(self.normalize.pixels(x))
        if self.training or self.tta == 1:
            return self.embed_view(x, colour)
        views = flip_views(x, self.tta)
        return F.normalize(torch.stack([self.embed_view(v, colour) for v in views]).mean(dim=0), dim=1)

    def embed_view(self, x: torch.Tensor, colour: torch.Tensor | None = None) -> torch.Tensor:
        """One view's unit embedding; ``colour`` is the colour branch's output for the image (with the branch)."""
        features = self.features(x)
        if colour is not None:
            features = torch.cat([features, colour.to(features.dtype)], dim=1)
        return F.normalize(self.head(features).float(), dim=1)

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> EmbeddingNet:
        """An untrained net with a checkpoint's architecture (weights, statistics included, come from the
        checkpoint)."""
        return cls(arch["backbone"], "none", embedding_dim=arch["embedding_dim"], head_hidden=arch["head_hidden"],
                   pooling=arch.get("pooling", "last"), tta=arch.get("tta", 1),
                   colour_stats=arch.get("colour_stats", False))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> EmbeddingNet:
        """A trained net, weights and input statistics, from an ``embedder.pt``."""
        return load_model(cls, path)
