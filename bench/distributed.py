"""Data-parallel training inside one job: several processes (tasks) per run, one per GPU.

Each rank trains on its shard of every global batch; DistributedDataParallel averages the
gradients, so the update equals the single-process one up to float rounding (exactly when the
shards have equal size). Only rank 0 writes the run's files. submitit provides the rendezvous
(MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK) for both Slurm and local jobs.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import Tensor


@dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, index: Tensor) -> Tensor:
        return index[self.rank :: self.world]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Average per-rank statistics so the log describes the whole global batch."""
        if not self.active or not stats:
            return stats
        keys = sorted(stats)
        values = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64)
        dist.all_reduce(values)
        return {k: v / self.world for k, v in zip(keys, values.tolist())}


def current() -> DistContext:
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return DistContext()


def init_from_submitit() -> DistContext:
    """Join the job's process group (NCCL on GPUs, gloo on CPU) when the job has >1 task."""
    import submitit

    env = submitit.helpers.TorchDistributedEnvironment().export()
    if env.world_size > 1 and not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        if backend == "nccl":
            torch.cuda.set_device(env.local_rank)
        dist.init_process_group(backend=backend, rank=env.rank, world_size=env.world_size)
    return current()
