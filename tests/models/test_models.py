import numpy as np
import pytest
import torch

from siamese.config import BACKBONES, ClassifierConfig
from siamese.models import (
    CheckpointError,
    DenseClassifier,
    EmbeddingNet,
    WeightsUnavailableError,
    check_input_size,
    load_checkpoint,
    save_checkpoint,
)
from siamese.models.backbones import build_backbone
from siamese.models.registry import BACKBONE_REGISTRY, register_backbone
from siamese.runtime.tracking import Tracker
from siamese.training.classify import ClassifierTrainer


def test_embeddings_are_unit_length():
    net = EmbeddingNet("resnet18", "none", embedding_dim=16, head_hidden=32).eval()
    out = net(torch.randn(3, 3, 32, 32))
    assert out.shape == (3, 16)
    torch.testing.assert_close(out.norm(dim=1), torch.ones(3))


def test_the_backbone_registry_refuses_a_name_twice_and_names_the_choices():
    assert tuple(BACKBONE_REGISTRY) == BACKBONES
    with pytest.raises(ValueError, match="registered already"):
        register_backbone("resnet18", feature_dim=512, min_input_size=32)
    with pytest.raises(ValueError, match="unknown backbone 'vgg16'; choose from"):
        build_backbone("vgg16", "none")


def test_inception_minimum_size_is_checked():
    with pytest.raises(ValueError, match="at least 75 px"):
        check_input_size("inception_v3", 64)
    check_input_size("inception_v3", 75)


def test_local_weights_file(tmp_path):
    source, _ = build_backbone("resnet18", "none")
    torch.save({f"module.{k}": v for k, v in source.state_dict().items()}, tmp_path / "r18.pth")
    loaded, dim = build_backbone("resnet18", str(tmp_path / "r18.pth"))
    assert dim == 512
    torch.testing.assert_close(loaded.conv1.weight, source.conv1.weight)
    torch.save({"something": torch.zeros(1)}, tmp_path / "wrong.pth")
    with pytest.raises(WeightsUnavailableError, match="not a state dict of resnet18"):
        build_backbone("resnet18", str(tmp_path / "wrong.pth"))
    with pytest.raises(WeightsUnavailableError, match="not found"):
        build_backbone("resnet18", str(tmp_path / "absent.pth"))
    (tmp_path / "table.csv").write_text("path,label\na.jpg,nv\n")
    with pytest.raises(WeightsUnavailableError, match=r"table.csv: not a torch state-dict file \(\w+\)$"):
        build_backbone("resnet18", str(tmp_path / "table.csv"))


def test_imagenet_download_failure_says_what_to_do(monkeypatch, tmp_path):
    import urllib.error

    from torchvision import models

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(models, "get_model", offline)
    with pytest.raises(WeightsUnavailableError, match="--weights none"):
        build_backbone("resnet18", "imagenet")


def test_checkpoint_of_another_model_is_refused(tmp_path):
    net = EmbeddingNet("resnet18", "none", embedding_dim=16, head_hidden=32)
    save_checkpoint({"arch": net.arch, "state": net.state_dict()}, tmp_path / "e.pt")
    assert not list(tmp_path.glob("*.partial"))
    other = EmbeddingNet("resnet18", "none", embedding_dim=32, head_hidden=32)
    with pytest.raises(CheckpointError, match="embedding_dim: checkpoint has 16, model needs 32"):
        load_checkpoint(tmp_path / "e.pt", other.arch)
    clf = DenseClassifier(16, 7)
    save_checkpoint({"arch": clf.arch, "state": clf.state_dict()}, tmp_path / "c.pt")
    with pytest.raises(CheckpointError, match="n_classes"):
        load_checkpoint(tmp_path / "c.pt", DenseClassifier(16, 2).arch)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_binary_head_is_one_sigmoid_and_multiclass_softmax():
    binary, multi = DenseClassifier(8, 2), DenseClassifier(8, 7)
    x = torch.randn(4, 8)
    assert binary(x).shape == (4, 1) and multi(x).shape == (4, 7)
    torch.testing.assert_close(binary.probabilities(binary(x)).sum(1), torch.ones(4))
    assert binary.loss(binary(x), torch.tensor([0, 1, 0, 1])).ndim == 0


