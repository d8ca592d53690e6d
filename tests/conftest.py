"""Fixtures: small real-format datasets written to a temp folder, and the optional shared HAM data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from siamese.config import RunConfig, preset
from siamese.data.embedded import make_synthetic
from siamese.training.pipeline import run_training

REPO = Path(__file__).resolve().parents[1]
SHARED_HAM = REPO.parent / "shared" / "data" / "ham10000"


@pytest.fixture(scope="session")
def shared_ham() -> Path:
    if not (SHARED_HAM / "HAM10000_metadata.csv").is_file():
        pytest.skip("../shared/data/ham10000 is not present on this machine")
    return SHARED_HAM


@pytest.fixture(scope="session")
def synthetic():
    return make_synthetic(lesions_per_class=4, image_size=48, seed=3)


def write_ham_layout(root: Path, table, split_parts: bool = True) -> Path:
    """HAM10000 as distributed: metadata CSV plus JPEGs in part_1/part_2 folders."""
    frame = table.frame
    rows = []
    for i, row in frame.iterrows():
        folder = root / ("HAM10000_images_part_1" if (i % 2 == 0 or not split_parts) else "HAM10000_images_part_2")
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(table.images[row["index"]]).save(folder / f"{row['image_id']}.jpg", quality=95)
        rows.append({"lesion_id": row["group"], "image_id": row["image_id"], "dx": row["label"],
                     "dx_type": "histo", "age": 50.0, "sex": "male", "localization": "back"})
    pd.DataFrame(rows).to_csv(root / "HAM10000_metadata.csv", index=False)
    return root


@pytest.fixture
def ham_dir(tmp_path, synthetic) -> Path:
    return write_ham_layout(tmp_path / "ham", synthetic)


def random_jpegs(folder: Path, n: int, size: int = 40, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"img_{i:03d}.jpg"
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def tiny_config(out: Path, epochs_embed: int = 3, **data) -> RunConfig:
    """A synthetic-lesion run small enough for a test: ResNet18, random init, 32 px."""
    config = preset("tiny")
    config.data.dataset = "synthetic"
    config.data.synthetic_lesions_per_class = 10
    config.data.image_size = 32
    config.data.augment = "none"
    for key, value in data.items():
        setattr(config.data, key, value)
    config.embed.epochs = epochs_embed
    config.embed.batch_size = 56
    config.embed.patience = 10
    config.classifier.epochs = 30
    config.classifier.batch_size = 16
    config.wandb = "disabled"
    config.export_onnx = False  # the shared run_dir and tests/test_export.py cover the export
    config.out = str(out)
    return config


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """One trained run shared by the tests that only read it (with its ONNX export)."""
    config = tiny_config(tmp_path_factory.mktemp("runs") / "run", epochs_embed=4)
    config.export_onnx = True
    return run_training(config)
