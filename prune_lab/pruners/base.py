"""The two interfaces of pruning: a `Pruner` (the schedule) and a `Criterion` (which weights go)."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from prune_lab.errors import UserError
from prune_lab.masks import Mask

if TYPE_CHECKING:
    from prune_lab.job import Job


def check_sparsity(value: object, key: str = "sparsity") -> float:
    """A target sparsity must be a number in [0, 1): the fraction of prunable weights that are zero."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{key}={value!r} must be a number in [0, 1), e.g. {key}=0.8 for 80% of weights zero")
    if not 0.0 <= value < 1.0:
        raise UserError(
            f"{key}={value} is outside [0, 1): it is the fraction of prunable weights set to zero (0.9 keeps 10%)"
            + (f"; if you meant {value}%, write {key}={value / 100:g}" if 1 <= value <= 100 else "")
        )
    return float(value)


Shapes = Mapping[str, tuple[int, ...]]  # prunable parameter name -> its weight's shape


class Pruner(ABC):
    """A pruning method: trains, prunes and evaluates a `Job` on its own schedule."""

    @property
    @abstractmethod
    def target(self) -> float:
        """The sparsity the method ends at: the one number results.json records as the run's target."""

    def check(self, shapes: Shapes) -> None:
        """Refuse (UserError) before any training a target this method cannot reach on these weights.
        Unstructured selection reaches any target below 1, so the default accepts every target."""
        return None

    @abstractmethod
    def run(self, job: Job) -> None:
        """Drive the job to the end, recording every sparsity level with `job.evaluate`."""


def check_reachable(target: float, reachable: float, method: str, hint: str = "") -> None:
    """One line when `target` is above the highest sparsity `method` can reach on this model."""
    if target > reachable + 1e-12:
        raise UserError(f"sparsity={target:g} cannot be reached by {method} on this model: at most "
                        f"{math.floor(reachable * 1e4) / 1e4:g}; lower sparsity{hint}")


class Criterion(ABC):
    """Chooses which weights survive. Pure: same inputs, same mask; weights are never modified."""

    @abstractmethod
    def compute_mask(
        self, weights: Mapping[str, Tensor], mask: Mask, sparsity: float, generator: torch.Generator | None = None
    ) -> Mask:
        """A mask with (at least) `sparsity` of the weights pruned overall, that keeps pruned weights pruned."""

    def max_sparsity(self, shapes: Shapes) -> float:
        """The highest sparsity this criterion reaches on weights of these shapes (unstructured: any < 1)."""
        return 1.0
