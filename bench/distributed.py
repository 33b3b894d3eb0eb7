"""Data-parallel training and evaluation inside one job: several processes (tasks) per run, one per GPU.

Each rank trains on its shard of every global batch; DistributedDataParallel averages the
gradients, so the update equals the single-process one up to float rounding: the shards of a
step have equal sizes, and the classification objectives are means over the batch's images
(segmentation objectives average over labelled pixels, whose count differs between shards, so
there the average is close but not exact). Only rank 0 writes the run's files. submitit provides
the rendezvous (MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK) for both Slurm and local jobs.

Two rules keep every rank's work well defined, the same for every method:

- Training (:meth:`DistContext.train_shards`): ``train.batch_size`` must be a multiple of the
  world size (:func:`check_batch_size`, when the job is built), and the last global batch of an
  epoch is cut to a multiple of the world size; the remainder (fewer than ``world`` images,
  other ones each epoch since the order is re-drawn) is not trained on in that epoch, and a last
  batch cut to nothing is no step (:func:`steps_per_epoch`). So no rank ever gets an empty shard
  (an empty cross-entropy is NaN, and DDP needs every rank in every backward) and all shards of
  a step are equal. Why cut rather than weight each rank's loss by its share: a cut keeps the
  objectives untouched (no method needs to know about ranks) and never runs a forward on an
  empty batch; what it costs is at most world − 1 images per epoch. With one process nothing is
  cut.
- Evaluation (:func:`eval_batches`): a split is cut into the consecutive batches of
  ``eval_batch_size`` images a single process scores, and rank r scores batches r, r + world, …
  whole. A rank left without a batch (a split of fewer batches than ranks) scores nothing but
  still joins the gathers, so no forward ever sees an empty batch, and each batch's logits are
  those a single process computes. The gathers (:meth:`DistContext.gather`,
  :meth:`DistContext.gather_rows`, :meth:`DistContext.sum`) are called once per split, after its
  batches, by every rank.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

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

    def train_shards(self, order: Tensor, batch_size: int) -> list[Tensor]:
        """This rank's index shard of each global batch of an epoch (``order``: the epoch's permutation).

        Global batch b is ``order[b·batch_size : (b+1)·batch_size]``, cut to a multiple of the world
        size (only the last one can be cut, since :func:`check_batch_size` holds), then sharded
        round-robin, so every rank's shard of a step has the same size and none is empty. The cut
        images (< world, chosen by the epoch's permutation) are skipped that epoch; a last batch of
        fewer than ``world`` images is no step at all (:func:`steps_per_epoch`). With one process this
        is the plain list of global batches.
        """
        shards = []
        for start in range(0, len(order), batch_size):
            batch = order[start : start + batch_size]
            keep = len(batch) - len(batch) % self.world
            if keep:
                shards.append(self.shard(batch[:keep]))
        return shards

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def mean_stats(self, stats: dict[str, float]) -> dict[str, float]:
        """Average per-rank statistics so the log describes the whole global batch."""
        if not self.active or not stats:
            return stats
        keys = sorted(stats)
        # NCCL reduces GPU tensors only; gloo CPU ones
        device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")
        values = torch.tensor([float(stats[k]) for k in keys], dtype=torch.float64, device=device)
        dist.all_reduce(values)
        return {k: v / self.world for k, v in zip(keys, values.tolist())}

    def from_main(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank: a decision only rank 0 can make (it alone reads the
        run's store), which every rank must follow so that all of them call the same collectives."""
        if not self.active:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, items: list[Any]) -> list[Any]:
        """Every rank's ``items`` (picklable), concatenated in rank order, on every rank. For small
        per-batch records; large tensors go through :meth:`gather_rows`."""
        if not self.active:
            return list(items)
        boxes: list[list[Any] | None] = [None] * self.world
        dist.all_gather_object(boxes, list(items))
        return [item for box in boxes for item in (box or [])]

    def gather_rows(self, rows: Tensor, index: Tensor, n: int) -> Tensor:
        """The (n, …) tensor whose rows ``index`` this rank holds as ``rows``, whole on every rank.

        Every row must be held by exactly one rank (checked). Rows travel as tensors (padded to
        the largest share; through the GPU under NCCL), not pickled."""
        if len(rows) != len(index):
            raise ValueError(f"{len(rows)} rows for {len(index)} indices")
        if not self.active:
            parts_rows, parts_index = [rows], [index]
        else:
            device = _collective_device()
            counts = [torch.zeros(1, dtype=torch.long, device=device) for _ in range(self.world)]
            dist.all_gather(counts, torch.tensor([len(rows)], dtype=torch.long, device=device))
            sizes = [int(c) for c in counts]
            pad = max(sizes)
            local = torch.zeros((pad, *rows.shape[1:]), dtype=rows.dtype, device=device)
            local[: len(rows)] = rows.to(device)
            local_index = torch.full((pad,), -1, dtype=torch.long, device=device)
            local_index[: len(index)] = index.to(device)
            all_rows = [torch.empty_like(local) for _ in range(self.world)]
            all_index = [torch.empty_like(local_index) for _ in range(self.world)]
            dist.all_gather(all_rows, local)
            dist.all_gather(all_index, local_index)
            parts_rows = [r[:s].to(rows.device) for r, s in zip(all_rows, sizes)]
            parts_index = [i[:s].to(index.device) for i, s in zip(all_index, sizes)]
        flat_index = torch.cat(parts_index)
        if len(flat_index) != n or not torch.equal(flat_index.sort().values, torch.arange(n, device=flat_index.device)):
            raise ValueError(f"the ranks hold {len(flat_index)} rows, not each of the {n} rows once")
        out = torch.empty((n, *rows.shape[1:]), dtype=rows.dtype, device=rows.device)
        out[flat_index] = torch.cat(parts_rows)
        return out

    def sum(self, values: Tensor) -> Tensor:
        """Σ over ranks of ``values`` (a CPU or device tensor; returned where it came from)."""
        if not self.active:
            return values
        total = values.to(_collective_device())
        dist.all_reduce(total)
        return total.to(values.device)


def _collective_device() -> torch.device:
    """Where tensors must be for a collective: the rank's GPU under NCCL, else the CPU (gloo)."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def check_batch_size(batch_size: int, ctx: DistContext) -> None:
    """A global batch splits into equal shards only when the world size divides it; uneven shards
    would weight images unequally (DDP averages per-rank means) and a run's recorded batch size
    would not be what each step trains on if batches were cut instead. Fail before training."""
    if batch_size % ctx.world:
        raise ValueError(f"train.batch_size {batch_size} is not a multiple of the {ctx.world} processes of this run: "
                         f"use a batch size divisible by {ctx.world} (each process trains on batch_size / {ctx.world} images per step)")


def steps_per_epoch(n: int, batch_size: int, world: int) -> int:
    """Global batches per epoch under :meth:`DistContext.train_shards`' rule: ⌈n / batch_size⌉ unless the
    last batch holds fewer than ``world`` images (then it is dropped)."""
    full, last = divmod(n, batch_size)
    return full + (1 if last >= world else 0)


def eval_batches(n: int, batch_size: int, ctx: DistContext) -> list[Tensor]:
    """The image indices of the evaluation batches this rank scores, in order.

    The split's batches are a single process's (consecutive, ``batch_size`` images, the last one
    short); rank r takes batches r, r + world, … whole. Every batch is non-empty; a rank may have
    none (fewer batches than ranks), and then only joins the gathers.
    """
    starts = range(0, n, batch_size)
    return [torch.arange(s, min(s + batch_size, n)) for b, s in enumerate(starts) if b % ctx.world == ctx.rank]


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
