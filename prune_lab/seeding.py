"""Seeds derived from the run seed, so every phase and epoch has its own reproducible stream.

Deriving a fresh seed per (phase, epoch) instead of carrying RNG state means a run resumed from a
checkpoint draws exactly the numbers an uninterrupted run would have drawn.
"""

from __future__ import annotations

import hashlib
import random

import numpy as np
import torch


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from the run seed and any labels (phase name, epoch, purpose)."""
    text = "/".join([str(seed), *map(str, parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def generator(seed: int, *parts: object, device: str | torch.device = "cpu") -> torch.Generator:
    g = torch.Generator(device=device)
    g.manual_seed(derive_seed(seed, *parts))
    return g
