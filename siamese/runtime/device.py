"""Device choice, seeding and mixed precision, decided once per run."""

from __future__ import annotations

import contextlib
import os
import platform
import random
from collections.abc import Iterator

import numpy as np
import torch


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but no CUDA device is available")
    return device


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seeds every generator a run draws from; ``deterministic`` also makes torch refuse or replace
    kernels whose results depend on scheduling (CUDA needs ``CUBLAS_WORKSPACE_CONFIG`` for that, set here)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(deterministic)


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on CUDA (no loss scaling needed); a no-op on CPU, where it rarely pays."""
    if enabled and device.type == "cuda":
        with torch.autocast("cuda", dtype=torch.bfloat16):
            yield
    else:
        yield


def to_device(batch: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    batch = batch.to(device, non_blocking=True)
    if channels_last and device.type == "cuda":
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def machine_description() -> str:
    """What a reported figure was measured on: seeded runs repeat on one machine, not across machines."""
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPU cores "
            f"({threads} torch thread{'s' if threads != 1 else ''}), {gpu}, torch {torch.__version__}, "
            f"Python {platform.python_version()}")
