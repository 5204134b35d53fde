"""Distributed data parallel (DDP) for the PyTorch backend, started by torchrun.

    torchrun --standalone --nproc_per_node=8 -m minilooped.train owt-gpt2-124m --backend=torch

Several nodes (here 2 x 8 GPUs): run the same command on every node, naming one
rendezvous point that all of them reach (node 0's address; any free port)::

    torchrun --nnodes=2 --nproc_per_node=8 --node_rank=0 --rdzv_backend=c10d \
        --rdzv_endpoint=$HEAD_NODE_IP:29500 -m minilooped.train owt-gpt2-124m-8gpu-4h --n_gpus=16
    # on node 1 the same with --node_rank=1

Every node needs the prepared data at the same path (--data_dir) and, for resume, the
run folder on a shared filesystem (rank 0 writes it). Without InfiniBand NCCL talks
over TCP sockets, which is slower (``NCCL_IB_DISABLE=1`` if it hangs looking for IB).

torchrun sets RANK, LOCAL_RANK and WORLD_SIZE in each process's environment; without
them the run is a single process. Every process holds a whole copy of the model and
computes the gradient of its own micro-batches; DDP averages the gradients across
processes during the backward pass of the last micro-batch of a step (``no_sync`` skips
that all-reduce on the earlier ones, which only accumulate locally). The process group
talks over gloo on CPUs and nccl on NVIDIA GPUs. Rank 0 alone writes logs and
checkpoints; a checkpoint holds every rank's random generators (dropout masks differ per
rank), gathered to rank 0, and a resumed rank takes back its own.

How batches are split (loop.py): ``grad_accum`` counts micro-batches per step over all
processes. Every rank draws the same sequence of micro-batches from the same seed and
keeps every WORLD_SIZE-th one, so a 2-process run sees exactly the batches of a
1-process run with the same grad_accum.
"""
from __future__ import annotations

import os
from dataclasses import dataclass


@dataclass
class DistInfo:
    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ


def setup(device: str) -> DistInfo:
    """Join the process group if torchrun started us; the device this process uses."""
    if not launched_by_torchrun():
        return DistInfo(device=device)
    import torch
    import torch.distributed as dist

    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", 0))
    world_size = int(os.environ["WORLD_SIZE"])
    if device.startswith("cuda"):
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.startswith("cuda") else "gloo")
    return DistInfo(rank=rank, local_rank=local_rank, world_size=world_size, device=device)


def all_reduce_mean(value: float, info: DistInfo) -> float:
    """The mean of a float over all processes (the float itself without DDP)."""
    if not info.enabled:
        return value
    import torch
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return float(t.item()) / info.world_size


def all_gather_object(obj, info: DistInfo) -> list:
    """``[obj of rank 0, obj of rank 1, ...]`` on every process (``[obj]`` without DDP).
    Every process must call it, at the same point of the run."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out = [None] * info.world_size
    dist.all_gather_object(out, obj)  # pickled; nccl needs torch.cuda.set_device first (setup does)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()


def cleanup(info: DistInfo) -> None:
    if info.enabled:
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


__all__ = ["DistInfo", "setup", "all_reduce_mean", "all_gather_object", "barrier", "cleanup", "launched_by_torchrun"]
