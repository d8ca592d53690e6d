"""Embeddings (and other per-image arrays) of a whole split, computed once and cached in the run folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from siamese.runtime.atomic import written_whole
from siamese.runtime.device import Compute, autocast, prepare_model, to_device


@torch.no_grad()
def compute_embeddings(model: torch.nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 128,
                       num_workers: int = 0, desc: str = "embedding", amp: bool = True,
                       channels_last: bool = False) -> np.ndarray:
    """``(N, D)`` float32 outputs of ``model`` over ``dataset`` in order, in eval mode (restored after);
    ``amp``: bf16 autocast, ``channels_last``: NHWC inputs and weights (see :mod:`siamese.runtime.device`)."""
    was_training = model.training
    prepare_model(model, device, Compute(channels_last, amp)).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        pin_memory=device.type == "cuda")
    chunks = []
    for images, _ in tqdm(loader, desc=desc, leave=False, disable=None):
        with autocast(device, amp):
            chunks.append(model(to_device(images, device, channels_last)).float().cpu())
    model.train(was_training)
    return torch.cat(chunks).numpy()


def stored_embeddings(path: Path, image_ids: np.ndarray, embedder_sha256: str | None = None) -> np.ndarray | None:
    """The embeddings saved at ``path`` if they are of exactly these images, in this order, and (given
    ``embedder_sha256``, the SHA-256 of the ``embedder.pt`` that should have made them) not of another
    embedder; else None. Files written before the digest was recorded are taken as they are."""
    if path.is_file():
        stored = np.load(path, allow_pickle=False)
        made_by = str(stored["embedder_sha256"]) if "embedder_sha256" in stored.files else None
        if embedder_sha256 is not None and made_by is not None and made_by != embedder_sha256:
            return None
        if np.array_equal(stored["image_id"], np.asarray(image_ids, dtype=str)):
            return stored["embedding"]
    return None


def cached_embeddings(path: Path, image_ids: np.ndarray, compute: Callable[[], np.ndarray],
                      embedder_sha256: str | None = None) -> np.ndarray:
    """Reuse ``path`` when it holds the same images made by the same embedder (:func:`stored_embeddings`);
    otherwise compute and save it, with ``embedder_sha256`` when given."""
    stored = stored_embeddings(path, image_ids, embedder_sha256)
    if stored is not None:
        return stored
    embedding = compute()
    made_by = {} if embedder_sha256 is None else {"embedder_sha256": np.asarray(embedder_sha256)}
    with written_whole(path) as partial:
        np.savez(partial, embedding=embedding, image_id=np.asarray(image_ids, dtype=str), **made_by)
    return embedding


def cached_arrays(path: Path, ids: np.ndarray, compute: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Named arrays stored with the image ids they were computed for; recomputed when the images changed."""
    if path.is_file():
        saved = dict(np.load(path))
        if np.array_equal(saved.pop("image_id"), ids):
            return saved
    values = compute()
    with written_whole(path) as partial:
        np.savez(partial, image_id=ids, **values)
    return values
