"""Data parallelism under ``torchrun``: one process per device, gradients averaged each step.

Every process samples the same subnets (same seed) and reads its own shard of each epoch. The
gradients are averaged with one all-reduce per step, which is what DDP computes; the DDP wrapper
itself is not used because one step runs several subnets, each touching a different part of the
weights, and DDP's bucketing expects every parameter to be used the same way in each backward.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

__all__ = ["setup", "rank_and_world", "device", "average_gradients", "average_floats", "barrier"]


def _launched() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def setup() -> tuple[int, int]:
    """Join the process group that ``torchrun`` describes (NCCL on CUDA, gloo on CPU)."""
    if _launched() and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend)
    return rank_and_world()


def rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def device() -> torch.device:
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def average_gradients(params: list[torch.nn.Parameter]) -> None:
    """Average gradients over processes in one flat all-reduce (a missing grad counts as 0)."""
    _, world = rank_and_world()
    if world == 1:
        return
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world
    offset = 0
    for param in params:
        size = param.numel()
        param.grad = flat[offset : offset + size].view_as(param).clone()
        offset += size


def average_floats(values: dict[str, float]) -> dict[str, float]:
    """Mean of each logged value over processes (the same keys on every process)."""
    _, world = rank_and_world()
    if world == 1:
        return dict(values)
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if torch.cuda.is_available():
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return {k: float(v) / world for k, v in zip(keys, tensor.tolist())}


def barrier() -> None:
    if rank_and_world()[1] > 1:
        dist.barrier()
