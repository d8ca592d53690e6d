"""The inference graph of a finished run: everything ``predict`` computes, as one torch module.

Both the torch engine and the ONNX export build on it; it lives apart from both so that neither has to
import the other.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from siamese.data.table import DataError
from siamese.inference.preprocess import Preprocessing
from siamese.models.classifier import DenseClassifier
from siamese.models.embedder import EmbeddingNet


class InferenceGraph(nn.Module):
    """uint8 pixels to (unit embedding, class probabilities): all the model work ``predict`` does."""

    def __init__(self, embedder: EmbeddingNet, classifier: DenseClassifier) -> None:
        super().__init__()
        self.embedder, self.classifier = embedder, classifier

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embedder(pixels)
        return embedding, self.classifier.probabilities(self.classifier(embedding))

    @classmethod
    def from_run(cls, run_dir: str | Path) -> InferenceGraph:
        """Both stages' best checkpoints from a run folder, refused when they disagree with its class list."""
        run_dir = Path(run_dir)
        classes = Preprocessing.load(run_dir / "preprocess.json").classes
        classifier = DenseClassifier.from_checkpoint(run_dir / "classifier.pt")
        if classifier.arch["n_classes"] != len(classes):
            raise DataError(f"{run_dir}: classifier has {classifier.arch['n_classes']} classes but the run "
                            f"lists {len(classes)}")
        return cls(EmbeddingNet.from_checkpoint(run_dir / "embedder.pt"), classifier).eval()
