"""The package as a library: its public API, its registries, and figures that leave a notebook's matplotlib
alone."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

import siamese
from siamese.config import RunConfig
from siamese.data import DataError, load_dataset
from siamese.data.registry import DATASET_REGISTRY, Dataset, register_dataset
from siamese.data.table import DatasetTable
from siamese.evaluation.figures import training_curves
from tests.conftest import REPO

EVERY_MODULE = """
import importlib, pkgutil, matplotlib, siamese
before = matplotlib.get_backend()
for info in pkgutil.walk_packages(siamese.__path__, "siamese."):
    if info.name != "siamese.__main__":
        importlib.import_module(info.name)
print(before, matplotlib.get_backend())
"""


def test_importing_every_module_leaves_the_matplotlib_backend_as_it_was():
    env = {**os.environ, "MPLBACKEND": "svg", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", EVERY_MODULE], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["svg", "svg"]


def test_a_figure_is_written_without_a_pyplot_figure_left_open(tmp_path):
    import matplotlib.pyplot as plt

    history = pd.DataFrame({"stage": "embed", "epoch": [1, 2], "loss": [0.5, 0.4]})
    path = training_curves(history, "embed", tmp_path / "curves.png")
    assert Image.open(path).size[0] > 0
    assert plt.get_fignums() == []


def test_the_public_api_is_listed_and_loads_on_first_use():
    code = "import sys, siamese; print(sorted(m for m in ('torch', 'pandas') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": str(REPO)},
                         capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert set(siamese.__all__) <= set(dir(siamese))
    assert not {name for name in dir(siamese) if not name.startswith("__")} - set(siamese.__all__)  # no helpers
    assert all(callable(getattr(siamese, name)) for name in siamese.__all__)
    assert siamese.RunConfig is RunConfig and siamese.preset("tiny").preset == "tiny"
    with pytest.raises(AttributeError, match="no attribute 'train'"):
        siamese.train  # noqa: B018


def test_load_run_reads_a_finished_run_back(run_dir):
    run = siamese.load_run(run_dir)
    assert run.config == RunConfig.load(run_dir / "config.json")
    assert run.metrics == json.loads((run_dir / "metrics.json").read_text())
    assert set(run.split["split"]) == {"train", "val", "test"}
    assert run.predictor().config == run.config
    shown = repr(run)  # one line for a notebook cell, not the config and metrics.json in full
    scored = run.metrics["classifier"]["balanced_accuracy"]
    assert "\n" not in shown and len(shown) < 300 and f"balanced_accuracy {scored:.3f}" in shown, shown
    counts = run.split["split"].value_counts()
    assert f"train/val/test={counts['train']}/{counts['val']}/{counts['test']}" in shown
    with pytest.raises(FileNotFoundError, match="missing: no such folder"):
        siamese.load_run(run_dir / "missing")
    (run_dir.parent / "not_a_run").mkdir(exist_ok=True)
    with pytest.raises(FileNotFoundError, match="config.json: not found"):
        siamese.load_run(run_dir.parent / "not_a_run")


def test_a_dataset_registered_by_decorator_is_loaded_and_listed(monkeypatch):
    monkeypatch.setattr("siamese.data.registry.DATASET_REGISTRY", dict(DATASET_REGISTRY))
    frame = pd.DataFrame({"image_id": ["a", "b"], "label": ["x", "y"], "group": ["a", "b"], "dataset": "two",
                          "index": [0, 1]})

    @register_dataset("two", preset="tiny")
    def _two(source):
        return DatasetTable(frame, np.zeros((2, 8, 8, 3), dtype=np.uint8))

    from siamese.data import registry

    assert registry.DATASET_REGISTRY["two"] == Dataset("two", _two, "tiny", None)
    assert load_dataset("two").classes == ["x", "y"]
    with pytest.raises(ValueError, match="registered already"):
        register_dataset("two")(_two)
    with pytest.raises(DataError, match="unknown dataset 'three'; choose from"):
        load_dataset("three")


def test_each_dataset_starts_from_its_registered_preset():
    from siamese.cli import build_parser, config_from_args

    chosen = {name: config_from_args(build_parser().parse_args(["train", "--dataset", name])).preset
              for name in ("digits", "ph2", "isic2020", "ham10000", "csv")}
    assert chosen == {"digits": "tiny", "ph2": "ph2", "isic2020": "isic", "ham10000": "ham", "csv": "lightweight"}
