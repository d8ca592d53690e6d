"""Embedding extraction and stage-2 classifier training throughput, each against a bare loop.

    python -m benchmarks.bench_extract [--backbone inception_v3] [--size 256] [--images 256] [--workers 0]

Extraction baseline: ``model(x)`` under ``no_grad`` (and the same bf16 autocast on CUDA) over the same
batches, preloaded, so the ratio is what the project's loading and bookkeeping cost. Stage-2 baseline: the
same three-layer MLP trained with plain cross-entropy over the same embeddings, no checkpoints or logs.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_train_step import dataset
from benchmarks.harness import isolated, print_table
from siamese.config import ClassifierConfig
from siamese.models import DenseClassifier, EmbeddingNet
from siamese.runtime.device import autocast, resolve_device
from siamese.training.classify import ClassifierTrainer
from siamese.training.embeddings import compute_embeddings
from siamese.training.tracking import Tracker

EPOCHS = 20


def extract_project(backbone: str, size: int, images: int, workers: int = 0) -> dict:
    device = resolve_device("auto")
    model = EmbeddingNet(backbone, "none").to(device)
    data = dataset(size, images)
    compute_embeddings(model, data, device, 64, workers, channels_last=True)
    start = time.perf_counter()
    compute_embeddings(model, data, device, 64, workers, channels_last=True)
    return {"per_s": images / (time.perf_counter() - start)}


def extract_bare(backbone: str, size: int, images: int) -> dict:
    device = resolve_device("auto")
    model = EmbeddingNet(backbone, "none").to(device).eval()
    data = dataset(size, images)
    batches = [torch.stack([data[i][0] for i in range(s, min(s + 64, images))]) for s in range(0, images, 64)]

    def run() -> None:
        with torch.no_grad(), autocast(device):
            for batch in batches:
                model(batch.to(device)).cpu()

    run()
    start = time.perf_counter()
    run()
    return {"per_s": images / (time.perf_counter() - start)}


def embeddings(count: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(count, 128)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True), rng.integers(0, 7, count)


def classifier_project(count: int) -> dict:
    x, y = embeddings(count)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = ClassifierTrainer(7, 128, ClassifierConfig(epochs=EPOCHS), resolve_device("auto"), Path(tmp),
                                    Tracker(Path(tmp), {}, "disabled"))
        start = time.perf_counter()
        trainer.fit(x, y, x[:500], y[:500])
    return {"per_s": count * EPOCHS / (time.perf_counter() - start)}


def classifier_bare(count: int) -> dict:
    device = resolve_device("auto")
    x, y = embeddings(count)
    model = DenseClassifier(128, 7).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.tensor(x), torch.tensor(y)),
                                         batch_size=64, shuffle=True)
    start = time.perf_counter()
    for _ in range(EPOCHS):
        for xb, yb in loader:
            loss = torch.nn.functional.cross_entropy(model(xb.to(device)), yb.to(device))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return {"per_s": count * EPOCHS / (time.perf_counter() - start)}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="inception_v3")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--images", type=int, default=256)
    parser.add_argument("--embeddings", type=int, default=10015)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the project's extraction")
    args = parser.parse_args()
    rows = [{"case": "bare no_grad loop", **isolated(extract_bare, args.backbone, args.size, args.images)},
            {"case": "project compute_embeddings", **isolated(extract_project, args.backbone, args.size,
                                                               args.images, args.workers)}]
    print_table(f"embedding extraction: {args.backbone} {args.size}px, {args.images} images, batch 64 (images/s)",
                rows, "per_s", "bare no_grad loop")
    rows = [{"case": "bare MLP loop", **isolated(classifier_bare, args.embeddings)},
            {"case": "project ClassifierTrainer", **isolated(classifier_project, args.embeddings)}]
    print_table(f"stage-2 training: {args.embeddings} embeddings x {EPOCHS} epochs (embeddings/s)", rows, "per_s",
                "bare MLP loop")


if __name__ == "__main__":
    main()
