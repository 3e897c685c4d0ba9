"""Unstructured criteria: prune the lowest-scoring weights, layer by layer or with one global threshold.

Ranking follows torch.nn.utils.prune: `topk(..., largest=False)` over |w| with round(sparsity * n)
weights removed, so on the same tensors the masks equal `l1_unstructured` / `global_unstructured`'s.
Unlike torch's `amount`, `sparsity` is the total fraction of zeros, counting weights already pruned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from prune_lab.errors import UserError
from prune_lab.masks import Mask
from prune_lab.pruners.base import Criterion

SCOPES = ("layerwise", "global")


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise UserError(f"pruner scope={scope!r} is not one of {SCOPES}; e.g. pruner.criterion.scope=global")


def prune_lowest(scores: Mapping[str, Tensor], mask: Mask, sparsity: float, scope: str) -> Mask:
    """Remove the lowest scores until `sparsity` of all weights (per layer, or over all) is pruned."""
    _check_scope(scope)
    # Already-pruned weights rank lowest, so they stay pruned and count towards the target.
    low = torch.tensor(-1.0)
    ranked = {n: torch.where(mask.tensors[n], s.float(), low.to(s.device)) for n, s in scores.items()}
    if scope == "layerwise":
        out = {}
        for n, s in ranked.items():
            keep = torch.ones_like(s, dtype=torch.bool)
            k = round(sparsity * s.numel())
            if k:
                keep.view(-1)[torch.topk(s.reshape(-1), k, largest=False).indices] = False
            out[n] = keep & mask.tensors[n]
        return Mask(out)
    flat = torch.cat([s.reshape(-1) for s in ranked.values()])
    keep_flat = torch.ones_like(flat, dtype=torch.bool)
    k = round(sparsity * flat.numel())
    if k:
        keep_flat[torch.topk(flat, k, largest=False).indices] = False
    out, offset = {}, 0
    for n, s in ranked.items():
        out[n] = keep_flat[offset : offset + s.numel()].view_as(s) & mask.tensors[n]
        offset += s.numel()
    return Mask(out)


@dataclass(frozen=True)
class Magnitude(Criterion):
    """Smallest |w| go first (Han et al. 2015)."""

    scope: str = "layerwise"

    def __post_init__(self) -> None:
        _check_scope(self.scope)

    def compute_mask(self, weights, mask, sparsity, generator=None):
        return prune_lowest({n: w.abs() for n, w in weights.items()}, mask, sparsity, self.scope)


@dataclass(frozen=True)
class Random(Criterion):
    """Weights chosen uniformly at random (the control every method should beat)."""

    scope: str = "layerwise"

    def __post_init__(self) -> None:
        _check_scope(self.scope)

    def compute_mask(self, weights, mask, sparsity, generator=None):
        if generator is None:
            raise ValueError("Random.compute_mask needs a generator for reproducibility")
        scores = {n: torch.rand(w.shape, generator=generator).to(w.device) for n, w in weights.items()}
        return prune_lowest(scores, mask, sparsity, self.scope)
