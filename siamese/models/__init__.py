"""Networks: backbones, the embedding net, the dense classifier, and their checkpoints."""

from siamese.models.backbones import WeightsUnavailableError, build_backbone, check_input_size
from siamese.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from siamese.models.classifier import DenseClassifier
from siamese.models.embedder import EmbeddingNet, InputNormalization

__all__ = ["CheckpointError", "DenseClassifier", "EmbeddingNet", "InputNormalization", "WeightsUnavailableError",
           "build_backbone", "check_input_size", "load_checkpoint", "save_checkpoint"]
