"""One process or many: the process group that ``torchrun`` sets up through the environment.

Under ``torchrun --nproc_per_node=N`` the variables ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` are
set; ``init_distributed`` then joins the group with gloo on CPU or nccl on GPU. Without them, it
returns a single-process context and every collective below is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

# Rank 0 may spend minutes preparing the tile cache while the others wait at a barrier.
GROUP_TIMEOUT = timedelta(hours=2)


@dataclass(frozen=True)
class DistContext:
    """Where this process sits in the group.

    Attributes:
        rank: global rank.
        world_size: number of processes.
        local_rank: rank on this machine.
        device: the torch device this process computes on.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """True on the process that writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when a process group is active."""
        return self.world_size > 1


def choose_device(requested: str, local_rank: int) -> torch.device:
    """Resolve ``auto`` / ``cpu`` / ``cuda`` to a device for this local rank."""
    if requested not in {"auto", "cpu", "cuda"}:
        raise ValueError(f"expected device auto, cpu or cuda, found {requested!r}")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ValueError("expected a CUDA device (--device cuda), found none")
    if requested != "cpu" and torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def init_distributed(device: str = "auto") -> DistContext:
    """Join the ``torchrun`` process group if there is one.

    Args:
        device: ``auto`` (GPU when present), ``cpu`` or ``cuda``.

    Returns:
        The context; single-process when ``WORLD_SIZE`` is unset or 1.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    chosen = choose_device(device, local_rank)
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if chosen.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=GROUP_TIMEOUT)
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=chosen)


def barrier(ctx: DistContext) -> None:
    """Wait for every process (no-op alone)."""
    if ctx.distributed:
        dist.barrier()


def broadcast_object(ctx: DistContext, value: Any) -> Any:
    """Return rank 0's ``value`` on every process."""
    if not ctx.distributed:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(ctx: DistContext, value: Any) -> list[Any]:
    """Return every rank's ``value``, in rank order, on every process."""
    if not ctx.distributed:
        return [value]
    gathered: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def mean_across(ctx: DistContext, values: torch.Tensor) -> torch.Tensor:
    """Element-wise mean of a tensor over all processes."""
    if not ctx.distributed:
        return values
    values = values.clone()
    dist.all_reduce(values)
    return values / ctx.world_size


def shutdown(ctx: DistContext) -> None:
    """Leave the process group."""
    if ctx.distributed and dist.is_initialized():
        dist.destroy_process_group()
