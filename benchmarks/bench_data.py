"""Images per second delivered to the model (decode + resize + augment + collate + normalise).

    python -m benchmarks.bench_data [--images 300] [--size 256] [--workers 0] [--dataset ham10000 --data-dir DIR]

Baseline, same images and same run: a plain ``torchvision.datasets.ImageFolder`` with PIL Resize and the
same augmentation recipe in classic PIL transforms (flips, rotation, jitter, noise). By default full-size
JPEGs are written at HAM10000's 600x450 from the synthetic lesion generator; with ``--dataset`` the images
are ``--images`` rows of that dataset's table as the package reads it (``load_dataset``), the classes in turn, which
the project reads where they lie and the baseline through symlinks in a temporary ImageFolder (by label).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

from benchmarks.harness import common_size, describe_images, isolated, non_negative, positive, print_table, real_images
from siamese.data import ImageDataset, build_transform, load_dataset, make_synthetic, pixel_source
from siamese.data.images import LESION_NOISE
from siamese.models import InputNormalization


def write_images(root: Path, count: int) -> Path:
    """``count`` synthetic lesions as 600x450 JPEGs in ``root/images/<label>/`` and listed in
    ``root/images.csv``."""
    table = make_synthetic(lesions_per_class=max(1, count // 14), seed=0)
    rows = []
    for _, row in table.frame.head(count).iterrows():
        folder = root / "images" / row["label"]
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{row['image_id']}.jpg"
        Image.fromarray(table.images[row["index"]]).resize((600, 450), Image.Resampling.BICUBIC).save(path, quality=90)
        rows.append({"path": str(path), "label": row["label"]})
    pd.DataFrame(rows).to_csv(root / "images.csv", index=False)
    return root


def link_images(root: Path, images: pd.DataFrame) -> Path:
    """Real images (``image_id``, ``path``, ``label``) laid out like :func:`write_images`: symlinks in
    ``root/images/<label>/`` for the baseline's ImageFolder, the files' own paths in ``root/images.csv``
    for the project. Nothing is copied."""
    for _, row in images.iterrows():
        folder = root / "images" / row["label"]
        folder.mkdir(parents=True, exist_ok=True)
        os.symlink(Path(row["path"]).resolve(), folder / f"{row['image_id']}{Path(row['path']).suffix}")
    images[["path", "label"]].to_csv(root / "images.csv", index=False)
    return root


def epoch(dataset, workers: int, finish: torch.nn.Module | None = None) -> dict:
    """``finish`` is the work the project leaves to the model's first layer (uint8 -> normalised float,
    noise), counted here so both sides deliver the same thing."""
    loader = DataLoader(dataset, batch_size=32, shuffle=True, num_workers=workers)
    start = time.perf_counter()
    seen = 0
    for images, _ in loader:
        if finish is not None:
            images = finish(images)
        seen += len(images)
    return {"images_per_s": seen / (time.perf_counter() - start)}


def baseline(root: Path, size: int, workers: int) -> dict:
    plain = transforms.Compose([transforms.Resize((size, size)), transforms.RandomHorizontalFlip(),
                                transforms.RandomVerticalFlip(), transforms.RandomRotation(30),
                                transforms.ColorJitter(0.2, 0.2, 0.2), transforms.ToTensor(),
                                transforms.Lambda(lambda x: x + 0.02 * torch.randn_like(x)),
                                transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    return epoch(datasets.ImageFolder(str(root / "images"), transform=plain), workers)


def project(root: Path, size: int, workers: int, cache: Path | None, augment: str = "lesion") -> dict:
    table = load_dataset("csv", metadata=root / "images.csv")
    targets = np.zeros(len(table.frame), dtype=int)
    build = 0.0
    if cache is not None:
        start = time.perf_counter()
        source = pixel_source(table, size, cache)
        build = time.perf_counter() - start
    else:
        source = pixel_source(table, size)
    finish = InputNormalization(noise=LESION_NOISE if augment == "lesion" else 0.0).train()
    result = epoch(ImageDataset(source, targets, build_transform(augment)), workers, finish)
    result["cache_build_s"] = build
    return result


def main(argv: list[str] | None = None) -> list[dict]:
    """Runs every case, prints the images used and the table, and returns the table's rows."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--images", type=positive, default=300)
    parser.add_argument("--size", type=positive, default=256)
    parser.add_argument("--workers", type=non_negative, default=0)
    parser.add_argument("--dataset", help="measure on this dataset's images (e.g. ham10000), not synthetic ones")
    parser.add_argument("--data-dir", help="the dataset's folder, as for training")
    args = parser.parse_args(argv)
    if args.dataset and not args.data_dir:
        parser.error("--dataset needs --data-dir")
    with tempfile.TemporaryDirectory() as tmp:
        if args.dataset:
            root = link_images(Path(tmp), real_images(args.dataset, args.data_dir, args.images))
        else:
            root = write_images(Path(tmp), args.images)
        paths = pd.read_csv(root / "images.csv")["path"].tolist()
        print(describe_images(args.dataset or "synthetic", paths, args.data_dir or root))
        source = f"{args.dataset or 'synthetic'} JPEGs {common_size(paths)}"
        cache = Path(tmp) / "cache"
        rows = [
            {"case": "ImageFolder + PIL (baseline)", **isolated(baseline, root, args.size, args.workers)},
            {"case": "project loader, decoding JPEGs", **isolated(project, root, args.size, args.workers, None)},
            {"case": "project loader, building cache", **isolated(project, root, args.size, args.workers, cache)},
            {"case": "project loader, from uint8 cache", **isolated(project, root, args.size, args.workers, cache)},
            {"case": "no augmentation, decoding JPEGs", **isolated(project, root, args.size, args.workers, None,
                                                                   "none")},
            {"case": "no augmentation, from uint8 cache", **isolated(project, root, args.size, args.workers, cache,
                                                                     "none")},
        ]
    print_table(f"data pipeline: {len(paths)} {source} -> {args.size}px, lesion augmentation, batch 32, "
                f"{args.workers} workers", rows, "images_per_s", "ImageFolder + PIL (baseline)")
    print(f"one-time cache build: {rows[2]['cache_build_s']:.1f} s")
    return rows


if __name__ == "__main__":
    main()
