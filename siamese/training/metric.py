"""Stage 1: triplet metric learning with semi-hard mining on class-balanced batches."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning import losses, miners
from pytorch_metric_learning.distances import LpDistance
from pytorch_metric_learning.utils.accuracy_calculator import AccuracyCalculator
from pytorch_metric_learning.utils.inference import CustomKNN
from sklearn.neighbors import KNeighborsClassifier
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from siamese.config import EmbedTrainConfig
from siamese.data.balance import class_balanced_sampler
from siamese.data.images import ImageDataset
from siamese.models.checkpoint import load_checkpoint, save_checkpoint
from siamese.models.embedder import EmbeddingNet
from siamese.runtime import autocast, to_device
from siamese.training.embeddings import compute_embeddings
from siamese.training.tracking import Tracker

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


class MetricTrainer:
    """Runs stage 1 epoch by epoch, checkpointing after each so an interruption loses nothing."""

    def __init__(self, model: EmbeddingNet, data: MetricData, cfg: EmbedTrainConfig, device: torch.device,
                 run_dir: Path, tracker: Tracker, amp: bool = True, channels_last: bool = False,
                 num_workers: int = 0, seed: int = 0) -> None:
        self.model, self.data, self.cfg, self.device = model.to(device), data, cfg, device
        self.run_dir, self.tracker = run_dir, tracker
        self.amp, self.channels_last, self.num_workers, self.seed = amp, channels_last, num_workers, seed
        if channels_last and device.type == "cuda":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.loss = losses.TripletMarginLoss(margin=cfg.margin)
        self.miner = miners.TripletMarginMiner(margin=cfg.margin, type_of_triplets=cfg.triplets)
        self.state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "best_epoch": None,
                                      "bad_epochs": 0, "done": False}
        self.checkpoint = run_dir / "checkpoints" / LAST

    def resume(self) -> None:
        """Continue from the last complete epoch, if there is one."""
        if not self.checkpoint.is_file():
            return
        payload = load_checkpoint(self.checkpoint, self.model.arch)
        self.model.load_state_dict(payload["state"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.state = payload["progress"]

    def fit(self) -> list[dict[str, Any]]:
        epochs = range(self.state["epoch"], self.cfg.epochs)
        for epoch in tqdm(epochs, desc="stage 1 (triplet)", initial=self.state["epoch"], total=self.cfg.epochs):
            if self.state["done"]:
                break
            row = {"stage": "embed", "epoch": epoch + 1, **self.train_epoch(epoch), **self.validate()}
            self.record(row)
        self.state["done"] = True
        self.save_last()
        return self.state["history"]

    def train_epoch(self, epoch: int) -> dict[str, float]:
        np.random.seed(self.seed + epoch)  # pml's MPerClassSampler draws from numpy's global RNG
        torch.manual_seed(self.seed + epoch)
        sampler = class_balanced_sampler(self.data.train.targets, self.cfg.batch_size, self.cfg.m_per_class)
        loader = DataLoader(self.data.train, batch_size=self.cfg.batch_size, sampler=sampler, drop_last=True,
                            num_workers=self.num_workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        self.model.train()
        losses_, triplets, empty = [], [], 0
        for images, labels in tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=None):
            images = to_device(images, self.device, self.channels_last)
            labels = labels.to(self.device)
            with autocast(self.device, self.amp):
                embeddings = self.model(images)
            mined = self.miner(embeddings, labels)
            count = int(mined[0].numel())
            triplets.append(count)
            if count == 0:
                empty += 1
                continue
            loss = self.loss(embeddings, labels, mined)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            losses_.append(float(loss.detach()))
            self.tracker.log({"embed/batch_loss": losses_[-1], "embed/batch_triplets": count})
        batches = max(len(triplets), 1)
        return {"loss": float(np.mean(losses_)) if losses_ else float("nan"),
                "triplets": int(np.sum(triplets)), "triplets_per_batch": float(np.mean(triplets or [0])),
                "empty_batch_fraction": empty / batches}

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
        save_checkpoint({"arch": self.model.arch, "state": self.model.state_dict(),
                         "optimizer": self.optimizer.state_dict(), "progress": self.state}, self.checkpoint)
