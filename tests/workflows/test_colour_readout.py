"""Stage 2 on the embedding and the colour statistics (``--classifier-inputs embedding+colour``): trained on
the features the run's references share, and every later reader of ``classifier.pt`` (predict with torch
and with the ONNX export, the explorer, Grad-CAM, rescore) computes the same inputs from the pixels."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from siamese.cli import main
from siamese.config import ClassifierConfig
from siamese.data.embedded import make_synthetic
from siamese.diagnostics.page import page_data
from siamese.diagnostics.projection import visualize_run
from siamese.diagnostics.saliency import saliency_maps
from siamese.inference.predictor import Predictor
from siamese.models import DenseClassifier
from siamese.models.colour import COLOUR_FEATURES
from siamese.runtime.tracking import Tracker
from siamese.training.classify import ClassifierTrainer
from siamese.workflows.scoring import rescore_run
from siamese.workflows.training_run import run_training
from tests.conftest import tiny_config, write_ham_layout


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("colour")
    data = write_ham_layout(root / "ham", make_synthetic(lesions_per_class=6, image_size=48, seed=11))
    config = tiny_config(root / "run", epochs_embed=2, dataset="ham10000", data_dir=str(data))
    config.classifier.inputs = "embedding+colour"
    config.export_onnx = True
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return run_training(config), data


def test_the_classifier_reads_the_embedding_then_the_colour_statistics_the_references_use(colour_run):
    run, _ = colour_run
    classifier = DenseClassifier.from_checkpoint(run / "classifier.pt")
    embedding_dim = json.loads((run / "config.json").read_text())["model"]["embedding_dim"]
    assert classifier.colour_inputs and classifier.input_width == embedding_dim + COLOUR_FEATURES
    assert json.loads((run / "config.json").read_text())["classifier"]["inputs"] == "embedding+colour"
    # the standardisation was fitted on the oversampled training rows of [embedding, colour_baseline's features]
    train = np.hstack([np.load(run / "embeddings" / "train.npz")["embedding"],
                       np.load(run / "references" / "colour_train.npz")["features"]])
    assert np.allclose(classifier.center.numpy()[embedding_dim:], train[:, embedding_dim:].mean(axis=0),
                       rtol=0.5, atol=0.05)


@pytest.mark.parametrize("engine", ["torch", "onnx"])
def test_predict_repeats_the_runs_own_evaluation_from_the_pixels(colour_run, engine):
    run, data = colour_run
    tested = pd.read_csv(run / "test_predictions.csv")
    classes = json.loads((run / "preprocess.json").read_text())["classes"]
    paths = {p.stem: p for p in data.rglob("*.jpg")}
    predictor = Predictor(run, engine=engine)
    assert predictor.engine.name == engine
    answers = predictor.predict([paths[i] for i in tested["image_id"]], top_k=len(classes))
    got = np.array([[dict(a.top_k)[c] for c in classes] for a in answers])
    expected = tested[[f"classifier_p_{c}" for c in classes]].to_numpy()
    assert np.abs(got - expected).max() < (1e-5 if engine == "torch" else 1e-3)


def test_rescore_explorer_and_grad_cam_read_the_same_inputs(colour_run, tmp_path):
    run, data = colour_run
    before = json.loads((run / "metrics.json").read_text())["classifier"]
    after = rescore_run(run, device="cpu")["classifier"]
    assert after["balanced_accuracy"] == pytest.approx(before["balanced_accuracy"], abs=1e-9)
    assert after["roc_auc"] == pytest.approx(before["roc_auc"], abs=1e-6)

    visualize_run(run, ("tsne",), html=True)
    page = page_data(run / "projections" / "explorer.html")
    predictions = pd.read_csv(run / "test_predictions.csv", dtype={"image_id": str}).set_index("image_id")
    test = [i for i in range(page["drawn"]) if page["records"]["split"][i] == "test"]
    expected = predictions.loc[[page["records"]["id"][i] for i in test], [f"classifier_p_{c}" for c in page["classes"]]]
    np.testing.assert_allclose([page["proba"][i] for i in test], expected.to_numpy(), atol=1e-3)

    written = saliency_maps(run, sorted(data.rglob("*.jpg"))[:2], tmp_path / "cams")
    assert len(written) == 2 and all(p.stat().st_size > 0 for p in written)


def test_inputs_of_the_wrong_width_are_refused_by_name(tmp_path):
    trainer = ClassifierTrainer(3, 8, cfg=ClassifierConfig(inputs="embedding+colour", epochs=1),
                                device=torch.device("cpu"), run_dir=tmp_path, tracker=Tracker(tmp_path, {}, "disabled"))
    x, y = np.zeros((6, 8), dtype=np.float32), np.arange(6) % 3
    with pytest.raises(ValueError, match=r"stage 2 reads 74 values per image \(embedding\+colour\); the training"):
        trainer.fit(x, y, x, y)


def test_an_unknown_input_kind_is_refused_before_a_folder_is_claimed(tmp_path, capsys):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as refused:
        main(["train", "--classifier-inputs", "colour", "--out", str(out)])
    assert refused.value.code == 2 and not out.exists()
    assert "--classifier-inputs: invalid choice: 'colour'" in capsys.readouterr().err
