"""Stage 1's losses and miners: each one learns, bad choices fail up front, the choice is recorded."""

import numpy as np
import pandas as pd
import pytest
import torch

from siamese.cli import main
from siamese.config import LOSSES, EmbedTrainConfig, RunConfig
from siamese.models import EmbeddingNet
from siamese.training.losses import StageOneObjective, check_objective, resolve_objective
from siamese.workflows.training_run import run_training
from tests.conftest import tiny_config


def _batch(synthetic, classes: int = 4, per_class: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    frame = synthetic.frame
    rows = [r for k in sorted(frame["label"].unique())[:classes]
            for r in frame.loc[frame["label"] == k, "index"].head(per_class)]
    images = torch.tensor(np.stack([synthetic.images[r][::2, ::2] for r in rows])).permute(0, 3, 1, 2)
    labels = torch.tensor(np.repeat(np.arange(classes), per_class))
    return images.contiguous(), labels


@pytest.mark.parametrize("loss", LOSSES)
def test_each_loss_trains_a_few_steps_on_tiny_images_and_its_loss_falls(loss, synthetic):
    torch.manual_seed(0)
    images, labels = _batch(synthetic)
    model = EmbeddingNet("resnet18", "none", embedding_dim=16, head_hidden=32, dropout=0.0)
    cfg = EmbedTrainConfig(loss=loss, ce_weight=0.5 if loss == "supcon" else 0.0)
    resolve_objective(cfg)
    objective = StageOneObjective(cfg, n_classes=4, embedding_dim=16)
    optimizer = torch.optim.Adam([{"params": model.parameters()},
                                  *objective.parameter_groups(cfg.lr, cfg.loss_lr_scale)], lr=cfg.lr)

    def full_loss() -> float:  # on every tuple of the batch, not only the mined ones, which change as it learns
        with torch.no_grad():
            return float(objective.loss(model(images), labels))

    before, steps = full_loss(), 0
    for _ in range(6):
        step_loss, _ = objective(model(images), labels)
        if step_loss is None:  # the miner found nothing to learn from: the trainer skips such a batch too
            continue
        optimizer.zero_grad()
        step_loss.backward()
        optimizer.step()
        steps += 1
    assert steps and full_loss() < before


@pytest.mark.integration
def test_a_loss_keeps_its_default_miner_and_a_miner_it_cannot_use_is_one_clear_error(tmp_path, capsys):
    for loss, miner in (("triplet", "semihard"), ("multi_similarity", "multi_similarity"), ("arcface", "none")):
        cfg = EmbedTrainConfig(loss=loss)
        resolve_objective(cfg)
        assert cfg.miner == miner
    check_objective(EmbedTrainConfig(loss="contrastive", miner="hard"))
    for bad, message in (({"loss": "cosface"}, "unknown loss 'cosface'"), ({"miner": "easy"}, "unknown miner 'easy'"),
                         ({"loss": "proxy_anchor", "miner": "hard"}, "proxy_anchor compares learned class proxies"),
                         ({"ce_weight": -1.0}, "--ce-weight must be")):
        with pytest.raises(ValueError, match=message):
            check_objective(EmbedTrainConfig(**bad))
    out = tmp_path / "run"
    code = main(["train", "--dataset", "synthetic", "--loss", "supcon", "--miner", "semihard", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["error: loss supcon compares every pair of the batch and takes no miner, but miner "
                                 "is semihard: drop --miner (embed.miner in a config file) or set it to none; "
                                 "miners go with triplet, contrastive, multi_similarity"]
    assert not out.exists()


@pytest.mark.integration
def test_a_proxy_loss_with_a_cross_entropy_head_is_recorded_and_its_proxies_are_checkpointed(tmp_path):
    config = tiny_config(tmp_path / "run", epochs_embed=2)
    config.embed.loss, config.embed.ce_weight, config.classifier.epochs = "proxy_anchor", 0.5, 2
    config.references = ()
    run_dir = run_training(config)
    saved = RunConfig.load(run_dir / "config.json").embed
    assert (saved.loss, saved.miner, saved.ce_weight, saved.loss_lr_scale) == ("proxy_anchor", "none", 0.5, 100.0)
    embed = pd.read_csv(run_dir / "history.csv").query("stage == 'embed'")
    assert embed["loss"].notna().all() and (embed["empty_batch_fraction"] == 0).all()
    progress = torch.load(run_dir / "checkpoints" / "embed_last.pt", weights_only=False)["progress"]
    assert progress["objective"]["loss.proxies"].shape == (7, config.model.embedding_dim)
    assert progress["objective"]["head.weight"].shape == (7, config.model.embedding_dim)
    assert "head.weight" not in torch.load(run_dir / "embedder.pt", weights_only=False)["state"]


def test_configs_saved_before_the_loss_was_a_choice_still_load():
    values = RunConfig().to_dict()
    values["embed"] = {k: v for k, v in values["embed"].items() if k not in ("loss", "miner", "ce_weight")}
    values["embed"]["triplets"] = "hard"
    assert RunConfig.from_dict(values).embed.miner == "hard"
