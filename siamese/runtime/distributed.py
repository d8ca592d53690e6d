"""torchrun support: one process per device, rank 0 writes, everyone agrees on what was written.

``torchrun --nproc_per_node=N train.py ...`` sets RANK/WORLD_SIZE/LOCAL_RANK and every process joins the
group, N = 1 included (so one GPU runs the NCCL path: DDP, the library's distributed wrappers and the
weight-digest check); without them everything here degrades to a single process and no collective call is
made.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    joined: bool = False  # in a process group: torchrun started this process, even as its only one

    @property
    def enabled(self) -> bool:
        return self.joined

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (any picklable object)."""
        if not self.enabled:
            return value
        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def init_distributed(device: torch.device) -> DistContext:
    """Join the process group torchrun describes (NCCL on CUDA, gloo on CPU), or, outside torchrun, return a
    1-process context that makes no collective call."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return DistContext()
    context = DistContext(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]),
                          int(os.environ.get("LOCAL_RANK", "0")), joined=True)
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(context.local_rank)
        dist.init_process_group(backend=backend)
    return context


def parameter_digest(model: torch.nn.Module) -> str:
    """A hash of every parameter's bytes: ranks of one DDP job must agree on it exactly."""
    digest = hashlib.sha1()
    for name, parameter in sorted(model.named_parameters()):
        digest.update(name.encode())
        digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
