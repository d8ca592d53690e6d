"""Artefact insertion and the robustness audit, on templates written here (and Katsch et al.'s when the
shared copy is present)."""

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from siamese.cli import main
from siamese.config import RunConfig
from siamese.data import DataError, load_dataset
from siamese.inference.preprocess import Preprocessing
from siamese.robustness.artefacts import ArtefactLibrary
from siamese.robustness.audit import run_audit, summarize
from tests.conftest import REPO

SHARED_ARTEFACTS = REPO.parent / "shared" / "data" / "artefacts"


def write_templates(root: Path, strength: int = 60) -> Path:
    """A templates folder in the shared layout: one bubble pair, one ruler pair (vertical, stored lying)
    and one ink circle and spot on white; ``strength`` 0 makes every template change nothing."""
    src = root / "src"
    entries = []
    for name, kind, sub in (("B1", "bubble", None), ("R1", "ruler", "vertical"), ("M1", "marking", "circle"),
                            ("M2", "marking", "spot")):
        folder = src / name
        folder.mkdir(parents=True)
        if kind == "marking":
            stamp = np.full((60, 60, 3), 255, np.uint8)
            yy, xx = np.mgrid[:60, :60]
            ring = np.abs(np.hypot(yy - 30, xx - 30) - 25) < 3 if sub == "circle" else np.hypot(yy - 30, xx - 30) < 8
            stamp[ring] = 255 - strength
            Image.fromarray(stamp).save(folder / f"{name}_01.png")
        else:
            shape = (20, 20) if kind == "bubble" else (30, 400)
            without = np.full((*shape, 3), 100, np.uint8)
            with_artefact = without.copy()
            with_artefact[2:-2, 2:-2] += strength
            Image.fromarray(with_artefact).save(folder / f"{name}_with_01.png")
            Image.fromarray(without).save(folder / f"{name}_without_01.png")
        entries.append({"class": kind, "subclass": sub, "preprocessor": "difference", "name": name,
                        "original_file": f"src/{name}.jpg", "artefact_folder": f"src/{name}"})
    (root / "meta.json").write_text(json.dumps({"artefacts": entries}))
    return root


@pytest.fixture
def library(tmp_path) -> ArtefactLibrary:
    return ArtefactLibrary.load(write_templates(tmp_path / "artefacts"))


def skin(seed: int = 0, shape: tuple[int, int] = (300, 400)) -> np.ndarray:
    return np.random.default_rng(seed).integers(120, 200, (*shape, 3), dtype=np.uint8)


@pytest.mark.parametrize("kind", ["bubble", "marking", "ruler"])
def test_insertion_changes_only_where_the_template_lands_and_repeats_per_seed(library, kind):
    image = skin()
    first = library.insert(image, kind, np.random.default_rng(5))
    again = library.insert(image, kind, np.random.default_rng(5))
    other = library.insert(image, kind, np.random.default_rng(6))
    assert first.shape == image.shape and first.dtype == np.uint8
    assert np.array_equal(first, again) and not np.array_equal(first, other)
    changed = (first != image).any(axis=-1)
    assert 0 < changed.mean() < 0.2  # a template's footprint, not the whole image
    assert np.array_equal(first[~changed], image[~changed])


def test_a_ruler_lies_along_an_edge_and_values_stay_valid(library):
    bright = np.full((300, 400, 3), 250, np.uint8)
    out = library.insert(bright, "ruler", np.random.default_rng(0))
    columns = np.flatnonzero((out != bright).any(axis=(0, 2)))
    assert columns.min() < 5 or columns.max() > 395  # hugging the left or right edge (a vertical ruler)
    assert columns.max() - columns.min() < 25
    assert out.max() == 255  # 250 + 60 clipped, not wrapped round


def test_artefacts_keep_off_the_lesion(library):
    image = skin(1)
    mask = np.zeros(image.shape[:2], bool)
    mask[100:200, 150:250] = True
    for kind in ("bubble", "marking", "ruler"):
        for seed in range(5):
            out = library.insert(image, kind, np.random.default_rng(seed), mask)
            assert not (out != image).any(axis=-1)[mask].any(), (kind, seed)


def test_an_ink_circle_goes_around_the_lesion(library):
    library.templates["marking"] = [t for t in library.templates["marking"] if t.subclass == "circle"]
    image = skin(2)
    mask = np.zeros(image.shape[:2], bool)
    mask[120:180, 170:230] = True
    changed = (library.insert(image, "marking", np.random.default_rng(0), mask) != image).any(axis=-1)
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    assert rows.min() < 120 and rows.max() > 180 and cols.min() < 170 and cols.max() > 230
    assert not changed[mask].any()


