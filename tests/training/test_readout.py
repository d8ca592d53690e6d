"""The stage-2 read-out: the linear classifier and its weight decay chosen on validation, the class-prior logit
adjustment, and test-time augmentation of the finetune reference."""

import json

import numpy as np
import pytest
import torch
from sklearn.metrics import balanced_accuracy_score
from torch import nn
from torch.utils.data import TensorDataset

from siamese.config import ClassifierConfig
from siamese.models.classifier import DenseClassifier
from siamese.runtime.device import Compute
from siamese.runtime.tracking import Tracker
from siamese.training.classify import (
    TAUS,
    ClassifierTrainer,
    check_classifier_settings,
    classifier_choice,
    fit_logit_adjustment,
    predict_logits,
)
from siamese.training.finetune import predict


def blobs(n: int, shares: list[float], seed: int, spread: float = 1.6) -> tuple[np.ndarray, np.ndarray]:
    """``n`` 8-d points of ``len(shares)`` overlapping Gaussian classes drawn with those shares."""
    rng = np.random.default_rng(seed)
    y = rng.choice(len(shares), size=n, p=shares)
    centres = np.random.default_rng(99).normal(size=(len(shares), 8))
    return (centres[y] + spread * rng.normal(size=(n, 8))).astype(np.float32), y


def trainer(tmp_path, n_classes: int, cfg: ClassifierConfig) -> ClassifierTrainer:
    return ClassifierTrainer(n_classes, 8, cfg=cfg, device=torch.device("cpu"), run_dir=tmp_path,
                             tracker=Tracker(tmp_path, {}, "disabled"))


@pytest.mark.parametrize("n_classes", [2, 3])
def test_the_linear_readout_trains_its_loss_falls_and_the_weight_decay_is_chosen(tmp_path, n_classes):
    x, y = blobs(600, [1 / n_classes] * n_classes, seed=0)
    cfg = ClassifierConfig(hidden=(), epochs=6, weight_decays=(0.0, 0.1), select="loss")
    stage2 = trainer(tmp_path, n_classes, cfg)
    history = stage2.fit(x[:400], y[:400], x[400:], y[400:])
    assert [(row["weight_decay"], row["epoch"]) for row in history] == [(w, e) for w in (0.0, 0.1) for e in range(1, 7)]
    for decay in (0.0, 0.1):
        losses = [row["loss"] for row in history if row["weight_decay"] == decay]
        assert losses[-1] < losses[0]
    model = stage2.load_best()
    assert [type(layer) for layer in model.layers] == [nn.Linear]  # one dense layer: logistic regression
    best = min(history, key=lambda row: row["val_loss"])
    choice = classifier_choice(tmp_path / "classifier.pt")
    assert (choice["weight_decay"], choice["epoch"]) == (best["weight_decay"], best["epoch"])
    assert choice["hidden"] == []


def test_logit_adjustment_raises_balanced_accuracy_on_an_imbalanced_set(tmp_path):
    """Trained to convergence on a 90/7/3 split without balancing, the classifier favours the big class; the
    offset fitted on validation images drawn the same way moves its decisions towards the small ones on
    held-out images."""
    shares = [0.9, 0.07, 0.03]
    x_train, y_train = blobs(1500, shares, seed=1, spread=1.0)
    x_val, y_val = blobs(1500, shares, seed=2, spread=1.0)
    x_test, y_test = blobs(3000, shares, seed=3, spread=1.0)
    stage2 = trainer(tmp_path, 3, ClassifierConfig(hidden=(), epochs=30, lr=0.02))
    stage2.fit(x_train, y_train, x_val, y_val)
    model = stage2.load_best()
    before = balanced_accuracy_score(y_test, predict_logits(model, x_test, torch.device("cpu")).argmax(axis=1))
    tau = stage2.adjust_logits(model, x_val, y_val, y_train)
    with torch.no_grad():
        adjusted = model.probabilities(model(torch.from_numpy(x_test))).numpy()
    after = balanced_accuracy_score(y_test, adjusted.argmax(axis=1))
    assert tau > 0
    assert after > before + 0.03
    reloaded = DenseClassifier.from_checkpoint(tmp_path / "classifier.pt").eval()
    with torch.no_grad():
        np.testing.assert_allclose(reloaded.probabilities(reloaded(torch.from_numpy(x_test))).numpy(), adjusted,
                                   atol=1e-6)
    assert classifier_choice(tmp_path / "classifier.pt")["logit_adjustment_tau"] == tau


