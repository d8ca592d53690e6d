"""torchvision backbones with their classifier removed, and every way of getting their weights.

``imagenet`` goes through torchvision's weights API (and its download cache); ``none`` is random
initialisation; any other value is a local state-dict file, which is how pretrained weights reach a
machine without internet.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from siamese.errors import WeightsUnavailableError

FEATURE_DIMS = {"inception_v3": 2048, "resnet50": 2048, "resnet18": 512}  # one per config.BACKBONES (tested)
MIN_INPUT_SIZE = {"inception_v3": 75, "resnet50": 32, "resnet18": 32}


def check_input_size(name: str, size: int) -> None:
    minimum = MIN_INPUT_SIZE.get(name, 1)
    if size < minimum:
        raise ValueError(f"{name} needs images of at least {minimum} px; got --image-size {size}")


def build_backbone(name: str, weights: str = "imagenet") -> tuple[nn.Module, int]:
    """A feature extractor returning ``(N, feature_dim)`` and that dimension."""
    if name not in FEATURE_DIMS:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(FEATURE_DIMS)}")
    extra = {"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}
    if weights == "imagenet":
        model = _download(name)
    else:
        model = models.get_model(name, weights=None, **extra)
        if weights != "none":
            _load_local(model, Path(weights), name)
    model.fc = nn.Identity()
    if name == "inception_v3":
        model.aux_logits = False
        model.AuxLogits = None
    return model, FEATURE_DIMS[name]


def _download(name: str) -> nn.Module:
    weights = models.get_model_weights(name).DEFAULT
    try:
        return models.get_model(name, weights=weights)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise WeightsUnavailableError(
            f"could not get ImageNet weights for {name} ({weights}): {exc}. Without internet, use "
            f"--weights none (random init), or --weights PATH to a local state dict (e.g. the file "
            f"{Path(weights.url).name} copied from a machine that has it, or placed in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'})."
        ) from exc


def _load_local(model: nn.Module, path: Path, name: str) -> None:
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: weights file not found (use --weights imagenet|none|PATH)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise WeightsUnavailableError(f"{path}: not a loadable state dict ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    result = model.load_state_dict(state, strict=False)
    missing = [k for k in result.missing_keys if not k.startswith(("fc.", "AuxLogits."))]
    if missing or len(result.unexpected_keys) > 0:
        raise WeightsUnavailableError(
            f"{path}: not a {name} state dict (missing {missing[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
