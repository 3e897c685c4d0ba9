"""The data a run trains on: train/val/test tensors held in memory and batched by index."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from prune_lab.errors import UserError

# Batch-level augmentation on tensors: (x [B, ...], generator) -> x of the same shape.
Augment = Callable[[Tensor, torch.Generator], Tensor]


@dataclass
class TensorSet:
    x: Tensor  # [N, *input_shape] float32, already normalised
    y: Tensor  # [N] int64 class indices

    def __post_init__(self) -> None:
        if len(self.x) != len(self.y):
            raise ValueError(f"{len(self.x)} inputs but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)

    def to(self, device: torch.device) -> TensorSet:
        return TensorSet(self.x.to(device), self.y.to(device))


@dataclass(frozen=True)
class DataInfo:
    """What a model needs to know about its data; models are built from this, never from typed sizes."""

    name: str
    input_shape: tuple[int, ...]  # one sample: (features,) or (channels, height, width)
    num_classes: int
    extras: dict[str, Any] = field(default_factory=dict)  # e.g. a graph's normalised adjacency


@dataclass
class Splits:
    info: DataInfo
    train: TensorSet
    val: TensorSet
    test: TensorSet
    augment: Augment | None = None  # applied to training batches only

    def to(self, device: torch.device) -> Splits:
        extras = {k: v.to(device) if isinstance(v, Tensor) else v for k, v in self.info.extras.items()}
        info = DataInfo(self.info.name, self.info.input_shape, self.info.num_classes, extras)
        return Splits(info, self.train.to(device), self.val.to(device), self.test.to(device), self.augment)


def split_indices(n: int, val_fraction: float, test_fraction: float, seed: int) -> tuple[Tensor, Tensor, Tensor]:
    """A seeded random train/val/test partition of range(n)."""
    for what, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise UserError(f"dataset.{what}={value} must be in [0, 1)")
    if val_fraction + test_fraction >= 1.0:
        raise UserError(
            f"dataset.val_fraction + dataset.test_fraction = {val_fraction + test_fraction} leaves no training data; "
            "make their sum less than 1"
        )
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(n, generator=g)
    n_test, n_val = round(n * test_fraction), round(n * val_fraction)
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def resolve_data_dir(data_dir: str | None) -> Path:
    """The folder datasets live in: the setting, else $PRUNE_LAB_DATA_DIR, else ~/.cache/prune_lab/data."""
    chosen = data_dir or os.environ.get("PRUNE_LAB_DATA_DIR") or "~/.cache/prune_lab/data"
    return Path(chosen).expanduser()
