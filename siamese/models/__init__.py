"""Networks: backbones (a registry: :mod:`siamese.models.registry`), the embedding net, the dense classifier,
and their checkpoints."""

from __future__ import annotations

import importlib
from typing import Any

# Exports load on first use (PEP 562): the configuration reads the backbone registry through this package,
# and the registry must not cost it torch.
_EXPORTS = {
    "WeightsUnavailableError": "backbones", "build_backbone": "backbones", "check_input_size": "backbones",
    "CheckpointError": "checkpoint", "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint",
    "check_trained_on": "checkpoint", "state_digest": "checkpoint",
    "DenseClassifier": "classifier", "EmbeddingNet": "embedder", "InputNormalization": "embedder",
    "BACKBONES": "registry", "register_backbone": "registry",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"siamese.models.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'siamese.models' has no attribute {name!r}")


__all__ = ["BACKBONES", "CheckpointError", "DenseClassifier", "EmbeddingNet", "InputNormalization",
           "WeightsUnavailableError", "build_backbone", "check_input_size", "check_trained_on", "load_checkpoint",
           "register_backbone", "save_checkpoint", "state_digest"]
