"""Stage 1's objective: a pytorch-metric-learning loss, an optional miner and an optional cross-entropy head.

The original design is :class:`~pytorch_metric_learning.losses.TripletMarginLoss` (margin 0.4) on triplets a
semi-hard :class:`~pytorch_metric_learning.miners.TripletMarginMiner` finds in each class-balanced batch. The
other losses are the library's, with its default parameters:

- pair and triplet losses, which take a miner: ``triplet``, ``contrastive`` (Hadsell et al. 2006),
  ``multi_similarity`` (Wang et al. 2019, paired with its own miner by default);
- losses over every pair of the batch, which take none: ``supcon`` (Khosla et al. 2020) and ``ntxent``
  (Chen et al. 2020, same-class images as positives);
- losses against learned class proxies or centres, which take none: ``arcface`` (Deng et al. 2019),
  ``subcenter_arcface`` (Deng et al. 2020, three centres a class) and ``proxy_anchor`` (Kim et al. 2020).

The proxies and centres are parameters of the loss. The library's docs give such a loss an optimiser of its
own; here they are their own parameter group of stage 1's Adam (the same thing, since Adam's state is per
parameter) at ``lr * loss_lr_scale``: Kim et al. train the proxies 100 times faster than the network.

``ce_weight`` > 0 adds a linear cross-entropy head on the embedding (a joint objective); it learns at ``lr``
and is dropped after stage 1, which keeps the two-stage design: a frozen embedding feeds the dense classifier.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.utils import distributed as pml_distributed
from torch import nn

from siamese.config import LOSSES, MINERS, EmbedTrainConfig, check_miner

DEFAULT_MINER = {"triplet": "semihard", "multi_similarity": "multi_similarity"}
"""The miner a loss gets when none is named: the original design's for the triplet loss, Wang et al.'s own for
theirs; every other loss ``none``."""


def default_miner(loss: str) -> str:
    """The miner ``loss`` trains with when none is asked for (:data:`DEFAULT_MINER`, else ``none``)."""
    return DEFAULT_MINER.get(loss, "none")


def check_objective(cfg: EmbedTrainConfig) -> None:
    """Raises ValueError, in one sentence, for an unknown loss or miner, a miner given to a loss that takes
    none, or a negative ``ce_weight``. ``cfg.miner`` None (the loss's default) is accepted."""
    if cfg.loss not in LOSSES:
        raise ValueError(f"unknown loss {cfg.loss!r}; choose from {list(LOSSES)}")
    if cfg.miner is not None and cfg.miner not in MINERS:
        raise ValueError(f"unknown miner {cfg.miner!r}; choose from {list(MINERS)}")
    check_miner(cfg.loss, cfg.miner)
    if cfg.ce_weight < 0:
        raise ValueError(f"--ce-weight must be 0 (none) or positive; got {cfg.ce_weight}")


def resolve_objective(cfg: EmbedTrainConfig) -> None:
    """Check ``cfg`` (:func:`check_objective`) and name the loss's default miner in it when none was asked for,
    so that ``config.json`` records the miner a run trained with."""
    check_objective(cfg)
    if cfg.miner is None:
        cfg.miner = default_miner(cfg.loss)


def build_loss(name: str, margin: float, n_classes: int, embedding_dim: int) -> losses.BaseMetricLossFunction:
    """The pytorch-metric-learning loss ``name`` (:data:`LOSSES`); ``margin`` is the triplet loss's, the
    proxy losses need the number of classes and the embedding's width. Raises ValueError for an unknown name."""
    factories: dict[str, Callable[[], losses.BaseMetricLossFunction]] = {
        "triplet": lambda: losses.TripletMarginLoss(margin=margin),
        "contrastive": losses.ContrastiveLoss,
        "multi_similarity": losses.MultiSimilarityLoss,
        "supcon": losses.SupConLoss,
        "ntxent": losses.NTXentLoss,
        "arcface": lambda: losses.ArcFaceLoss(n_classes, embedding_dim),
        "subcenter_arcface": lambda: losses.SubCenterArcFaceLoss(num_classes=n_classes, embedding_size=embedding_dim),
        "proxy_anchor": lambda: losses.ProxyAnchorLoss(n_classes, embedding_dim),
    }
    if name not in factories:
        raise ValueError(f"unknown loss {name!r}; choose from {list(LOSSES)}")
    return factories[name]()


def build_miner(name: str, margin: float) -> Any | None:
    """The miner ``name`` (:data:`MINERS`), None for ``none``: ``semihard`` triplets (negatives within the
    margin beyond the positive, as the original study mined), ``hard``: each anchor's hardest positive and
    negative (batch-hard, Hermans et al. 2017), ``multi_similarity``: Wang et al.'s informative pairs."""
    if name == "semihard":
        return miners.TripletMarginMiner(margin=margin, type_of_triplets="semihard")
    if name == "hard":
        return miners.BatchHardMiner()
    if name == "multi_similarity":
        return miners.MultiSimilarityMiner()
    if name == "none":
        return None
    raise ValueError(f"unknown miner {name!r}; choose from {list(MINERS)}")


class StageOneObjective(nn.Module):
    """The loss of one stage-1 batch: the metric loss on the (mined) batch, plus ``ce_weight`` times the
    cross-entropy of a linear head on the embedding.

    Under torchrun (``distributed``) the loss and miner are wrapped in pytorch-metric-learning's distributed
    wrappers, which gather the global batch; the objective's own parameters (proxies, centres, the head) are
    not in DistributedDataParallel, so :meth:`sync_gradients` averages their gradients over the ranks.
    """

    def __init__(self, cfg: EmbedTrainConfig, n_classes: int, embedding_dim: int, distributed: bool = False) -> None:
        super().__init__()
        check_objective(cfg)
        miner = cfg.miner or default_miner(cfg.loss)
        self.loss = build_loss(cfg.loss, cfg.margin, n_classes, embedding_dim)
        self.miner = build_miner(miner, cfg.margin)
        self.head = nn.Linear(embedding_dim, n_classes) if cfg.ce_weight > 0 else None
        self.ce_weight = cfg.ce_weight
        self.distributed = distributed
        self.metric_loss: nn.Module = pml_distributed.DistributedLossWrapper(self.loss) if distributed else self.loss
        self.mine = (pml_distributed.DistributedMinerWrapper(self.miner)
                     if distributed and self.miner is not None else self.miner)

    def parameter_groups(self, lr: float, loss_lr_scale: float) -> list[dict[str, Any]]:
        """Optimiser groups: the loss's proxies or centres at ``lr * loss_lr_scale``, the head at ``lr``;
        none for a loss without parameters and no head."""
        groups = []
        if own := list(self.loss.parameters()):
            groups.append({"params": own, "lr": lr * loss_lr_scale})
        if self.head is not None:
            groups.append({"params": list(self.head.parameters()), "lr": lr})
        return groups

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor | None, int]:
        """``(B, D)`` embeddings and ``(B,)`` labels to the batch's loss and the number of tuples the miner
        found (the batch size without a miner); the loss is None when the miner found nothing to learn from."""
        embeddings = embeddings.float()  # the proxies and the head are float32; autocast may hand bf16
        if self.mine is None:
            tuples, count = None, len(embeddings)
        else:
            tuples = self.mine(embeddings, labels)
            count = int(tuples[0].numel())
            if count == 0:
                return None, 0
        loss = self.metric_loss(embeddings, labels, tuples)
        if self.head is not None:
            loss = loss + self.ce_weight * nn.functional.cross_entropy(self.head(embeddings), labels)
        return loss, count

    def sync_gradients(self) -> None:
        """Average the objective's own gradients over the ranks (a no-op in one process). The distributed
        loss wrapper already computes the proxies' gradient on the global batch on every rank; the head's
        cross-entropy sees the local batch only, so its gradients differ between ranks until averaged."""
        if not self.distributed:
            return
        world = torch.distributed.get_world_size()
        for parameter in self.parameters():
            if parameter.grad is not None:
                torch.distributed.all_reduce(parameter.grad)
                parameter.grad /= world
