"""Stage 0 (optional): SimCLR-style self-supervised pre-training of the embedder on the training images.

Without ImageNet weights a backbone starts from noise, and a triplet loss over a hundred labelled images
has little to shape it with. Two augmented views of each image, pulled together and pushed from every
other image's views by pytorch-metric-learning's NT-Xent loss (``SelfSupervisedLoss`` pairs the views),
teach it what stays the same under rotation, cropping and lighting before any label is used. Only the
training split is used, never the images the run is scored on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from pytorch_metric_learning import losses
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from siamese.config import EmbedTrainConfig
from siamese.data.images import ImageDataset
from siamese.models.checkpoint import load_training_state, save_training_state
from siamese.models.embedder import EmbeddingNet
from siamese.runtime.device import Compute, autocast, prepare_model, to_device
from siamese.runtime.tracking import Tracker

LAST = "selfsup_last.pt"


class TwoViews(Dataset):
    """Two independently augmented views of each image (the labels are never read)."""

    def __init__(self, images: ImageDataset) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i][0], self.images[i][0]


class SelfSupervisedTrainer:
    """NT-Xent on pairs of views, epoch by epoch, checkpointed so an interruption loses nothing."""

    def __init__(self, model: EmbeddingNet, images: ImageDataset, cfg: EmbedTrainConfig, *, device: torch.device,
                 run_dir: Path, tracker: Tracker, amp: bool = True, channels_last: bool = False,
                 num_workers: int = 0, seed: int = 0) -> None:
        self.model = prepare_model(model, device, Compute(channels_last, amp))
        self.images, self.cfg, self.device = images, cfg, device
        self.tracker, self.amp, self.channels_last = tracker, amp, channels_last
        self.num_workers, self.seed = num_workers, seed
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.loss = losses.SelfSupervisedLoss(losses.NTXentLoss(temperature=cfg.ssl_temperature))
        self.state: dict[str, Any] = {"epoch": 0, "history": []}
        self.checkpoint = run_dir / "checkpoints" / LAST

    def resume(self) -> None:
        self.state = load_training_state(self.checkpoint, self.model, self.optimizer) or self.state

    def fit(self) -> list[dict[str, Any]]:
        batch = min(self.cfg.batch_size, len(self.images))
        for epoch in tqdm(range(self.state["epoch"], self.cfg.ssl_epochs), desc="stage 0 (self-supervised)",
                          initial=self.state["epoch"], total=self.cfg.ssl_epochs):
            generator = torch.Generator().manual_seed(self.seed + epoch)
            torch.manual_seed(self.seed + epoch)
            loader = DataLoader(TwoViews(self.images), batch_size=batch, shuffle=True, drop_last=True,
                                generator=generator, num_workers=self.num_workers,
                                pin_memory=self.device.type == "cuda")
            self.model.train()
            values = []
            for first, second in tqdm(loader, desc=f"epoch {epoch + 1}", leave=False, disable=None):
                with autocast(self.device, self.amp):
                    a = self.model(to_device(first, self.device, self.channels_last))
                    b = self.model(to_device(second, self.device, self.channels_last))
                loss = self.loss(a, b)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                values.append(float(loss.detach()))
            row = {"stage": "selfsup", "epoch": epoch + 1, "loss": float(np.mean(values))}
            self.state["epoch"] = epoch + 1
            self.state["history"].append(row)
            save_training_state(self.checkpoint, self.model, self.optimizer, self.state)
            self.tracker.log({"selfsup/loss": row["loss"], "selfsup/epoch": epoch + 1})
        return self.state["history"]