def test_bad_templates_are_named(tmp_path):
    with pytest.raises(DataError, match="meta.json: artefact index not found"):
        ArtefactLibrary.load(tmp_path)
    (tmp_path / "meta.json").write_text("{not json")
    with pytest.raises(DataError, match="meta.json: malformed artefact index"):
        ArtefactLibrary.load(tmp_path)
    root = write_templates(tmp_path / "a")
    (root / "src" / "B1" / "B1_without_01.png").unlink()
    with pytest.raises(DataError, match="B1_with_01.png: its without partner is missing"):
        ArtefactLibrary.load(root)
    root = write_templates(tmp_path / "b")
    meta = json.loads((root / "meta.json").read_text())
    meta["artefacts"][0]["artefact_folder"] = "src/gone"
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="gone: artefact folder listed"):
        ArtefactLibrary.load(root)
    meta["artefacts"][0] = {"class": "bubble"}
    (root / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="entry 0 lacks 'artefact_folder'"):
        ArtefactLibrary.load(root)


class RulerReader:
    """A toy model that reads only the image's left and right edge bands: it says 'b' when they are bright."""

    name = "toy"

    def __init__(self, size: int) -> None:
        self.size = size

    def __call__(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        band = max(2, self.size // 12)
        edges = np.maximum(pixels[:, :, :, :band].mean(axis=(1, 2, 3)), pixels[:, :, :, -band:].mean(axis=(1, 2, 3)))
        p = 1 / (1 + np.exp(-(edges - 135) / 4))
        embedding = np.stack([p, 1 - p + 0.05], axis=1)
        embedding /= np.linalg.norm(embedding, axis=1, keepdims=True)
        return embedding.astype(np.float32), np.stack([1 - p, p], axis=1)


def toy_predictor(size: int) -> SimpleNamespace:
    reference = np.array([[1.0, 0.05], [0.05, 1.0]], np.float32)
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)

    def nearest(embedding, k):
        distance = np.sqrt(np.clip(2 - 2 * embedding @ reference.T, 0, None))
        rows = np.argsort(distance, axis=1)[:, :k]
        return np.take_along_axis(distance, rows, axis=1), rows

    return SimpleNamespace(prep=Preprocessing(size, (0.5,) * 3, (0.2,) * 3, ["a", "b"]), engine=RulerReader(size),
                           nearest=nearest, reference=reference, reference_labels=np.array(["b", "a"]))


@pytest.fixture
def image_table(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rows = []
    for i in range(6):
        Image.fromarray(np.full((300, 400, 3), 120, np.uint8)).save(folder / f"img{i}.png")
        rows.append({"image_id": f"img{i}", "label": "a", "group": f"img{i}", "path": str(folder / f"img{i}.png")})
    pd.DataFrame(rows).to_csv(tmp_path / "images.csv", index=False)
    return load_dataset("csv", metadata=tmp_path / "images.csv")


def test_a_toy_model_reading_the_ruler_region_flips_on_rulers_only(library, image_table, tmp_path):
    (tmp_path / "run").mkdir()
    result = run_audit(tmp_path / "run", image_table, tmp_path / "audit", library, split="all", repeats=2,
                       predictor=toy_predictor(64))
    by_type = result.summary.set_index("type")
    assert by_type.loc["ruler", "flip_rate"] == 1.0
    assert by_type.loc["ruler", "nn_change_rate"] == 1.0 and by_type.loc["ruler", "embedding_shift"] > 0
    assert by_type.loc["marking", "flip_rate"] == 0.0
    assert by_type.loc["ruler", "flip_rate_ci_low"] <= 1.0 <= by_type.loc["ruler", "flip_rate_ci_high"]
    assert len(result.rows) == 6 * 3 * 2 and (result.rows["prob_change"].abs() <= 1).all()
    for path in result.files:
        assert path.stat().st_size > 0


def test_summary_bootstraps_over_images():
    frame = pd.DataFrame({"image_id": ["x", "x", "y", "y"], "type": "ruler", "flipped": [True, True, False, False],
                          "prob_change": [0.5, 0.3, 0.0, -0.1], "embedding_shift": [1.0, 1.0, 0.0, 0.0],
                          "cosine_shift": [0.1, 0.3, 0.0, 0.0],
                          "nn_changed": [True, False, False, False]})
    row = summarize(frame).iloc[0]
    assert row["flip_rate"] == 0.5 and row["images"] == 2 and row["draws"] == 4
    assert row["mean_abs_prob_change"] == pytest.approx((0.4 + 0.05) / 2)
    assert row["cosine_shift"] == pytest.approx(0.1)
    assert row["flip_rate_ci_low"] == 0.0 and row["flip_rate_ci_high"] == 1.0


@pytest.fixture(scope="module")
def ph2_run(tmp_path_factory, synthetic):
    from tests.conftest import ph2_like, write_ph2_layout

    root = write_ph2_layout(tmp_path_factory.mktemp("ph2"), SimpleNamespace(frame=ph2_like(synthetic, 6)),
                            ".png")
    out = tmp_path_factory.mktemp("runs") / "ph2"
    assert main(["train", "--dataset", "ph2", "--data-dir", str(root), "--preset", "ph2", "--image-size",
                 "32", "--epochs-embed", "1", "--epochs-classifier", "2", "--val-fraction", "0.2",
                 "--wandb", "disabled", "--no-onnx", "--out", str(out)]) == 0
    return out


def test_identical_images_never_flip_and_the_report_gets_a_section(ph2_run, tmp_path):
    still = write_templates(tmp_path / "still", strength=0)  # templates that change nothing
    out = tmp_path / "audit"
    assert main(["robustness", str(ph2_run), "--artefacts", str(still), "--split", "all", "--repeats", "2",
                 "--out", str(out)]) == 0
    summary = pd.read_csv(out / "robustness_summary.csv")
    assert set(summary["type"]) == {"bubble", "marking", "ruler"}
    assert (summary["flip_rate"] == 0).all() and (summary["mean_abs_prob_change"] < 1e-6).all()
    assert (summary["nn_change_rate"] == 0).all()
    assert "## Artefact robustness" in (ph2_run / "report.md").read_text()
    assert RunConfig.load(ph2_run / "config.json").data.dataset == "ph2"


def test_robustness_cli_names_bad_input(ph2_run, tmp_path):
    assert main(["robustness", str(ph2_run), "--artefacts", str(tmp_path / "none"), "--out", str(tmp_path)]) == 2
    templates = write_templates(tmp_path / "t")
    assert main(["robustness", str(ph2_run), "--artefacts", str(templates), "--dataset", "ph2", "--data-dir",
                 str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]) == 2


def test_shared_templates_load_and_insert(tmp_path):
    if not (SHARED_ARTEFACTS / "meta.json").is_file():
        pytest.skip("../shared/data/artefacts is not present on this machine")
    library = ArtefactLibrary.load(SHARED_ARTEFACTS)
    assert library.counts()["ruler"] == 20 and library.counts()["bubble"] >= 11 and library.counts()["marking"] >= 20
    image = skin(3, (450, 600))
    for kind in ("bubble", "marking", "ruler"):
        out = library.insert(image, kind, np.random.default_rng(0))
        assert out.shape == image.shape and (out != image).any()


def test_artefact_augmentation_inserts_into_a_share_of_training_images(library):
    import torch

    from siamese.robustness.artefacts import ArtefactPixels

    images = [skin(i, (64, 64)) for i in range(40)]
    torch.manual_seed(0)
    always = ArtefactPixels(library, 1.0).over(images)
    assert len(always) == 40 and all((always[i] != images[i]).any() for i in range(40))
    torch.manual_seed(0)
    half = ArtefactPixels(library, 0.5).over(images)
    changed = sum((half[i] != images[i]).any() for i in range(40))
    assert 8 < changed < 32
    with pytest.raises(ValueError, match="probability"):
        ArtefactPixels(library, 1.5)


def test_training_with_artefact_augmentation(tmp_path, synthetic):
    from tests.conftest import ph2_like, write_ph2_layout

    root = write_ph2_layout(tmp_path / "ph2", SimpleNamespace(frame=ph2_like(synthetic, 6)), ".png")
    templates = write_templates(tmp_path / "t")
    args = ["train", "--dataset", "ph2", "--data-dir", str(root), "--preset", "ph2", "--image-size", "32",
            "--epochs-embed", "1", "--epochs-classifier", "2", "--val-fraction", "0.2", "--wandb", "disabled",
            "--no-onnx", "--augment-artefacts", "0.5"]
    assert main([*args, "--out", str(tmp_path / "no_templates")]) == 2
    assert not (tmp_path / "no_templates").exists()  # refused before anything was left behind
    assert main([*args, "--artefacts", str(templates), "--out", str(tmp_path / "run")]) == 0
    config = RunConfig.load(tmp_path / "run" / "config.json")
    assert config.data.augment_artefacts == 0.5 and (tmp_path / "run" / "metrics.json").is_file()
