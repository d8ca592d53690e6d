"""The stage-2 classifier trained on frozen embeddings: dense layers (none hidden: logistic regression), on the
embedding alone or on the embedding and the image's colour statistics."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamese.models.checkpoint import load_model
from siamese.models.colour import COLOUR_FEATURES


class DenseClassifier(nn.Module):
    """Dense layers on the standardised input, ``hidden`` sizes between them (``()``: one linear layer,
    i.e. logistic regression); one sigmoid output for binary tasks, softmax logits otherwise.

    The input is the ``(N, embedding_dim)`` embedding, or with ``colour_inputs`` the ``(N, embedding_dim + 66)``
    embedding followed by the image's colour statistics: the embedder may take colour as input, but its
    unit-length output does not keep it, and logistic regression on both beats the embedding alone
    (``docs/results/isic2020.md``).

    ``logit_offset`` (one value per output, see :meth:`set_logit_offset`) is added to the logits before the
    probabilities: the class-prior (logit) adjustment fitted on the validation split. The loss sees the raw
    logits, so the offset changes predictions, never training."""

    def __init__(self, embedding_dim: int, n_classes: int, hidden: Sequence[int] = (), dropout: float = 0.3,
                 logit_offset: Sequence[float] | None = None, colour_inputs: bool = False) -> None:
        super().__init__()
        outputs = 1 if n_classes == 2 else n_classes
        width = embedding_dim + (COLOUR_FEATURES if colour_inputs else 0)
        # Per-dimension centre and scale of the training embeddings (``fit_standardization``), saved with
        # the weights. A briefly trained or untrained embedder packs every image into a small cap of the
        # sphere; standardising re-opens it, where a fixed rescaling left the classifier at chance.
        self.register_buffer("center", torch.zeros(width))
        self.register_buffer("scale", torch.full((width,), width ** -0.5))
        layers: list[nn.Module] = []
        for size in hidden:
            layers += [nn.Linear(width, size), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = size
        self.layers = nn.Sequential(*layers, nn.Linear(width, outputs))
        self.arch: dict[str, Any] = {"embedding_dim": embedding_dim, "n_classes": n_classes, "hidden": list(hidden)}
        if colour_inputs:  # absent from checkpoints written before stage 2 could read colour
            self.arch["colour_inputs"] = True
        self.logit_offset = torch.zeros(outputs)
        if logit_offset is not None:
            self.set_logit_offset(torch.tensor(logit_offset, dtype=torch.float32))

    @torch.no_grad()
    def fit_standardization(self, embeddings: torch.Tensor) -> None:
        self.center.copy_(embeddings.mean(dim=0))
        self.scale.copy_(embeddings.std(dim=0).clamp_min(1e-6))

    def set_logit_offset(self, offset: torch.Tensor) -> None:
        """Add ``offset`` (``(1,)`` for the binary head, ``(n_classes,)`` otherwise) to every logit before the
        probabilities; kept in ``arch`` (so in the checkpoint) when it is not zero."""
        self.logit_offset = offset.detach().float().reshape(-1).cpu()
        if bool(self.logit_offset.any()):
            self.arch["logit_offset"] = self.logit_offset.tolist()
        else:
            self.arch.pop("logit_offset", None)

    @property
    def binary(self) -> bool:
        return self.arch["n_classes"] == 2

    @property
    def colour_inputs(self) -> bool:
        """Whether the input holds the colour statistics after the embedding."""
        return bool(self.arch.get("colour_inputs", False))

    @property
    def input_width(self) -> int:
        return int(self.center.numel())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers((x - self.center) / self.scale)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        """Class probabilities ``(N, n_classes)`` for either head, the logit offset added."""
        logits = logits + self.logit_offset.to(logits.device, logits.dtype)
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
        return cls(arch["embedding_dim"], arch["n_classes"], tuple(arch["hidden"]),
                   logit_offset=arch.get("logit_offset"), colour_inputs=arch.get("colour_inputs", False))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> DenseClassifier:
        """A trained classifier, weights, standardisation and logit offset, from a ``classifier.pt``."""
        return load_model(cls, path)
