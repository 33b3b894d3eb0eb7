"""Seeds derived per purpose, so SFT and GRPO-RM with the same seed see the same head init and
the same data order, and a resumed run draws exactly what an uninterrupted one would."""

from __future__ import annotations

import hashlib
import random

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
