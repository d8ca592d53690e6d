"""Fixtures: small real-format datasets written to a temp folder, and the optional shared HAM data."""

from __future__ import annotations

import ipaddress
import socket
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from siamese.config import RunConfig, preset
from siamese.data.embedded import make_synthetic
from siamese.workflows.training_run import run_training

REPO = Path(__file__).resolve().parents[1]
SHARED_HAM = REPO.parent / "shared" / "data" / "ham10000"
SHARED_PH2 = REPO.parent / "shared" / "data" / "ph2"
SHARED_ISIC2020 = REPO.parent / "shared" / "data" / "isic2020"
PH2_COLUMNS = ["Image Name", "Histological Diagnosis", "Common Nevus", "Atypical Nevus", "Melanoma",
               "Asymmetry\n(0/1/2)"]


INTEGRATION_FIXTURES = frozenset({
    "run_dir", "tuned_run", "lite_run", "seg_run", "ph2_run",  # a trained run
    "shared_ham", "shared_ham_small", "shared_isic2020", "shared_ph2",  # the shared real data
})
WORKFLOWS = Path(__file__).resolve().parent / "workflows"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """``integration`` on the tests of whole workflows (``tests/workflows/``) and on those that need a trained run
    or the shared real data (directly or through another fixture); the few that train inline carry the mark
    themselves. ``pytest -m "not integration"`` is then the quick loop."""
    for item in items:
        if item.path.is_relative_to(WORKFLOWS) or INTEGRATION_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)


def _loopback(address: object) -> bool:
    """Whether a socket address stays on this machine: a Unix socket path, or a loopback host."""
    if not isinstance(address, tuple):
        return True
    host = str(address[0])
    try:
        return ipaddress.ip_address(host.split("%")[0]).is_loopback
    except ValueError:
        return host == "localhost"


@pytest.fixture(scope="session", autouse=True)
def no_network():
    """The suite never reaches for the network: a connection to another host fails as it would offline
    (OSError, what urllib and torchvision's download see) and so does a name lookup, so a test that needs
    the network fails here instead of passing or failing by where it runs. Loopback stays open (local
    process groups)."""
    real_connect, real_connect_ex = socket.socket.connect, socket.socket.connect_ex
    real_getaddrinfo = socket.getaddrinfo

    def refuse(address: object) -> None:
        if not _loopback(address):
            raise OSError(f"the test suite is offline: connection to {address!r} refused")

    def getaddrinfo(host: object, *args: object, **kwargs: object) -> list:
        if host is not None and not _loopback((host if isinstance(host, str) else bytes(host).decode(), 0)):
            raise socket.gaierror(socket.EAI_NONAME, f"the test suite is offline: no name lookup of {host!r}")
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(self: socket.socket, address: object) -> None:
        refuse(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: object) -> int:
        refuse(address)
        return real_connect_ex(self, address)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", connect)
        patch.setattr(socket.socket, "connect_ex", connect_ex)
        patch.setattr(socket, "getaddrinfo", getaddrinfo)
        yield


@pytest.fixture(scope="session")
def shared_ham() -> Path:
    if not (SHARED_HAM / "HAM10000_metadata.csv").is_file():
        pytest.skip("../shared/data/ham10000 is not present on this machine")
    return SHARED_HAM


@pytest.fixture(scope="session")
def shared_ham_small() -> Path:
    """All 10,015 HAM10000 images at 200 x 150 in the download's two-part layout, with the full table."""
    folder = SHARED_HAM / "small"
    if not (folder / "HAM10000_metadata.csv").is_file():
        pytest.skip("../shared/data/ham10000/small is not present on this machine")
    return folder


@pytest.fixture(scope="session")
def shared_isic2020() -> Path:
    if not (SHARED_ISIC2020 / "train.csv").is_file():
        pytest.skip("../shared/data/isic2020 is not present on this machine")
    return SHARED_ISIC2020


