"""Atomic checkpoints that know which architecture they belong to.

Each file holds ``arch`` (what the weights fit) besides the state, so loading into another backbone or
class count fails with a sentence instead of a wall of size-mismatch errors; files are written to a
temporary name and renamed, so an interrupted save never leaves a truncated checkpoint behind.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from siamese.runtime.errors import CheckpointError


def save_checkpoint(payload: dict[str, Any], path: str | Path) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    torch.save(payload, partial)
    os.replace(partial, path)


def load_checkpoint(path: str | Path, expect_arch: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load with ``weights_only=True``; with ``expect_arch`` refuse a checkpoint of another model."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from exc
    if not isinstance(payload, dict) or "arch" not in payload or "state" not in payload:
        raise CheckpointError(f"{path}: not a siamese-lesions checkpoint (no 'arch'/'state')")
    if expect_arch is not None:
        differ = {k: (payload["arch"].get(k), v) for k, v in expect_arch.items() if payload["arch"].get(k) != v}
        if differ:
            detail = ", ".join(f"{k}: checkpoint has {a!r}, model needs {b!r}" for k, (a, b) in differ.items())
            raise CheckpointError(f"{path}: made for another model ({detail})")
    return payload


def restore_state(model: torch.nn.Module, payload: dict[str, Any], path: str | Path) -> None:
    """Load ``payload``'s weights into ``model``; a checkpoint of another layout (e.g. one written before
    the embedder carried its input statistics) fails with a sentence naming the file."""
    try:
        model.load_state_dict(payload["state"])
    except RuntimeError as exc:
        first = str(exc).splitlines()[1:2] or [str(exc)]
        raise CheckpointError(f"{path}: weights do not fit this version's model ({first[0].strip()}); "
                              "retrain, or load it with the version that wrote it") from exc


def load_model(cls: Any, path: str | Path) -> Any:
    """A trained model from a checkpoint file: ``cls.from_arch`` with the saved architecture, then the
    weights (and buffers, such as input statistics) restored."""
    payload = load_checkpoint(path)
    model = cls.from_arch(payload["arch"])
    restore_state(model, payload, path)
    return model


def state_digest(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 (hex) of a state dict's names, shapes, dtypes and values, whatever the tensors' memory format or
    device: a stage-2 checkpoint records its embedder's, so a run's two checkpoints can be told apart from
    another run's of the same architecture."""
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().cpu().contiguous()
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def check_trained_on(classifier_path: str | Path, embedder: torch.nn.Module, embedder_path: str | Path) -> None:
    """Refuse a ``classifier.pt`` trained on the embeddings of another ``embedder.pt`` than ``embedder`` (loaded
    from ``embedder_path``): an embedder copied in from another run of the same architecture. Checkpoints
    written before the digest was recorded pass.

    Raises:
        CheckpointError: naming both files.
    """
    recorded = load_checkpoint(classifier_path).get("embedder_digest")
    if recorded is not None and recorded != state_digest(embedder.state_dict()):
        raise CheckpointError(f"{embedder_path}: not the embedder {classifier_path} was trained on (its weights' "
                              f"digest differs): not this run's checkpoint; copy both checkpoints from one run")


def save_training_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
                        progress: dict[str, Any]) -> None:
    """Everything an interrupted stage needs to go on from its last complete epoch."""
    save_checkpoint({"arch": model.arch, "state": model.state_dict(), "optimizer": optimizer.state_dict(),
                     "progress": progress}, path)


def load_training_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, Any] | None:
    """Restore ``model`` and ``optimizer`` from ``path`` and return the saved progress; None if absent."""
    if not path.is_file():
        return None
    payload = load_checkpoint(path, model.arch)
    restore_state(model, payload, path)
    optimizer.load_state_dict(payload["optimizer"])
    return payload["progress"]
