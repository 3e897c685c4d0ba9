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


def _prune_more(scores: Tensor, keep: Tensor, count: int) -> Tensor:
    """`keep` ([n], bool) minus the `count` lowest `scores` ([n]) among the live (kept) weights only.

    Dead weights never compete: a score of any sign (GraSP's w * Hg is often below -1) cannot rank a
    live weight under a pruned one, so exactly `count` more weights go."""
    out = keep.clone()
    if count <= 0:
        return out
    live = keep.nonzero().squeeze(1)  # [live]
    lowest = torch.topk(scores[live].float(), count, largest=False).indices
    out[live[lowest]] = False
    return out


def prune_lowest(scores: Mapping[str, Tensor], mask: Mask, sparsity: float, scope: str) -> Mask:
    """Remove the lowest-scoring live weights until `sparsity` of all weights (per layer, or over all) is pruned.

    Weights the mask already prunes stay pruned and count towards the target: a layer of n weights ends
    with exactly round(sparsity * n) pruned (layerwise), or all layers together with round(sparsity * N)
    (global), unless more were pruned already."""
    _check_scope(scope)
    if scope == "layerwise":
        out = {}
        for n, s in scores.items():
            keep = mask.tensors[n].reshape(-1)
            wanted = round(sparsity * s.numel()) - int((~keep).sum())
            out[n] = _prune_more(s.reshape(-1), keep, wanted).view_as(s)
        return Mask(out)
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    keep_flat = torch.cat([mask.tensors[n].reshape(-1) for n in scores])
    wanted = round(sparsity * flat.numel()) - int((~keep_flat).sum())
    keep_flat = _prune_more(flat, keep_flat, wanted)
    out, offset = {}, 0
    for n, s in scores.items():
        out[n] = keep_flat[offset : offset + s.numel()].view_as(s)
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
