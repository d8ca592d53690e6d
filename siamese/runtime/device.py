"""Device choice, threads, seeding, memory format and mixed precision, decided once per run."""

from __future__ import annotations

import contextlib
import os
import platform
import random
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from siamese.runtime.compute_choices import COMPUTE_CHOICES


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


@dataclass(frozen=True)
class Compute:
    """The memory format and precision every forward pass of a run uses (training, extraction, features)."""

    channels_last: bool
    bf16: bool

    @property
    def name(self) -> str:
        return "bf16" if self.bf16 else "channels_last" if self.channels_last else "fp32"


def native_bf16(device: torch.device) -> bool:
    """Whether the device computes bfloat16 in hardware: CUDA from Ampere on, x86 CPUs with AVX512-BF16 or
    AMX. Elsewhere oneDNN emulates it, many times slower than float32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and (torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def resolve_compute(choice: str, device: torch.device, warn: bool = False) -> Compute:
    """The memory format and precision for ``choice`` (one of :data:`COMPUTE_CHOICES`) on ``device``.

    ``auto`` is channels_last everywhere (oneDNN's CPU convolutions and cuDNN's both run faster in NHWC) and
    adds bf16 autocast on a GPU that computes it natively. On a CPU, even one with AVX512-BF16, ``auto``
    stays in float32: bf16 is emulated without it, and with it a single try gained nothing on top of
    channels_last; ``bf16`` asks for it explicitly. See ``benchmarks/bench_train_step.py`` to measure both.

    Raises ValueError for an unknown choice; ``warn`` also warns when bf16 is asked of a device that would
    emulate it.
    """
    if choice not in COMPUTE_CHOICES:
        raise ValueError(f"compute must be one of {COMPUTE_CHOICES}; got {choice!r}")
    if choice == "auto":
        return Compute(channels_last=True, bf16=device.type == "cuda" and native_bf16(device))
    if warn and choice == "bf16" and not native_bf16(device):
        warnings.warn(f"--compute bf16 on {device}, which has no native bfloat16: it is emulated and runs many "
                      "times slower than float32 (--compute channels_last is the fast choice there)", stacklevel=2)
    return Compute(channels_last=choice != "fp32", bf16=choice == "bf16")


def usable_cores() -> int:
    """The CPU cores this process may run on: its affinity mask, capped by a cgroup (v2) CPU quota."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, int(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return cores


def configure_threads(threads: int | None = None) -> int:
    """Intra-op threads (and inter-op threads, where they can still be set) to the usable cores, not more:
    an OpenMP team larger than the cores it gets spins and waits on itself. ``OMP_NUM_THREADS`` set by the
    user wins over the default. Returns the intra-op thread count."""
    asked = os.environ.get("OMP_NUM_THREADS", "").strip()
    count = threads or (int(asked) if asked.isdigit() and int(asked) > 0 else usable_cores())
    torch.set_num_threads(count)
    with contextlib.suppress(RuntimeError):  # inter-op threads can be set once, before any parallel work
        torch.set_num_interop_threads(count)
    return count


@contextlib.contextmanager
def autocast(device: torch.device, enabled: bool = True) -> Iterator[None]:
    """bf16 autocast on the device (CUDA or CPU) when ``enabled``; float32 otherwise."""
    if enabled:
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
    else:
        yield


def to_device(batch: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A batch on ``device``, in channels_last (NHWC) memory when asked and it is an image batch."""
    batch = batch.to(device, non_blocking=True)
    if channels_last and batch.dim() == 4:
        batch = batch.contiguous(memory_format=torch.channels_last)
    return batch


def prepare_model(model: torch.nn.Module, device: torch.device, compute: Compute) -> torch.nn.Module:
    """``model`` on ``device`` in the memory format of ``compute`` (weights and inputs must agree on it)."""
    model = model.to(device)
    return model.to(memory_format=torch.channels_last) if compute.channels_last else model


def machine_description() -> str:
    """What a reported figure was measured on: seeded runs repeat on one machine, not across machines."""
    threads = torch.get_num_threads()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()} {platform.processor() or platform.system()}, {os.cpu_count()} CPU cores "
            f"({cpu_capability()}, {threads} torch thread{'s' if threads != 1 else ''}), {gpu}, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def cpu_capability() -> str:
    """The CPU's vector instruction set as torch's kernels use it (``AVX2``, ``AVX512``, ``DEFAULT``...), plus
    ``+BF16`` where it computes bfloat16 natively (AVX512-BF16 or AMX). Machines of one name differ in it, and
    CPU speed-ups such as channels_last's depend on it, so every figure names it."""
    return f"{torch.backends.cpu.get_cpu_capability()}{'+BF16' if native_bf16(torch.device('cpu')) else ''}"
