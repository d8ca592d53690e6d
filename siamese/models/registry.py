"""Every backbone by name, one entry each: its feature width, the smallest input it takes and, for the
ResNets, each stage's width; and the other named choices the model settings accept.

A backbone is added by registering it here (as timm's ``register_model`` does for a network), beside the way
:func:`siamese.models.backbones.build_backbone` builds it::

    register_backbone("resnet34", feature_dim=512, min_input_size=32, stage_dims=(64, 128, 256, 512))

The ``--backbone`` choices, :func:`~siamese.models.backbones.build_backbone`'s checks and the input-size
check all read this table. It imports nothing heavy: the configuration lists the names without torch.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Backbone:
    """One registered backbone.

    Attributes:
        name: the ``--backbone`` value (torchvision's model name, or ``efficientnet_lite0/1/2``).
        feature_dim: the width of its pooled features (``(N, feature_dim)``).
        min_input_size: the smallest image side in pixels it takes.
        stage_dims: each stage's width where ``--pooling stages`` applies (ResNets); None where it does not.
    """

    name: str
    feature_dim: int
    min_input_size: int
    stage_dims: tuple[int, ...] | None = None


BACKBONE_REGISTRY: dict[str, Backbone] = {}


def register_backbone(name: str, *, feature_dim: int, min_input_size: int,
                      stage_dims: tuple[int, ...] | None = None) -> Backbone:
    """Registers backbone ``name``.

    Args:
        name: the ``--backbone`` value; must not be registered already.
        feature_dim: the width of its pooled features.
        min_input_size: the smallest image side in pixels it takes.
        stage_dims: each stage's width, for ``--pooling stages``.

    Returns:
        The entry.

    Raises:
        ValueError: ``name`` is registered already.
    """
    if name in BACKBONE_REGISTRY:
        raise ValueError(f"backbone {name!r} is registered already")
    BACKBONE_REGISTRY[name] = entry = Backbone(name, feature_dim, min_input_size, stage_dims)
    return entry


def backbone_entry(name: str) -> Backbone:
    """The registered backbone ``name``.

    Raises:
        ValueError: no backbone of that name is registered (the message lists those that are).
    """
    try:
        return BACKBONE_REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONE_REGISTRY)}") from None


register_backbone("inception_v3", feature_dim=2048, min_input_size=75)
register_backbone("resnet50", feature_dim=2048, min_input_size=32, stage_dims=(256, 512, 1024, 2048))
register_backbone("resnet18", feature_dim=512, min_input_size=32, stage_dims=(64, 128, 256, 512))
for _lite in ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"):
    register_backbone(_lite, feature_dim=1280, min_input_size=32)

BACKBONES = tuple(BACKBONE_REGISTRY)
"""The registered names, in registration order (the ``--backbone`` choices)."""
POOLINGS = ("last", "stages")
SEG_ENCODERS = ("resnet18", "resnet34", "resnet50", "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")
"""The U-Net encoders of ``segment train`` (segmentation-models-pytorch's names; EfficientNet-Lite through timm)."""
CLASSIFIER_INPUTS = ("embedding", "embedding+colour")
"""What the stage-2 classifier reads: the embedding, or the embedding followed by the image's 66 colour
statistics (:func:`siamese.models.colour.colour_statistics`, the ``colour_baseline``'s features)."""