def test_a_binary_logit_adjustment_is_a_shift_of_the_one_logit():
    logits = np.array([[-2.0], [-0.5], [0.3], [1.0]])
    y_val = np.array([0, 1, 1, 1])
    tau, offset = fit_logit_adjustment(logits, y_val, np.array([0, 0, 0, 1]), 2)
    assert offset.shape == (1,)
    assert balanced_accuracy_score(y_val, (logits[:, 0] + offset[0] > 0).astype(int)) == 1.0
    assert tau > 0  # the rare positive class gets the push


class Lopsided(nn.Module):
    """Logits that depend on where the bright pixels are, so that flips change them."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255
        h, w = x.shape[2] // 2, x.shape[3] // 2
        return torch.stack([x[:, :, :h, :w].mean((1, 2, 3)), x[:, :, h:, :].mean((1, 2, 3)),
                            x[:, :, :, w:].mean((1, 2, 3))], dim=1) * 10


def test_finetune_tta_averages_the_flipped_views():
    images = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    dataset = TensorDataset(images, torch.zeros(5, dtype=torch.long))
    compute = Compute(False, False)
    model, device = Lopsided(), torch.device("cpu")
    one = predict(model, dataset, device, 2, compute)
    views = [images, images.flip(3), images.flip(2), images.flip(2).flip(3)]
    by_hand = np.mean([predict(model, TensorDataset(v, torch.zeros(5)), device, 2, compute) for v in views], axis=0)
    four = predict(model, dataset, device, 2, compute, views=4)
    np.testing.assert_allclose(four, by_hand, atol=1e-6)
    assert not np.allclose(four, one, atol=1e-3)
    np.testing.assert_allclose(four.sum(axis=1), 1, atol=1e-6)


@pytest.mark.parametrize(("settings", "message"), [
    ({"weight_decays": ()}, "--weight-decays must be one or more"),
    ({"weight_decays": (0.0, -1e-3)}, "--weight-decays must be one or more"),
    ({"weight_decays": (float("inf"),)}, "--weight-decays must be one or more"),
    ({"hidden": (64, 0)}, "--classifier-hidden sizes must be at least 1"),
    ({"select": "auc"}, "classifier.select must be one of"),
])
def test_stage2_settings_that_cannot_train_are_one_clear_error(settings, message):
    with pytest.raises(ValueError, match=message):
        check_classifier_settings(ClassifierConfig(**settings))


def test_the_command_line_and_a_settings_file_reach_the_readout_settings():
    from siamese.cli import build_parser, config_from_args
    from siamese.settings import run_config

    args = build_parser().parse_args(["train", "--classifier-hidden", "32", "--weight-decays", "0", "0.01",
                                      "--logit-adjustment"])
    classifier = config_from_args(args).classifier
    assert classifier.hidden == (32,)
    assert classifier.weight_decays == (0.0, 0.01)
    assert classifier.logit_adjustment is True
    assert run_config({"classifier.hidden": []}).classifier.hidden == ()  # one linear layer, from a file


def test_a_run_with_the_linear_readout_and_logit_adjustment_records_its_choices(tmp_path):
    from siamese.inference.graph import InferenceGraph
    from siamese.workflows.scoring import rescore_run
    from siamese.workflows.training_run import run_training
    from tests.conftest import tiny_config

    config = tiny_config(tmp_path / "run", epochs_embed=1)
    config.classifier.epochs, config.classifier.hidden = 2, ()
    config.classifier.weight_decays, config.classifier.logit_adjustment = (0.0, 0.01), True
    config.references = ()
    run = run_training(config)
    metrics = json.loads((run / "metrics.json").read_text())
    choice = metrics["classifier_choice"]
    assert choice["hidden"] == [] and choice["weight_decay"] in (0.0, 0.01) and choice["epoch"] in (1, 2)
    assert choice["logit_adjustment_tau"] in TAUS
    graph = InferenceGraph.from_run(run)  # what predict and the export load: the offset travels with it
    assert graph.classifier.arch.get("logit_offset") is None or choice["logit_adjustment_tau"] != 0
    again = rescore_run(run, device="cpu")
    assert again["classifier"]["balanced_accuracy"] == metrics["classifier"]["balanced_accuracy"]
