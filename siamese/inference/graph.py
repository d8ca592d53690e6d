"""The inference graph of a finished run: everything ``predict`` computes, as one torch module.

Both the torch engine and the ONNX export build on it; it lives apart from both so that neither has to
import the other.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import nn

from siamese.data.table import DataError
from siamese.inference.preprocess import Preprocessing
from siamese.models.checkpoint import check_trained_on
from siamese.models.classifier import DenseClassifier
from siamese.models.colour import colour_statistics
from siamese.models.embedder import EmbeddingNet
from siamese.runtime.json_files import read_json


class InferenceGraph(nn.Module):
    """uint8 pixels to (unit embedding, class probabilities): all the model work ``predict`` does."""

    def __init__(self, embedder: EmbeddingNet, classifier: DenseClassifier) -> None:
        super().__init__()
        self.embedder, self.classifier = embedder, classifier

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        embedding = self.embedder(pixels)
        return embedding, self.classifier.probabilities(self.logits(pixels, embedding))

    def logits(self, pixels: torch.Tensor, embedding: torch.Tensor) -> torch.Tensor:
        """The classifier's logits for ``(N, 3, H, W)`` images and their ``(N, D)`` embeddings: with colour
        inputs, the images' colour statistics follow the embedding, as stage 2 was trained."""
        if self.classifier.colour_inputs:
            colour = colour_statistics(self.embedder.normalize.pixels(pixels))
            embedding = torch.cat([embedding, colour.to(embedding.dtype)], dim=1)
        return self.classifier(embedding)

    @classmethod
    def from_run(cls, run_dir: str | Path) -> InferenceGraph:
        """Both stages' best checkpoints from a run folder, refused when they disagree with its class list, its
        input statistics, its backbone (``config.json``) or each other (a checkpoint copied from another run).

        Raises:
            DataError: naming the checkpoint and what disagrees.
            CheckpointError: ``classifier.pt`` was trained on another embedder's embeddings.
        """
        run_dir = Path(run_dir)
        prep = Preprocessing.load(run_dir / "preprocess.json")
        classifier = DenseClassifier.from_checkpoint(run_dir / "classifier.pt")
        if classifier.arch["n_classes"] != len(prep.classes):
            raise DataError(f"{run_dir}: classifier has {classifier.arch['n_classes']} classes but the run "
                            f"lists {len(prep.classes)}")
        embedder = EmbeddingNet.from_checkpoint(run_dir / "embedder.pt")
        check_embedder_fits(embedder, prep, run_dir)
        if embedder.arch["embedding_dim"] != classifier.arch["embedding_dim"]:
            raise DataError(f"{run_dir / 'embedder.pt'}: {embedder.arch['embedding_dim']}-d embeddings, but "
                            f"classifier.pt takes {classifier.arch['embedding_dim']}-d: not this run's checkpoints")
        check_trained_on(run_dir / "classifier.pt", embedder, run_dir / "embedder.pt")
        return cls(embedder, classifier).eval()


def check_embedder_fits(embedder: EmbeddingNet, prep: Preprocessing, run_dir: Path) -> None:
    """An ``embedder.pt`` whose input statistics or backbone are not the run's is another run's checkpoint."""
    path = run_dir / "embedder.pt"
    stats = (embedder.normalize.mean.flatten().tolist(), embedder.normalize.std.flatten().tolist())
    if not np.allclose(stats, (prep.mean, prep.std), rtol=0, atol=1e-6):
        raise DataError(f"{path}: input statistics {stats} differ from preprocess.json's {(prep.mean, prep.std)}: "
                        f"not this run's checkpoint")
    config = run_dir / "config.json"
    if config.is_file():
        backbone = read_json(config).get("model", {}).get("backbone")
        if backbone is not None and backbone != embedder.arch["backbone"]:
            raise DataError(f"{path}: a {embedder.arch['backbone']} checkpoint, but config.json trains a {backbone}: "
                            f"not this run's checkpoint")
