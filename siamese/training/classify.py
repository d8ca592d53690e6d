"""Stage 2: a dense classifier on frozen embeddings, and the k-NN vote beside it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import DataLoader, TensorDataset
from tqdm.auto import tqdm

from siamese.config import ClassifierConfig
from siamese.models.checkpoint import load_checkpoint, load_training_state, save_checkpoint, save_training_state
from siamese.models.classifier import DenseClassifier
from siamese.runtime.tracking import Tracker

LAST = "classifier_last.pt"
BEST = "classifier.pt"


class ClassifierTrainer:
    """Trains on precomputed embeddings (cheap: no backbone in the loop), keeping the best val epoch."""

    def __init__(self, n_classes: int, embedding_dim: int, cfg: ClassifierConfig, device: torch.device,
                 run_dir: Path, tracker: Tracker, seed: int = 0) -> None:
        self.model = DenseClassifier(embedding_dim, n_classes, cfg.hidden, cfg.dropout).to(device)
        self.cfg, self.device, self.run_dir, self.tracker, self.seed = cfg, device, run_dir, tracker, seed
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "best_epoch": None}
        self.checkpoint = run_dir / "checkpoints" / LAST

    def resume(self) -> None:
        """Continue from the last complete epoch, if there is one."""
        self.state = load_training_state(self.checkpoint, self.model, self.optimizer) or self.state

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
            y_val: np.ndarray) -> list[dict[str, Any]]:
        weight = None
        if self.cfg.class_weights:
            present = np.unique(y_train)
            full = np.ones(self.model.arch["n_classes"], dtype=np.float32)
            full[present] = compute_class_weight("balanced", classes=present, y=y_train)
            weight = torch.from_numpy(full).to(self.device)
        train = TensorDataset(torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train, dtype=torch.long))
        self.model.fit_standardization(train.tensors[0].to(self.device))
        val_x = torch.tensor(x_val, dtype=torch.float32, device=self.device)
        val_y = torch.tensor(y_val, dtype=torch.long, device=self.device)
        for epoch in tqdm(range(self.state["epoch"], self.cfg.epochs), desc="stage 2 (classifier)",
                          initial=self.state["epoch"], total=self.cfg.epochs):
            generator = torch.Generator().manual_seed(self.seed + epoch)
            loader = DataLoader(train, batch_size=self.cfg.batch_size, shuffle=True, generator=generator)
            self.model.train()
            total, seen = 0.0, 0
            for xb, yb in loader:
                xb, yb = xb.to(self.device), yb.to(self.device)
                loss = self.model.loss(self.model(xb), yb, weight)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += float(loss.detach()) * len(xb)
                seen += len(xb)
            self.model.eval()
            with torch.no_grad():
                logits = self.model(val_x)
                val_loss = float(self.model.loss(logits, val_y, weight))
                val_pred = self.model.probabilities(logits).argmax(dim=1).cpu().numpy()
            row = {"stage": "classifier", "epoch": epoch + 1, "loss": total / max(seen, 1), "val_loss": val_loss,
                   "val_accuracy": float((val_pred == y_val).mean()),
                   "val_balanced_accuracy": float(balanced_accuracy_score(y_val, val_pred))}
            self.record(row)
        return self.state["history"]

    def record(self, row: dict[str, Any]) -> None:
        state = self.state
        state["epoch"] = row["epoch"]
        state["history"].append(row)
        score = (row["val_balanced_accuracy"], -row["val_loss"])
        if state["best"] is None or score > tuple(state["best"]):
            state.update(best=list(score), best_epoch=row["epoch"])
            save_checkpoint({"arch": self.model.arch, "state": self.model.state_dict(), "epoch": row["epoch"]},
                            self.run_dir / BEST)
        save_training_state(self.checkpoint, self.model, self.optimizer, state)
        self.tracker.log({f"classifier/{k}": v for k, v in row.items() if k != "stage"})

    def load_best(self) -> DenseClassifier:
        payload = load_checkpoint(self.run_dir / BEST, self.model.arch)
        self.model.load_state_dict(payload["state"])
        return self.model.eval()


@torch.no_grad()
def predict_proba(model: DenseClassifier, embeddings: np.ndarray, device: torch.device) -> np.ndarray:
    model.eval()
    return model.probabilities(model(torch.from_numpy(embeddings).float().to(device))).cpu().numpy()


def knn_proba(x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, n_classes: int, k: int) -> np.ndarray:
    """k-NN vote shares in embedding space, as ``(N, n_classes)`` probabilities (absent classes get 0)."""
    knn = KNeighborsClassifier(n_neighbors=min(k, len(x_train))).fit(x_train, y_train)
    proba = np.zeros((len(x_test), n_classes))
    proba[:, knn.classes_] = knn.predict_proba(x_test)
    return proba