@pytest.mark.slow
@pytest.mark.parametrize("backbone", ["inception_v3", "resnet50"])
def test_full_backbones_forward_backward_at_256(backbone):
    net = EmbeddingNet(backbone, "none").train()
    out = net(torch.randn(2, 3, 256, 256))
    out.sum().backward()
    assert out.shape == (2, 128)
    assert net.backbone.conv1.weight.grad is not None if backbone == "resnet50" else \
        net.backbone.Conv2d_1a_3x3.conv.weight.grad is not None


def test_normalisation_statistics_travel_with_the_checkpoint(tmp_path):
    net = EmbeddingNet("resnet18", "none", embedding_dim=8, head_hidden=16, mean=(0.6, 0.5, 0.4),
                       std=(0.2, 0.2, 0.2)).eval()
    save_checkpoint({"arch": net.arch, "state": net.state_dict()}, tmp_path / "e.pt")
    loaded = EmbeddingNet.from_checkpoint(tmp_path / "e.pt").eval()
    images = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    by_hand = (images.float() / 255 - torch.tensor([0.6, 0.5, 0.4]).view(1, 3, 1, 1)) / 0.2
    torch.testing.assert_close(loaded(images), net(by_hand))


def test_classifier_learns_embeddings_packed_into_a_small_cap(tmp_path):
    """What a briefly trained embedder gives: every unit vector within a fraction of a degree of one
    direction. (A fixed sqrt(d) input scaling left this at chance, 0.135.)"""
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 7, 700)
    directions = rng.normal(size=(7, 32))
    x = np.eye(32)[0] + 0.003 * directions[labels] + 0.001 * rng.normal(size=(700, 32))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    trainer = ClassifierTrainer(7, 32, cfg=ClassifierConfig(epochs=15), device=torch.device("cpu"), run_dir=tmp_path,
                                tracker=Tracker(tmp_path, {}, "disabled"))
    history = trainer.fit(x[:500], labels[:500], x[500:], labels[500:])
    assert history[-1]["val_accuracy"] > 0.8
    assert trainer.model.scale.max() < 0.01


def test_checkpoint_of_an_older_layout_fails_with_a_sentence(tmp_path):
    net = EmbeddingNet("resnet18", "none", embedding_dim=8, head_hidden=16)
    state = {k: v for k, v in net.state_dict().items() if not k.startswith("normalize.")}
    save_checkpoint({"arch": net.arch, "state": state}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match=r"old\.pt: weights do not fit this version's model"):
        EmbeddingNet.from_checkpoint(tmp_path / "old.pt")
    save_checkpoint({"arch": net.arch, "state": net.state_dict()}, tmp_path / "new.pt")
    assert EmbeddingNet.from_checkpoint(tmp_path / "new.pt").arch == net.arch


def test_test_time_augmentation_makes_the_embedding_flip_and_rotation_invariant(tmp_path):
    torch.manual_seed(0)
    x = torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8)
    plain = EmbeddingNet("resnet18", "none", embedding_dim=8, head_hidden=16).eval()
    assert not torch.allclose(plain(x), plain(x.flip(3)), atol=1e-4)
    four = EmbeddingNet("resnet18", "none", embedding_dim=8, head_hidden=16, tta=4).eval()
    four.load_state_dict(plain.state_dict())
    assert torch.allclose(four(x), four(x.flip(3)), atol=1e-5) and torch.allclose(four(x), four(x.flip(2)), atol=1e-5)
    assert torch.allclose(four(x).norm(dim=1), torch.ones(2), atol=1e-5)
    eight = EmbeddingNet("resnet18", "none", embedding_dim=8, head_hidden=16, tta=8).eval()
    eight.load_state_dict(plain.state_dict())
    assert torch.allclose(eight(x), eight(torch.rot90(x, 1, (2, 3))), atol=1e-5)
    save_checkpoint({"arch": eight.arch, "state": eight.state_dict()}, tmp_path / "e.pt")
    assert EmbeddingNet.from_checkpoint(tmp_path / "e.pt").tta == 8
    four.train()
    assert four(x).shape == (2, 8)  # training sees single views (augmentation does the rest)
    with pytest.raises(ValueError, match="tta must be one of"):
        EmbeddingNet("resnet18", "none", tta=3)


def test_stage_pooling_concatenates_every_resnet_stage(tmp_path):
    backbone, dim = build_backbone("resnet18", "none", pooling="stages")
    assert dim == 64 + 128 + 256 + 512
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, dim)
    with pytest.raises(ValueError, match="needs a ResNet"):
        build_backbone("inception_v3", "none", pooling="stages")
    net = EmbeddingNet("resnet18", "none", embedding_dim=8, head_hidden=16, pooling="stages").eval()
    save_checkpoint({"arch": net.arch, "state": net.state_dict()}, tmp_path / "s.pt")
    again = EmbeddingNet.from_checkpoint(tmp_path / "s.pt").eval()
    x = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(again(x), net(x))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "s.pt", {**net.arch, "pooling": "last"})


