"""Embedding extraction and stage-2 classifier training throughput, each against a bare loop.

    python -m benchmarks.bench_extract [--backbone inception_v3] [--size 256] [--images 256] [--batch 64]
                                       [--workers 0] [--compute auto] [--json]

Extraction baseline: ``model(x)`` under ``no_grad`` over the same batches, preloaded, in every memory format
and precision the device computes natively (as in ``bench_train_step``); the project's extraction is given
against the fastest of them and against the contiguous fp32 loop, so the ratio is what the project's
loading and bookkeeping cost. Stage-2 baseline: the same three-layer MLP trained with plain cross-entropy
over the same embeddings, no checkpoints or logs. ``--json`` prints one JSON object instead of the tables.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.bench_train_step import bare_choices, compute_of, dataset
from benchmarks.harness import isolated, machine_facts, non_negative, positive, print_table
from siamese.config import ClassifierConfig
from siamese.models import DenseClassifier, EmbeddingNet
from siamese.runtime.compute_choices import COMPUTE_CHOICES
from siamese.runtime.device import autocast, prepare_model, resolve_device, to_device
from siamese.runtime.tracking import Tracker
from siamese.training.classify import ClassifierTrainer
from siamese.training.embeddings import compute_embeddings

EPOCHS = 20


def extract_project(backbone: str, size: int, images: int, batch: int, workers: int = 0, compute: str = "auto"
                    ) -> dict:
    device = resolve_device("auto")
    chosen = compute_of(compute)
    model = EmbeddingNet(backbone, "none").to(device)
    data = dataset(size, images)
    compute_embeddings(model, data, device, batch, workers, amp=chosen.bf16, channels_last=chosen.channels_last)
    start = time.perf_counter()
    compute_embeddings(model, data, device, batch, workers, amp=chosen.bf16, channels_last=chosen.channels_last)
    return {"per_s": images / (time.perf_counter() - start)}


def extract_bare(backbone: str, size: int, images: int, batch: int, compute: str = "auto") -> dict:
    device = resolve_device("auto")
    chosen = compute_of(compute)
    model = prepare_model(EmbeddingNet(backbone, "none"), device, chosen).eval()
    data = dataset(size, images)
    batches = [torch.stack([data[i][0] for i in range(s, min(s + batch, images))]) for s in range(0, images, batch)]

    def run() -> None:
        with torch.no_grad(), autocast(device, chosen.bf16):
            for batch in batches:
                model(to_device(batch, device, chosen.channels_last)).cpu()

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
        trainer = ClassifierTrainer(7, 128, cfg=ClassifierConfig(epochs=EPOCHS), device=resolve_device("auto"),
                                    run_dir=Path(tmp), tracker=Tracker(Path(tmp), {}, "disabled"))
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


def main(argv: list[str] | None = None) -> dict:
    """Runs every case, prints the two tables (or, with ``--json``, one object) and returns the figures."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="inception_v3")
    parser.add_argument("--size", type=positive, default=256)
    parser.add_argument("--images", type=positive, default=256)
    parser.add_argument("--batch", type=positive, default=64, help="extraction batch, the same for all loops")
    parser.add_argument("--embeddings", type=positive, default=10015)
    parser.add_argument("--workers", type=non_negative, default=0,
                        help="DataLoader workers of the project's extraction")
    parser.add_argument("--compute", choices=COMPUTE_CHOICES, default="auto", help="the project's setting")
    parser.add_argument("--json", action="store_true", help="print one JSON object of the figures, no tables")
    args = parser.parse_args(argv)
    chosen = compute_of(args.compute).name
    extraction = [{"case": f"bare no_grad loop, {choice}", "compute": choice,
                   **isolated(extract_bare, args.backbone, args.size, args.images, args.batch, choice)}
                  for choice in bare_choices(resolve_device("auto"))]
    best = max(extraction, key=lambda r: r["per_s"])
    extraction.append({"case": f"project compute_embeddings, {chosen}", "compute": chosen,
                       **isolated(extract_project, args.backbone, args.size, args.images, args.batch,
                                  args.workers, args.compute)})
    stage2 = [{"case": "bare MLP loop", **isolated(classifier_bare, args.embeddings)},
              {"case": "project ClassifierTrainer", **isolated(classifier_project, args.embeddings)}]
    figures = {"benchmark": "embedding extraction and stage-2 training", **machine_facts(),
               "backbone": args.backbone, "size": args.size, "batch": args.batch, "images": args.images,
               "workers": args.workers, "project_compute": chosen, "best_bare_compute": best["compute"],
               "extraction_images_per_s": {r["case"]: r["per_s"] for r in extraction},
               "extraction_cuda_max_mb": {r["case"]: r.get("cuda_max_mb") for r in extraction},
               "extraction_vs_best_bare": extraction[-1]["per_s"] / best["per_s"],
               "extraction_vs_fp32_bare": extraction[-1]["per_s"] / extraction[0]["per_s"],
               "stage2_embeddings_per_s": {r["case"]: r["per_s"] for r in stage2},
               "stage2_vs_bare": stage2[1]["per_s"] / stage2[0]["per_s"]}
    if args.json:
        print(json.dumps(figures, indent=2))
        return figures
    print_table(f"embedding extraction: {args.backbone} {args.size}px, {args.images} images, batch {args.batch} "
                "(images/s)", extraction, "per_s", best["case"])
    print(f"project ({chosen}) vs the fastest bare loop ({best['compute']}): {figures['extraction_vs_best_bare']:.2f}x;"
          f" vs the contiguous fp32 bare loop: {figures['extraction_vs_fp32_bare']:.2f}x")
    print_table(f"stage-2 training: {args.embeddings} embeddings x {EPOCHS} epochs (embeddings/s)", stage2, "per_s",
                "bare MLP loop")
    return figures


if __name__ == "__main__":
    main()
