"""The embedding network: backbone, fully connected head, L2-normalised output."""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from siamese.models.backbones import build_backbone


class EmbeddingNet(nn.Module):
    """Maps an image to a unit vector, so distances are comparable across the whole space."""

    def __init__(self, backbone: str = "inception_v3", weights: str = "imagenet", embedding_dim: int = 128,
                 head_hidden: int = 512, dropout: float = 0.2) -> None:
        super().__init__()
        self.backbone, feature_dim = build_backbone(backbone, weights)
        self.head = nn.Sequential(
            nn.Linear(feature_dim, head_hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(head_hidden, embedding_dim),
        )
        self.arch = {"backbone": backbone, "embedding_dim": embedding_dim, "head_hidden": head_hidden}

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (what the near-duplicate search compares)."""
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.head(self.backbone(x)).float(), dim=1)

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> EmbeddingNet:
        """An untrained net with a checkpoint's architecture (weights come from the checkpoint)."""
        return cls(arch["backbone"], "none", arch["embedding_dim"], arch["head_hidden"])
