"""The stage-2 dense classifier trained on frozen embeddings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamese.models.checkpoint import load_model


class DenseClassifier(nn.Module):
    """Three dense layers; one sigmoid output for binary tasks, softmax logits otherwise."""

    def __init__(self, embedding_dim: int, n_classes: int, hidden: tuple[int, int] = (64, 32),
                 dropout: float = 0.3) -> None:
        super().__init__()
        outputs = 1 if n_classes == 2 else n_classes
        # Per-dimension centre and scale of the training embeddings (``fit_standardization``), saved with
        # the weights. A briefly trained or untrained embedder packs every image into a small cap of the
        # sphere; standardising re-opens it, where a fixed rescaling left the classifier at chance.
        self.register_buffer("center", torch.zeros(embedding_dim))
        self.register_buffer("scale", torch.full((embedding_dim,), embedding_dim ** -0.5))
        self.layers = nn.Sequential(
            nn.Linear(embedding_dim, hidden[0]), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden[0], hidden[1]), nn.ReLU(inplace=True), nn.Dropout(dropout),
            nn.Linear(hidden[1], outputs),
        )
        self.arch = {"embedding_dim": embedding_dim, "n_classes": n_classes, "hidden": list(hidden)}

    @torch.no_grad()
    def fit_standardization(self, embeddings: torch.Tensor) -> None:
        self.center.copy_(embeddings.mean(dim=0))
        self.scale.copy_(embeddings.std(dim=0).clamp_min(1e-6))

    @property
    def binary(self) -> bool:
        return self.arch["n_classes"] == 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.center) / self.scale)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, n_classes)`` for either head."""
        if self.binary:
            p = torch.sigmoid(logits.reshape(-1))
            return torch.stack([1 - p, p], dim=1)
        return torch.softmax(logits, dim=1)

    def loss(self, logits: torch.Tensor, targets: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        """BCE for the binary head (``weight[1]/weight[0]`` as positive weight), cross-entropy otherwise."""
        if self.binary:
            pos_weight = None if weight is None else (weight[1] / weight[0]).reshape(1)
            return nn.functional.binary_cross_entropy_with_logits(
                logits.reshape(-1), targets.float(), pos_weight=pos_weight)
        return nn.functional.cross_entropy(logits, targets, weight=weight)

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> DenseClassifier:
        return cls(arch["embedding_dim"], arch["n_classes"], tuple(arch["hidden"]))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> DenseClassifier:
        """A trained classifier, weights and standardisation, from a ``classifier.pt``."""
        return load_model(cls, path)
