"""The ``finetune`` reference model: the run's backbone fine-tuned end to end with cross-entropy.

It is what a researcher with a pretrained backbone does first (and what two of the studies this project grew from
did), so the two-stage metric-learning design has to beat it to earn its cost. It gets the run's backbone and
weights, input size, input statistics and augmentation, and the budget of stage 1: the same epochs, batch size,
learning rates and their schedule (the backbone at ``lr * backbone_lr_scale``, the new linear head at ``lr``: the
usual discriminative rates of transfer learning, Howard & Ruder 2018), the same warm-up on a frozen backbone and
batch-norm policy. Batches are drawn class-balanced (each image with probability inversely proportional to its
class's size) from the whole training split; the epoch with the best validation balanced accuracy is kept (ties:
the earlier). Its scored predictions are averaged over the run's test-time views (``--tta``), as the embedder's
embeddings are. Its wall time is reported beside its figures.

Its predictions on the scored split are cached in ``RUN/references/finetune_SPLIT.npz`` (a rescore reuses
them); an interrupted fine-tuning starts over, since it is one reference among several.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler
from tqdm.auto import tqdm

from siamese.models.backbones import build_backbone
from siamese.models.embedder import InputNormalization, flip_views
from siamese.runtime.device import Compute, autocast, prepare_model, resolve_compute, to_device
from siamese.training.embeddings import cached_arrays
from siamese.training.metric_learning import set_training_mode
from siamese.training.schedules import set_scheduled_lr

if TYPE_CHECKING:
    from pathlib import Path

    from siamese.config import RunConfig
    from siamese.data.images import ImageDataset


class FinetuneNet(nn.Module):
    """uint8 images ``(N, 3, H, W)`` to class logits ``(N, n_classes)``: input normalisation, the backbone's
    pooled features, one linear layer."""

    def __init__(self, backbone: str, weights: str, n_classes: int, mean: tuple[float, ...],
                 std: tuple[float, ...]) -> None:
        super().__init__()
        self.normalize = InputNormalization(mean, std)
        self.backbone, features = build_backbone(backbone, weights)
        self.head = nn.Linear(features, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(self.normalize(x)))


@dataclass
class FinetuneResult:
    """Probabilities ``(N_scored, n_classes)`` on the scored split, wall time, best and trained epochs."""

    proba: np.ndarray
    seconds: float
    best_epoch: int
    epochs: int

    def note(self) -> str:
        return (f"fine-tuned end to end for {self.epochs} epoch(s) in {self.seconds:.0f} s; best epoch "
                f"{self.best_epoch} by validation balanced accuracy")


def balanced_sampler(targets: np.ndarray, seed: int) -> WeightedRandomSampler:
    """As many draws as images, each class equally likely (images weighted by 1 / their class's count)."""
    counts = np.bincount(targets)
    weights = torch.tensor(1.0 / counts[targets], dtype=torch.double)
    return WeightedRandomSampler(weights, len(targets), replacement=True,
                                 generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def predict(model: nn.Module, dataset: ImageDataset, device: torch.device, batch_size: int, compute: Compute,
            num_workers: int = 0, views: int = 1) -> np.ndarray:
    """Softmax probabilities ``(N, n_classes)`` of ``dataset`` in eval mode, in the run's memory format and
    precision (``compute``); with ``views`` > 1 (the run's ``--tta``), averaged over the images' flips
    (:func:`~siamese.models.embedder.flip_views`), as the embedder averages its embeddings."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    chunks = []
    for images, _ in loader:
        images = to_device(images, device, compute.channels_last)
        proba = []
        for view in flip_views(images, views):
            with autocast(device, compute.bf16):
                logits = model(view)
            proba.append(torch.softmax(logits.float(), dim=1))
        chunks.append(torch.stack(proba).mean(dim=0).cpu())
    return torch.cat(chunks).numpy()


def train_finetune(train: ImageDataset, val: ImageDataset, scored: ImageDataset, n_classes: int,
                   mean: tuple[float, ...], std: tuple[float, ...], config: RunConfig, device: torch.device
                   ) -> FinetuneResult:
    """Fine-tune ``config``'s backbone on ``train`` (augmented), keep its best epoch on ``val`` (un-augmented,
    one view) and return its probabilities on ``scored``, averaged over ``config.model.tta`` views; every
    forward pass in the run's memory format and precision (``config.compute``), like stage 1's. Raises
    WeightsUnavailableError when the backbone's weights cannot be had, like the run itself."""
    start = time.perf_counter()
    model, best_epoch = fit_finetune(train, val, n_classes, mean, std, config, device)
    compute = resolve_compute(config.compute, device)
    proba = predict(model, scored, device, config.embed.batch_size, compute, views=config.model.tta)
    return FinetuneResult(proba, time.perf_counter() - start, best_epoch, config.embed.epochs)


def fit_finetune(train: ImageDataset, val: ImageDataset, n_classes: int, mean: tuple[float, ...],
                 std: tuple[float, ...], config: RunConfig, device: torch.device) -> tuple[FinetuneNet, int]:
    """The fine-tuned network at its best validation epoch, and that epoch (see :func:`train_finetune`)."""
    cfg = config.embed
    compute = resolve_compute(config.compute, device)
    torch.manual_seed(config.seed)
    model = prepare_model(FinetuneNet(config.model.backbone, config.model.weights, n_classes, mean, std), device,
                          compute)
    backbone = list(model.backbone.parameters())
    own = {id(p) for p in backbone}
    optimizer = torch.optim.Adam([{"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale},
                                  {"params": [p for p in model.parameters() if id(p) not in own], "lr": cfg.lr}],
                                 lr=cfg.lr)
    best: tuple[float, int, dict[str, Any]] | None = None
    for epoch in tqdm(range(cfg.epochs), desc="finetune reference", leave=False):
        set_training_mode(model, cfg, frozen=epoch < cfg.frozen_epochs)
        loader = DataLoader(train, batch_size=cfg.batch_size, sampler=balanced_sampler(train.targets,
                                                                                        config.seed + epoch),
                            drop_last=len(train) > cfg.batch_size, num_workers=config.data.num_workers)
        for step, (images, labels) in enumerate(loader):
            set_scheduled_lr(optimizer, cfg.lr_schedule, epoch, step, len(loader), cfg.epochs)
            images, labels = to_device(images, device, compute.channels_last), labels.to(device)
            with autocast(device, compute.bf16):
                logits = model(images)
            loss = nn.functional.cross_entropy(logits.float(), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        val_proba = predict(model, val, device, cfg.batch_size, compute)
        score = balanced_accuracy_score(val.targets, val_proba.argmax(axis=1))
        if best is None or score > best[0]:
            best = (score, epoch + 1, copy.deepcopy(model.state_dict()))
    if best is None:
        raise ValueError("the finetune reference needs at least one epoch (--epochs-embed)")
    model.load_state_dict(best[2])
    return model, best[1]


def finetune_reference(run_dir: Path, datasets: dict[str, ImageDataset], *, scored: str, n_classes: int,
                       mean: tuple[float, ...], std: tuple[float, ...], image_ids: np.ndarray, config: RunConfig,
                       device: torch.device) -> FinetuneResult:
    """:func:`train_finetune` on ``datasets['train']`` / ``['val']``, scored on ``datasets[scored]`` (``test``,
    or ``val`` for a final model, whose figure is then optimistic like the two stages'); read back from
    ``RUN/references/finetune_SPLIT.npz`` when it holds the same ``image_ids``."""
    folder = run_dir / "references"
    folder.mkdir(exist_ok=True)

    def compute() -> dict[str, np.ndarray]:
        result = train_finetune(datasets["train"], datasets["val"], datasets[scored], n_classes, mean, std,
                                config, device)
        return {"proba": result.proba, "seconds": np.asarray(result.seconds),
                "best_epoch": np.asarray(result.best_epoch), "epochs": np.asarray(result.epochs)}

    stored = cached_arrays(folder / f"finetune_{scored}.npz", np.asarray(image_ids, dtype=str), compute)
    return FinetuneResult(stored["proba"], float(stored["seconds"]), int(stored["best_epoch"]),
                          int(stored["epochs"]))