def test_colour_statistics_match_hand_computed_values_and_pillow_hsv():
    from PIL import Image

    from siamese.models.colour import COLOUR_FEATURES, colour_statistics, pil_hsv

    half = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    half[0, 0, 0, :] = 255  # top row pure red, bottom row black
    stats = colour_statistics(half)[0]
    assert stats.shape == (COLOUR_FEATURES,)
    red_histogram, green_histogram = stats[:8], stats[8:16]
    assert red_histogram.tolist() == [0.5, 0, 0, 0, 0, 0, 0, 0.5]
    assert green_histogram.tolist() == [1, 0, 0, 0, 0, 0, 0, 0]
    mean, sd, skewness = stats[24:27], stats[27:30], stats[30:33]
    torch.testing.assert_close(mean, torch.tensor([0.5, 0, 0]))
    torch.testing.assert_close(sd, torch.tensor([0.5, 0, 0]))
    torch.testing.assert_close(skewness, torch.zeros(3))  # symmetric red; flat green and blue give 0, not NaN
    saturation_histogram = stats[33 + 8:33 + 16]
    assert saturation_histogram.tolist() == [0.5, 0, 0, 0, 0, 0, 0, 0.5]  # red: S 255; black: S 0
    pixels = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    pixels[:5] = pixels[:5, :, :1]  # grey pixels: hue and saturation 0
    expected = np.asarray(Image.fromarray(pixels).convert("HSV")).astype(np.float32)
    ours = pil_hsv(torch.from_numpy(pixels).permute(2, 0, 1)[None])[0].permute(1, 2, 0).numpy()
    np.testing.assert_array_equal(ours, expected)


def test_colour_branch_feeds_the_head_whatever_the_input_form_and_exports(tmp_path):
    from siamese.inference.export import OUTPUTS, export_checked
    from siamese.inference.graph import InferenceGraph
    from siamese.models.colour import COLOUR_FEATURES

    torch.manual_seed(0)
    net = EmbeddingNet("resnet18", "none", embedding_dim=8, head_hidden=16, colour_stats=True)
    assert net.head[0].in_features == BACKBONE_REGISTRY["resnet18"].feature_dim + COLOUR_FEATURES
    x = torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8)
    net.train()
    net(x)  # one training batch sets the colour batch norm's running statistics
    net.eval()
    torch.testing.assert_close(net(x), net(net.normalize(x)), atol=1e-5, rtol=0)
    noisy = EmbeddingNet("resnet18", "none", embedding_dim=8, head_hidden=16, colour_stats=True, colour_noise=0.5)
    noisy.load_state_dict(net.state_dict())
    noisy.eval()
    torch.testing.assert_close(noisy(x), net(x))  # the noise is a training-time regulariser only
    four = EmbeddingNet("resnet18", "none", embedding_dim=8, head_hidden=16, colour_stats=True, tta=4)
    four.load_state_dict(net.state_dict())
    four.eval()
    torch.testing.assert_close(four(x), four(x.flip(3)), atol=1e-5, rtol=0)
    noisy.train()
    assert not torch.allclose(noisy.colour(x), noisy.colour(x))
    redder = x.clone()
    redder[:, 0] = redder[:, 0] // 2 + 128
    assert not torch.allclose(net.colour(x), net.colour(redder))
    save_checkpoint({"arch": net.arch, "state": net.state_dict()}, tmp_path / "c.pt")
    again = EmbeddingNet.from_checkpoint(tmp_path / "c.pt").eval()
    torch.testing.assert_close(again(x), net(x))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "c.pt", {**net.arch, "colour_stats": False})
    graph = InferenceGraph(net, DenseClassifier(8, 3)).eval()
    assert export_checked(tmp_path, graph, 32, OUTPUTS, {}).stat().st_size > 0  # ONNX Runtime agreed within 1e-3
    with pytest.raises(ValueError, match="at least 0"):
        EmbeddingNet("resnet18", "none", colour_stats=True, colour_noise=-0.1)
    with pytest.raises(ValueError, match="needs --colour-stats"):
        EmbeddingNet("resnet18", "none", colour_noise=0.5)
