"""Learning-rate schedules over a training's steps, shared by stage 1 and the ``finetune`` reference.

A schedule scales each optimiser group's base rate (kept in the group as ``initial_lr``, the key torch's own
schedulers use, so it travels with the optimiser's state dict and a resumed run continues on the same curve)
by a factor of the share of training done. It holds no state of its own: the factor is computed from the
epoch and step, so an interrupted run resumes at the right rate.
"""

from __future__ import annotations

import math

import torch

from siamese.config import LR_SCHEDULES


def lr_factor(schedule: str, progress: float) -> float:
    """The multiple of the base rate at ``progress`` (the share of training steps done, 0 to 1).

    Raises ValueError for a schedule not in :data:`LR_SCHEDULES` or a progress outside [0, 1].
    """
    if not 0.0 <= progress <= 1.0:
        raise ValueError(f"training progress must lie in [0, 1], not {progress}")
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; choose from {', '.join(LR_SCHEDULES)}")


def set_scheduled_lr(optimizer: torch.optim.Optimizer, schedule: str, epoch: int, step: int, steps: int,
                     epochs: int) -> None:
    """Set every group of ``optimizer`` to its base rate times :func:`lr_factor` before step ``step`` (0-based)
    of the ``steps`` in epoch ``epoch`` (0-based) of ``epochs``."""
    progress = (epoch + step / max(steps, 1)) / max(epochs, 1)
    factor = lr_factor(schedule, min(progress, 1.0))
    for group in optimizer.param_groups:
        group.setdefault("initial_lr", group["lr"])
        group["lr"] = group["initial_lr"] * factor
