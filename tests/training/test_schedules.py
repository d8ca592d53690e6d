"""Learning-rate schedules: the cosine curve, groups keeping their ratios, resuming on the same curve, and both
stage 1 and the finetune reference following the run's choice."""

import pandas as pd
import pytest
import torch

from siamese.config import LR_SCHEDULES, RunConfig
from siamese.training import finetune
from siamese.training.schedules import lr_factor, set_scheduled_lr
from siamese.workflows.training_run import run_training
from tests.conftest import tiny_config


def _optimizer() -> torch.optim.Optimizer:
    head, backbone = torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)
    return torch.optim.Adam([{"params": backbone.parameters(), "lr": 1e-4}, {"params": head.parameters(), "lr": 1e-3}])


def test_cosine_falls_from_the_base_rate_to_zero_and_constant_stays():
    progress = [i / 20 for i in range(21)]
    cosine = [lr_factor("cosine", p) for p in progress]
    assert cosine[0] == pytest.approx(1.0) and cosine[10] == pytest.approx(0.5) and cosine[-1] == pytest.approx(0.0)
    assert all(a > b for a, b in zip(cosine[:-1], cosine[1:], strict=True))
    assert {lr_factor("constant", p) for p in progress} == {1.0}
    with pytest.raises(ValueError, match="unknown learning-rate schedule 'step'"):
        lr_factor("step", 0.5)
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\], not 1.5"):
        lr_factor("cosine", 1.5)


def test_each_group_keeps_its_share_of_the_rate_and_steps_do_not_compound():
    optimizer = _optimizer()
    for _ in range(3):  # the same step again gives the same rate, not a smaller one
        set_scheduled_lr(optimizer, "cosine", epoch=1, step=0, steps=10, epochs=4)
    rates = [group["lr"] for group in optimizer.param_groups]
    assert rates == pytest.approx([1e-4 * lr_factor("cosine", 0.25), 1e-3 * lr_factor("cosine", 0.25)])
    set_scheduled_lr(optimizer, "constant", epoch=3, step=9, steps=10, epochs=4)
    assert [group["lr"] for group in optimizer.param_groups] == pytest.approx([1e-4, 1e-3])


def test_a_resumed_optimizer_continues_on_the_same_curve():
    running = _optimizer()
    set_scheduled_lr(running, "cosine", epoch=1, step=9, steps=10, epochs=3)
    resumed = _optimizer()
    resumed.load_state_dict(running.state_dict())  # what --resume restores from embed_last.pt
    for optimizer in (running, resumed):
        set_scheduled_lr(optimizer, "cosine", epoch=2, step=5, steps=10, epochs=3)
    assert [g["lr"] for g in resumed.param_groups] == pytest.approx([g["lr"] for g in running.param_groups])
    assert [g["lr"] for g in resumed.param_groups] == pytest.approx([1e-4 * lr_factor("cosine", 25 / 30),
                                                                     1e-3 * lr_factor("cosine", 25 / 30)])


@pytest.mark.integration
@pytest.mark.parametrize("schedule", LR_SCHEDULES)
def test_stage_one_and_the_finetune_reference_follow_the_runs_schedule(schedule, tmp_path, monkeypatch):
    seen = []
    recorded = finetune.set_scheduled_lr

    def record(optimizer, name, epoch, step, steps, epochs):
        seen.append(name)
        recorded(optimizer, name, epoch, step, steps, epochs)

    monkeypatch.setattr(finetune, "set_scheduled_lr", record)
    config = tiny_config(tmp_path / "run", epochs_embed=2)
    config.embed.lr_schedule, config.classifier.epochs, config.references = schedule, 2, ("finetune",)
    run_dir = run_training(config)
    assert RunConfig.load(run_dir / "config.json").embed.lr_schedule == schedule
    groups = torch.load(run_dir / "checkpoints" / "embed_last.pt", weights_only=False)["optimizer"]["param_groups"]
    final = [group["lr"] / group["initial_lr"] for group in groups]
    # the last step of the second of two epochs is at least halfway, where cosine has halved the rate
    assert final == pytest.approx([1.0] * len(groups)) if schedule == "constant" else max(final) <= 0.5 + 1e-9
    assert seen and set(seen) == {schedule}
    rates = pd.read_csv(run_dir / "history.csv").query("stage == 'embed'")["lr"].tolist()  # the head's, per epoch
    assert len(rates) == 2 and (rates == pytest.approx([config.embed.lr] * 2) if schedule == "constant"
                                else rates[1] < rates[0] <= config.embed.lr)
    assert f"learning rate {config.embed.lr:g} ({schedule};" in (run_dir / "report.md").read_text()