@pytest.fixture(scope="session")
def shared_ph2() -> Path:
    if not (SHARED_PH2 / "PH2Dataset" / "PH2_dataset.xlsx").is_file():
        pytest.skip("../shared/data/ph2 is not present on this machine")
    return SHARED_PH2


def write_ph2_layout(root: Path, table, suffix: str = ".bmp", marks: dict[str, list[str]] | None = None) -> Path:
    """PH2 as distributed: the workbook (12 legend rows, then the header) and one folder per case with its
    dermoscopic image and lesion mask. ``table`` labels are PH2 classes; ``marks`` overrides a case's
    diagnosis cells (to write malformed rows)."""
    columns = {"common_nevus": "Common Nevus", "atypical_nevus": "Atypical Nevus", "melanoma": "Melanoma"}
    data = root / "PH2Dataset"
    rows = [[None] * len(PH2_COLUMNS) for _ in range(12)]
    rows[1][5] = "Legends"
    rows.append(PH2_COLUMNS)
    for _, row in table.frame.iterrows():
        case = row["image_id"]
        cells = (marks or {}).get(case) or ["X" if columns[row["label"]] == c else None for c in PH2_COLUMNS[2:5]]
        rows.append([case, None, *cells, "0"])
        folder = data / "PH2 Dataset images" / case
        (folder / f"{case}_Dermoscopic_Image").mkdir(parents=True)
        (folder / f"{case}_lesion").mkdir()
        pixels = row["pixels"]
        Image.fromarray(pixels).save(folder / f"{case}_Dermoscopic_Image" / f"{case}{suffix}")
        mask = np.zeros(pixels.shape[:2], dtype=np.uint8)
        h, w = mask.shape
        mask[h // 4: 3 * h // 4, w // 4: 3 * w // 4] = 255
        Image.fromarray(mask).save(folder / f"{case}_lesion" / f"{case}_lesion{suffix}")
    pd.DataFrame(rows).to_excel(data / "PH2_dataset.xlsx", header=False, index=False)
    return root


def ph2_like(synthetic, per_class: int = 4):
    """Synthetic lesions relabelled as PH2's three classes, with their pixels, as a small table."""
    names = ("common_nevus", "atypical_nevus", "melanoma")
    frame = synthetic.frame
    picks = []
    for k, label in enumerate(sorted(frame["label"].unique())[:3]):
        rows = frame[frame["label"] == label].head(per_class)
        picks += [(f"IMD{100 * k + i:03d}", names[k], synthetic.images[r]) for i, r in enumerate(rows["index"])]
    return pd.DataFrame(picks, columns=["image_id", "label", "pixels"])


@pytest.fixture
def ph2_dir(tmp_path, synthetic) -> Path:
    return write_ph2_layout(tmp_path / "ph2", SimpleNamespace(frame=ph2_like(synthetic)))


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
    config.references = ("colour_baseline", "colour_embedding")  # finetune trains: tests/test_finetune.py has it
    config.out = str(out)
    return config


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    """One trained run shared by the tests that only read it (with its ONNX export)."""
    config = tiny_config(tmp_path_factory.mktemp("runs") / "run", epochs_embed=4)
    config.export_onnx = True
    return run_training(config)


def upright_and_rotated(pixels: np.ndarray, folder: Path, name: str = "lesion") -> tuple[Path, Path]:
    """The same picture twice as JPEG: upright, and stored turned 90 degrees anticlockwise with EXIF
    Orientation 6 (turn clockwise to display), as phones and some dermatoscopes write it."""
    folder.mkdir(parents=True, exist_ok=True)
    upright = Image.fromarray(pixels).resize((128, 96), Image.Resampling.BILINEAR)
    exif = Image.Exif()
    exif[0x0112] = 6  # ExifTags.Base.Orientation
    paths = (folder / f"{name}_upright.jpg", folder / f"{name}_rotated.jpg")
    upright.save(paths[0], quality=95)
    upright.transpose(Image.Transpose.ROTATE_90).save(paths[1], quality=95, exif=exif)
    return paths
