"""Stage 1: metric learning on class-balanced batches (by default triplets with semi-hard mining)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from sklearn.neighbors import KNeighborsClassifier
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from siamese.config import EmbedTrainConfig
from siamese.data.balance import DistributedClassBalancedSampler, class_balanced_sampler
from siamese.data.images import ImageDataset
from siamese.models.checkpoint import load_training_state, save_checkpoint, save_training_state
from siamese.models.embedder import EmbeddingNet
from siamese.runtime.device import Compute, autocast, prepare_model, to_device
from siamese.runtime.distributed import DistContext, parameter_digest
from siamese.runtime.tracking import Tracker
from siamese.training.embeddings import compute_embeddings
from siamese.training.losses import StageOneObjective
from siamese.training.schedules import set_scheduled_lr

LAST = "embed_last.pt"
BEST = "embedder.pt"


@dataclass
class MetricData:
    """Augmented training images, plus un-augmented val queries and train references for retrieval."""

    train: ImageDataset
    val: ImageDataset
    reference: ImageDataset


def retrieval_metrics(query: np.ndarray, query_labels: np.ndarray, reference: np.ndarray,
                      reference_labels: np.ndarray, knn_k: int) -> dict[str, float]:
    """precision@1 and MAP@R (pytorch-metric-learning) and k-NN accuracy (scikit-learn), val against train."""
    calculator = AccuracyCalculator(include=("precision_at_1", "mean_average_precision_at_r"),
                                    k="max_bin_count", knn_func=CustomKNN(LpDistance()))
    scores = calculator.get_accuracy(torch.tensor(query), torch.tensor(query_labels),
                                     torch.tensor(reference), torch.tensor(reference_labels))
    knn = KNeighborsClassifier(n_neighbors=min(knn_k, len(reference))).fit(reference, reference_labels)
    return {"val_precision_at_1": float(scores["precision_at_1"]),
            "val_map_at_r": float(scores["mean_average_precision_at_r"]),
            "val_knn_accuracy": float(knn.score(query, query_labels))}


def parameter_groups(model: EmbeddingNet, cfg: EmbedTrainConfig) -> list[dict[str, Any]]:
    """The backbone at ``lr * backbone_lr_scale``, everything else (head, colour branch) at ``lr``: a pretrained
    backbone needs small steps not to forget ImageNet, a new head large ones (the usual discriminative
    learning rates of transfer learning, Howard & Ruder 2018)."""
    backbone = list(model.backbone.parameters())
    own = {id(p) for p in backbone}
    return [{"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale},
            {"params": [p for p in model.parameters() if id(p) not in own], "lr": cfg.lr}]


def set_training_mode(model: EmbeddingNet, cfg: EmbedTrainConfig, frozen: bool) -> None:
    """Training mode for one epoch: during the ``frozen_epochs`` warm-up the backbone neither learns nor
    updates its batch statistics (only the head trains); with ``freeze_bn`` its batch norms keep their running
    statistics throughout, since the few images of a small-batch step estimate them poorly."""
    model.train()
    for parameter in model.backbone.parameters():
        parameter.requires_grad_(not frozen)
    if frozen:
        model.backbone.eval()
    elif cfg.freeze_bn:
        for module in model.backbone.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()


class MetricTrainer:
    """Runs stage 1 epoch by epoch, checkpointing after each so an interruption loses nothing.

    The loss, miner and optional cross-entropy head are ``cfg``'s (:class:`StageOneObjective`). Under
    torchrun the model is wrapped in DistributedDataParallel, the miner and loss in pytorch-metric-learning's
    distributed wrappers (tuples are mined over the global batch), and only rank 0 validates and writes; the
    others receive its progress so they stop together.
    """

    def __init__(self, model: EmbeddingNet, data: MetricData, cfg: EmbedTrainConfig, *, device: torch.device,
                 run_dir: Path, tracker: Tracker, amp: bool = True, channels_last: bool = False,
                 num_workers: int = 0, seed: int = 0, dist: DistContext | None = None,
                 compile_model: bool = False) -> None:
        self.model = prepare_model(model, device, Compute(channels_last, amp))
        self.data, self.cfg, self.device = data, cfg, device
        self.run_dir, self.tracker = run_dir, tracker
        self.amp, self.channels_last, self.num_workers, self.seed = amp, channels_last, num_workers, seed
        self.dist = dist or DistContext()
        n_classes = int(max(data.train.targets.max(), data.val.targets.max())) + 1
        self.objective = StageOneObjective(cfg, n_classes, model.arch["embedding_dim"], self.dist.enabled).to(device)
        self.optimizer = torch.optim.Adam(parameter_groups(self.model, cfg)
                                          + self.objective.parameter_groups(cfg.lr, cfg.loss_lr_scale), lr=cfg.lr)
        self.compile_model = compile_model
        self.forward = torch.compile(self.model) if compile_model and not self.dist.enabled else self.model
        self.wrapped_frozen: bool | None = None  # the backbone state the DDP wrapper was built for
        self.state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "best_epoch": None,
                                      "bad_epochs": 0, "done": False}
        self.checkpoint = run_dir / "checkpoints" / LAST

    def resume(self) -> None:
        """Continue from the last complete epoch, if there is one."""
        saved = load_training_state(self.checkpoint, self.model, self.optimizer)
        if saved is not None:
            self.objective.load_state_dict(saved.pop("objective", {}))  # runs saved before it had state
            self.state = saved

    def loader(self) -> DataLoader:
        targets = self.data.train.targets
        if self.dist.enabled:
            sampler = DistributedClassBalancedSampler(targets, self.cfg.batch_size, self.dist.world_size,
                                                      self.dist.rank, self.cfg.m_per_class)
            batch = self.cfg.batch_size // self.dist.world_size
        else:
            sampler = class_balanced_sampler(targets, self.cfg.batch_size, self.cfg.m_per_class)
            batch = self.cfg.batch_size
        return DataLoader(self.data.train, batch_size=batch, sampler=sampler, drop_last=True,
                          num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                          persistent_workers=self.num_workers > 0)

    def fit(self) -> list[dict[str, Any]]:
        loader = self.loader()
        epochs = range(self.state["epoch"], self.cfg.epochs)
        bar = tqdm(epochs, desc=f"stage 1 ({self.cfg.loss})", initial=self.state["epoch"], total=self.cfg.epochs,
                   disable=not self.dist.is_main)
        for epoch in bar:
            if self.state["done"]:
                break
            trained = self.train_epoch(epoch, loader)
            if self.dist.is_main:
                self.record({"stage": "embed", "epoch": epoch + 1, **trained, **self.validate()})
            self.state = self.dist.broadcast(self.state)
        self.state["done"] = True
        if self.dist.is_main:
            self.save_last()
        if self.dist.enabled:
            self.check_ranks_agree()
        self.dist.barrier()
        return self.state["history"]

    def check_ranks_agree(self) -> None:
        """DDP keeps replicas identical; verify it rather than trust it, and leave the evidence on disk. The
        objective's own parameters (proxies, the cross-entropy head) are outside DDP, so they are checked too."""
        digests = self.dist.gather(f"{parameter_digest(self.model)} {parameter_digest(self.objective)}")
        if self.dist.is_main:
            evidence = {"backend": torch.distributed.get_backend(), "world_size": self.dist.world_size,
                        "digests": digests}
            (self.run_dir / "checkpoints" / "rank_digests.json").write_text(json.dumps(evidence, indent=2) + "\n")
        if len(set(digests)) != 1:
            raise RuntimeError(f"ranks disagree on the stage-1 weights after training: {digests}")

    def wrap(self, frozen: bool) -> None:
        """Under torchrun, wrap the model in DistributedDataParallel for the parameters this epoch trains. DDP
        registers the parameters that require gradients when it is built and waits for every one of them in
        each step, so the frozen-backbone warm-up and the epochs after it each need their own wrapper."""
        if not self.dist.enabled or self.wrapped_frozen == frozen:
            return
        ddp = DistributedDataParallel(self.model, device_ids=[self.device.index] if self.device.type == "cuda"
                                      else None)
        self.forward = torch.compile(ddp) if self.compile_model else ddp
        self.wrapped_frozen = frozen

    def train_epoch(self, epoch: int, loader: DataLoader) -> dict[str, float]:
        np.random.seed(self.seed + epoch)  # pml's MPerClassSampler draws from numpy's global RNG
        torch.manual_seed(self.seed + epoch)
        frozen = epoch < self.cfg.frozen_epochs
        set_training_mode(self.model, self.cfg, frozen=frozen)
        self.wrap(frozen)
        losses_, triplets, empty, waiting = [], [], 0, 0.0
        start = ready = time.perf_counter()
        for step, (images, labels) in enumerate(tqdm(loader, desc=f"epoch {epoch + 1}", leave=False,
                                                     disable=None if self.dist.is_main else True)):
            waiting += time.perf_counter() - ready
            set_scheduled_lr(self.optimizer, self.cfg.lr_schedule, epoch, step, len(loader), self.cfg.epochs)
            images = to_device(images, self.device, self.channels_last)
            labels = labels.to(self.device, non_blocking=True)
            with autocast(self.device, self.amp):
                embeddings = self.forward(images)
            loss, count = self.objective(embeddings, labels)
            triplets.append(count)
            if loss is None:
                empty += 1
                ready = time.perf_counter()
                continue
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.objective.sync_gradients()
            self.optimizer.step()
            losses_.append(float(loss.detach()))
            self.tracker.log({"embed/batch_loss": losses_[-1], "embed/batch_triplets": count})
            ready = time.perf_counter()
        seconds = time.perf_counter() - start
        batches = max(len(triplets), 1)
        return {"loss": float(np.mean(losses_)) if losses_ else float("nan"),
                "triplets": int(np.sum(triplets)), "triplets_per_batch": float(np.mean(triplets or [0])),
                "empty_batch_fraction": empty / batches, "seconds": seconds,
                "lr": self.optimizer.param_groups[1]["lr"],  # the head's (parameter_groups: backbone, head)
                "images_per_second": len(triplets) * loader.batch_size * self.dist.world_size / max(seconds, 1e-9),
                "data_wait_fraction": waiting / max(seconds, 1e-9)}

    def embed(self, dataset: ImageDataset, name: str) -> np.ndarray:
        return compute_embeddings(self.model, dataset, self.device, self.cfg.batch_size, self.num_workers, name,
                                  self.amp, self.channels_last)

    def validate(self) -> dict[str, float]:
        query, reference = self.embed(self.data.val, "val"), self.embed(self.data.reference, "reference")
        return retrieval_metrics(query, self.data.val.targets, reference, self.data.reference.targets,
                                 self.cfg.knn_k)

    def record(self, row: dict[str, Any]) -> None:
        state = self.state
        score = row[f"val_{self.cfg.monitor}"]
        state["epoch"] = row["epoch"]
        state["history"].append(row)
        if state["best"] is None or score > state["best"]:
            state.update(best=score, best_epoch=row["epoch"], bad_epochs=0)
            save_checkpoint({"arch": self.model.arch, "state": self.model.state_dict(), "epoch": row["epoch"],
                             "monitor": self.cfg.monitor, "score": score}, self.run_dir / BEST)
        else:
            state["bad_epochs"] += 1
        state["done"] = state["bad_epochs"] >= self.cfg.patience
        self.save_last()
        self.tracker.log({f"embed/{k}": v for k, v in row.items() if k != "stage"})

    def save_last(self) -> None:
        save_training_state(self.checkpoint, self.model, self.optimizer,
                            {**self.state, "objective": self.objective.state_dict()})
