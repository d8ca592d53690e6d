"""Stage 2: a dense classifier on frozen embeddings, and the k-NN vote beside it.

The classifier is trained once per weight decay in ``ClassifierConfig.weight_decays`` (Adam, an L2 penalty on
the weights, not the biases) on the oversampled training split; the (weight decay, epoch) with the best
validation score is kept, so the strength of the penalty is chosen on the validation split as
scikit-learn's ``LogisticRegressionCV`` chooses C. With ``logit_adjustment`` the kept model's logits are
then shifted by ``-tau * log(training class shares)`` (Menon et al. 2021, "Long-tail learning via logit
adjustment", post-hoc form), tau chosen on the validation split for balanced accuracy.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sklearn.metrics import balanced_accuracy_score
from sklearn.neighbors import KNeighborsClassifier
from sklearn.utils.class_weight import compute_class_weight
from tqdm.auto import tqdm

from siamese.config import ClassifierConfig
from siamese.models.checkpoint import load_checkpoint, load_training_state, save_checkpoint, save_training_state
from siamese.models.classifier import DenseClassifier
from siamese.runtime.tracking import Tracker

LAST = "classifier_last.pt"
BEST = "classifier.pt"
TAUS = np.round(np.arange(-1.0, 2.01, 0.1), 2)
"""The logit-adjustment strengths tried on the validation split (0: no adjustment)."""


SELECTIONS = ("balanced_accuracy", "loss")


def check_classifier_settings(cfg: ClassifierConfig) -> None:
    """Raises ValueError naming a stage-2 setting that cannot train: no weight decay to try, a negative or
    infinite one, a hidden size below 1, an unknown selection."""
    if not cfg.weight_decays or not all(math.isfinite(w) and w >= 0 for w in cfg.weight_decays):
        raise ValueError(f"--weight-decays must be one or more finite values of at least 0; got {cfg.weight_decays}")
    if any(size < 1 for size in cfg.hidden):
        raise ValueError(f"--classifier-hidden sizes must be at least 1; got {cfg.hidden}")
    if cfg.select not in SELECTIONS:
        raise ValueError(f"classifier.select must be one of {SELECTIONS}; got {cfg.select!r}")


def balanced_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """``(n_classes,)`` float32 weights that make every class present in ``y`` count equally (absent: 1)."""
    present = np.unique(y)
    full = np.ones(n_classes, dtype=np.float32)
    full[present] = compute_class_weight("balanced", classes=present, y=y)
    return full


class ClassifierTrainer:
    """Trains on precomputed embeddings (cheap: no backbone in the loop), with ``cfg.inputs ==
    "embedding+colour"`` each followed by its image's colour statistics, one model per weight decay, keeping
    the best (weight decay, epoch) on the validation split (:meth:`score`). ``embedder_digest``
    (:func:`~siamese.models.checkpoint.state_digest` of the embedder that made the embeddings) is saved in
    ``classifier.pt``, so a run's two checkpoints are known to belong together."""

    def __init__(self, n_classes: int, embedding_dim: int, *, cfg: ClassifierConfig, device: torch.device,
                 run_dir: Path, tracker: Tracker, seed: int = 0, embedder_digest: str | None = None) -> None:
        check_classifier_settings(cfg)
        self.embedder_digest = embedder_digest
        self.n_classes, self.embedding_dim = n_classes, embedding_dim
        self.cfg, self.device, self.run_dir, self.tracker, self.seed = cfg, device, run_dir, tracker, seed
        self.model, self.optimizer = self._candidate(0)
        self.state: dict[str, Any] = {"epoch": 0, "history": [], "best": None, "best_epoch": None,
                                      "best_weight_decay": None}
        self.checkpoint = run_dir / "checkpoints" / LAST

    def _candidate(self, index: int) -> tuple[DenseClassifier, torch.optim.Optimizer]:
        """A freshly initialised model (seeded by its place in the grid) and its optimiser, the penalty on the
        weight matrices alone."""
        torch.manual_seed(self.seed + index)
        model = DenseClassifier(self.embedding_dim, self.n_classes, self.cfg.hidden, self.cfg.dropout,
                                colour_inputs=self.cfg.inputs == "embedding+colour").to(self.device)
        weights = [p for p in model.parameters() if p.ndim > 1]
        biases = [p for p in model.parameters() if p.ndim <= 1]
        optimizer = torch.optim.Adam([{"params": weights, "weight_decay": self.cfg.weight_decays[index]},
                                      {"params": biases, "weight_decay": 0.0}], lr=self.cfg.lr)
        return model, optimizer

    def resume(self) -> None:
        """Continue from the last complete epoch, if there is one."""
        self.state = load_training_state(self.checkpoint, self.model, self.optimizer) or self.state

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray,
            y_val: np.ndarray) -> list[dict[str, Any]]:
        """Train every weight decay for ``cfg.epochs`` on ``x_train`` ``(N, D)`` (``D``: the model's
        :attr:`~siamese.models.classifier.DenseClassifier.input_width`) / ``y_train`` ``(N,)`` class
        indices, scoring each epoch on the validation split; returns the history (one row per epoch and
        weight decay). ``classifier.pt`` holds the best model; :meth:`load_best` returns it.

        Raises:
            ValueError: the inputs are not as wide as ``cfg.inputs`` makes the model's.
        """
        for name, part in (("training", x_train), ("validation", x_val)):
            if part.ndim != 2 or part.shape[1] != self.model.input_width:
                raise ValueError(f"stage 2 reads {self.model.input_width} values per image ({self.cfg.inputs}); "
                                 f"the {name} inputs have shape {part.shape}")
        weight = None
        if self.cfg.class_weights:
            weight = torch.from_numpy(balanced_weights(y_train, self.n_classes)).to(self.device)
        # The validation loss weighs each class equally, as the oversampled training split does.
        val_weight = torch.from_numpy(balanced_weights(y_val, self.n_classes)).to(self.device)
        x, y = torch.tensor(x_train, dtype=torch.float32), torch.tensor(y_train, dtype=torch.long)
        val_x = torch.tensor(x_val, dtype=torch.float32, device=self.device)
        val_y = torch.tensor(y_val, dtype=torch.long, device=self.device)
        epochs, total_epochs = self.cfg.epochs, self.cfg.epochs * len(self.cfg.weight_decays)
        self.model.fit_standardization(x.to(self.device))
        for step in tqdm(range(self.state["epoch"], total_epochs), desc="stage 2 (classifier)",
                         initial=self.state["epoch"], total=total_epochs):
            index, epoch = divmod(step, epochs)
            if epoch == 0:
                self.model, self.optimizer = self._candidate(index)
                self.model.fit_standardization(x.to(self.device))
            order = torch.randperm(len(x), generator=torch.Generator().manual_seed(self.seed + step))
            self.model.train()
            total, seen = 0.0, 0
            for batch in order.split(self.cfg.batch_size):
                xb, yb = x[batch].to(self.device), y[batch].to(self.device)
                loss = self.model.loss(self.model(xb), yb, weight)
                self.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                self.optimizer.step()
                total += float(loss.detach()) * len(xb)
                seen += len(xb)
            self.model.eval()
            with torch.no_grad():
                logits = self.model(val_x)
                val_loss = float(self.model.loss(logits, val_y, val_weight))
                val_pred = self.model.probabilities(logits).argmax(dim=1).cpu().numpy()
            row = {"stage": "classifier", "epoch": epoch + 1, "weight_decay": self.cfg.weight_decays[index],
                   "loss": total / max(seen, 1), "val_loss": val_loss,
                   "val_accuracy": float((val_pred == y_val).mean()),
                   "val_balanced_accuracy": float(balanced_accuracy_score(y_val, val_pred))}
            self.record(step + 1, row)
        return self.state["history"]

    def score(self, row: dict[str, Any]) -> tuple[float, ...]:
        """What picks the kept model, higher better: the class-balanced validation loss (``select: loss``),
        or the validation balanced accuracy, ties broken by that loss (``select: balanced_accuracy``)."""
        if self.cfg.select == "loss":
            return (-row["val_loss"],)
        return row["val_balanced_accuracy"], -row["val_loss"]

    def record(self, step: int, row: dict[str, Any]) -> None:
        state = self.state
        state["epoch"] = step
        state["history"].append(row)
        score = self.score(row)
        if state["best"] is None or score > tuple(state["best"]):
            state.update(best=list(score), best_epoch=row["epoch"], best_weight_decay=row["weight_decay"])
            save_checkpoint({"arch": self.model.arch, "state": self.model.state_dict(), "epoch": row["epoch"],
                             "weight_decay": row["weight_decay"], "embedder_digest": self.embedder_digest},
                            self.run_dir / BEST)
        save_training_state(self.checkpoint, self.model, self.optimizer, state)
        self.tracker.log({f"classifier/{k}": v for k, v in row.items() if k != "stage"})

    def load_best(self) -> DenseClassifier:
        payload = load_checkpoint(self.run_dir / BEST, self.model.arch)
        self.model.load_state_dict(payload["state"])
        return self.model.eval()

    def adjust_logits(self, model: DenseClassifier, x_val: np.ndarray, y_val: np.ndarray,
                      y_train: np.ndarray) -> float:
        """Fit the logit adjustment of the kept ``model`` on the validation split, store it in the model and in
        ``classifier.pt``, and return tau. ``y_train``: the training split's class indices before
        oversampling (their shares are the prior)."""
        logits = predict_logits(model, x_val, self.device)
        tau, offset = fit_logit_adjustment(logits, y_val, y_train, self.n_classes)
        model.set_logit_offset(torch.from_numpy(offset))
        payload = load_checkpoint(self.run_dir / BEST)
        save_checkpoint({**payload, "arch": model.arch, "tau": tau}, self.run_dir / BEST)
        return tau


