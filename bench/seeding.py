"""Seeds derived per purpose, so SFT and GRPO-RM with the same seed see the same head init and
the same data order, and a resumed run draws exactly what an uninterrupted one would; and
:func:`one_thread`, under which evaluations and probes give the same numbers whatever the
run's thread count."""

from __future__ import annotations

import contextlib
import hashlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def derive_seed(seed: int, *purpose: object) -> int:
    blob = ":".join(str(p) for p in (seed, *purpose)).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & ((1 << 63) - 1)


def generator(seed: int, *purpose: object) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(seed, *purpose))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (1 << 32))
    torch.manual_seed(seed)


@contextlib.contextmanager
def math_threads(n: int) -> Iterator[None]:
    """Run torch's CPU math on ``n`` threads, then give the caller back its thread count. Training
    is not thread-invariant (the order in which threads add partial sums changes the last bits), so
    the in-process executor runs each run at its resource profile's ``cpus`` rather than at however
    many cores the host has: the same run then gives the same numbers on a 2-core laptop and a
    64-core node (of one CPU kind), as the local and Slurm executors already do."""
    saved = torch.get_num_threads()
    if saved == n:
        yield
        return
    torch.set_num_threads(max(1, int(n)))
    try:
        yield
    finally:
        torch.set_num_threads(saved)


@contextlib.contextmanager
def one_thread() -> Iterator[None]:
    """Run torch's CPU math on one thread, then give the caller back its thread count.

    Why: with several threads, torch and MKL split some sums between threads (a matmul's inner
    dimension when the output is small and that dimension long: the probe's gradient
    Zᵀ(softmax − onehot) over n samples, a linear head on a batch of 16 … 256 rows of 1536
    features; a sum to one number; the dot products inside ``torch.optim.LBFGS``), and the partial
    sums add up in a thread-dependent order. The last bits then differ; L-BFGS's line search and
    stopping test amplify them (the iteration count and a prediction change), and a logit that
    differs in its last bit can flip a near tie. One thread gives one order of addition per
    machine, whatever the run's thread count. It costs the parallel speed-up of what it wraps, on
    CPU only: a GPU's kernels do not depend on the CPU thread count (docs/reliability.md).
    """
    saved = torch.get_num_threads()
    if saved == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
