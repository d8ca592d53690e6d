"""Memory format and precision (``--compute``) and thread settings: what is asked is what runs and is recorded."""

import json
import warnings

import numpy as np
import pytest
import torch

from siamese.cli import build_parser, config_from_args
from siamese.config import EmbedTrainConfig, RunConfig
from siamese.data import ImageDataset, build_transform
from siamese.data.images import ArrayPixels
from siamese.runtime import device as runtime
from siamese.runtime.device import Compute, autocast, configure_threads, resolve_compute, to_device, usable_cores
from siamese.runtime.tracking import Tracker
from siamese.training.embeddings import compute_embeddings
from siamese.training.metric_learning import MetricData, MetricTrainer
from tests.conftest import tiny_config

CPU = torch.device("cpu")


@pytest.fixture
def synthetic_dataset() -> ImageDataset:
    """32 random 32 px uint8 images in 4 classes."""
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 32, 3), dtype=np.uint8)
    return ImageDataset(ArrayPixels(pixels, np.arange(32), 32), np.arange(32) % 4, build_transform("none"))


def test_auto_on_a_cpu_is_channels_last_in_float32_and_every_choice_resolves():
    assert resolve_compute("auto", CPU) == Compute(channels_last=True, bf16=False)
    assert resolve_compute("fp32", CPU) == Compute(channels_last=False, bf16=False)
    assert resolve_compute("channels_last", CPU) == Compute(channels_last=True, bf16=False)
    assert resolve_compute("bf16", CPU) == Compute(channels_last=True, bf16=True)
    assert [resolve_compute(c, CPU).name for c in ("fp32", "channels_last", "bf16")] == ["fp32", "channels_last",
                                                                                         "bf16"]
    with pytest.raises(ValueError, match="compute must be one of"):
        resolve_compute("fp16", CPU)


def test_bf16_asked_of_a_cpu_that_would_emulate_it_is_warned_about(monkeypatch):
    monkeypatch.setattr(runtime, "native_bf16", lambda device: False)
    with pytest.warns(UserWarning, match="no native bfloat16"):
        resolve_compute("bf16", CPU, warn=True)
    monkeypatch.setattr(runtime, "native_bf16", lambda device: True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_compute("bf16", CPU, warn=True).bf16


def test_cpu_autocast_runs_convolutions_in_bf16_only_when_enabled():
    conv = torch.nn.Conv2d(3, 4, 3)
    x = to_device(torch.rand(2, 3, 8, 8), CPU, channels_last=True)
    assert x.is_contiguous(memory_format=torch.channels_last)
    with autocast(CPU, True):
        assert conv(x).dtype == torch.bfloat16
    with autocast(CPU, False):
        assert conv(x).dtype == torch.float32
    assert to_device(torch.rand(2, 5), CPU, channels_last=True).shape == (2, 5)  # not an image batch: unchanged


def test_a_run_with_auto_on_the_cpu_records_and_trains_in_channels_last(run_dir):
    saved = json.loads((run_dir / "config.json").read_text())
    assert saved["compute"] == "channels_last" and "amp" not in saved


def test_the_stage_1_trainer_holds_its_weights_in_the_format_it_was_given(synthetic_dataset, tmp_path):
    from siamese.models import EmbeddingNet

    for channels_last in (True, False):
        torch.manual_seed(0)
        model = EmbeddingNet("resnet18", "none", embedding_dim=16, head_hidden=32)
        trainer = MetricTrainer(model, MetricData(synthetic_dataset, synthetic_dataset, synthetic_dataset),
                                EmbedTrainConfig(batch_size=16, epochs=1), device=CPU, run_dir=tmp_path,
                                tracker=Tracker(tmp_path, {}, "disabled"), amp=False, channels_last=channels_last)
        stem = trainer.model.backbone.conv1.weight
        assert stem.is_contiguous(memory_format=torch.channels_last) == channels_last


def test_channels_last_changes_the_layout_not_the_embeddings(synthetic_dataset):
    from siamese.models import EmbeddingNet

    torch.manual_seed(0)
    model = EmbeddingNet("resnet18", "none", embedding_dim=16, head_hidden=32)
    plain = compute_embeddings(model, synthetic_dataset, CPU, 8, channels_last=False, amp=False)
    nhwc = compute_embeddings(model, synthetic_dataset, CPU, 8, channels_last=True, amp=False)
    assert plain.shape == nhwc.shape == (len(synthetic_dataset), 16)
    assert abs(plain - nhwc).max() < 1e-4


def test_the_compute_flag_reaches_the_config_and_a_resume_may_change_it(tmp_path):
    args = build_parser().parse_args(["train", "--dataset", "synthetic", "--compute", "fp32"])
    assert config_from_args(args).compute == "fp32"
    assert config_from_args(build_parser().parse_args(["train"])).compute == "auto"
    from siamese.config import resumed

    saved = tiny_config(tmp_path / "run")
    saved.compute = "channels_last"
    assert resumed(saved, {"compute": "fp32"}, "config.json").compute == "fp32"


def test_configs_written_before_compute_existed_still_load():
    base = RunConfig().to_dict()
    del base["compute"]
    assert RunConfig.from_dict({**base, "amp": True, "channels_last": True}).compute == "auto"
    assert RunConfig.from_dict({**base, "amp": False, "channels_last": True}).compute == "channels_last"
    assert RunConfig.from_dict({**base, "amp": False, "channels_last": False}).compute == "fp32"


def test_threads_follow_the_usable_cores_unless_the_user_set_them(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
        assert configure_threads() == usable_cores() == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "1")
        assert configure_threads() == 1 == torch.get_num_threads()
        monkeypatch.setenv("OMP_NUM_THREADS", "")
        assert configure_threads() == usable_cores()
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(("avx512_bf16", "amx", "suffix"), [(True, False, "+BF16"), (False, True, "+BF16"),
                                                            (False, False, "")])
def test_the_machine_named_in_every_figure_gives_its_vector_capability(monkeypatch, avx512_bf16, amx, suffix):
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: avx512_bf16)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: amx)
    capability = f"{torch.backends.cpu.get_cpu_capability()}{suffix}"
    assert runtime.cpu_capability() == capability
    assert f"({capability}, " in runtime.machine_description()