def classifier_choice(path: Path) -> dict[str, Any]:
    """What the validation split chose for the classifier saved at ``path``: its layers, weight decay, epoch and
    logit-adjustment tau (None where the checkpoint predates the choice)."""
    payload = load_checkpoint(path)
    return {"hidden": payload["arch"]["hidden"], "weight_decay": payload.get("weight_decay"),
            "epoch": payload.get("epoch"), "logit_adjustment_tau": payload.get("tau")}


def class_prior_offset(y_train: np.ndarray, n_classes: int, binary: bool) -> np.ndarray:
    """``-log`` of the training class shares (each class counted at least once): ``(n_classes,)``, or for a
    binary head the one-logit equivalent ``(1,)``, ``log(share_0) - log(share_1)``."""
    log_prior = np.log(np.maximum(np.bincount(y_train, minlength=n_classes), 1) / max(len(y_train), 1))
    return np.array([log_prior[0] - log_prior[1]]) if binary else -log_prior


def fit_logit_adjustment(val_logits: np.ndarray, y_val: np.ndarray, y_train: np.ndarray, n_classes: int,
                         taus: np.ndarray = TAUS) -> tuple[float, np.ndarray]:
    """The tau of ``taus`` whose offset ``tau * class_prior_offset`` gives the best validation balanced
    accuracy (ties: the tau nearest 0), and that float32 offset. ``val_logits``: ``(N, 1)`` for a binary
    head, ``(N, n_classes)`` otherwise."""
    binary = val_logits.shape[1] == 1 and n_classes == 2
    base = class_prior_offset(y_train, n_classes, binary)
    best: tuple[float, float] | None = None
    for tau in sorted(taus, key=abs):
        shifted = val_logits + tau * base
        pred = (shifted[:, 0] > 0).astype(int) if binary else shifted.argmax(axis=1)
        score = balanced_accuracy_score(y_val, pred)
        if best is None or score > best[0]:
            best = (score, float(tau))
    tau = best[1] if best is not None else 0.0
    return tau, (tau * base).astype(np.float32)


@torch.no_grad()
def predict_logits(model: DenseClassifier, embeddings: np.ndarray, device: torch.device) -> np.ndarray:
    model.eval()
    return model(torch.from_numpy(embeddings).float().to(device)).cpu().numpy()


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
