"""`init=sparsity_aware`: a base scheme whose survivors are rescaled for the fan-in they keep, once a mask is known.

A unit (a row of a Linear weight [out, in], a filter of a Conv weight [out, in, *kernel]) computes
y = sum_i w_i x_i. On inputs with E[x_i] = 0, E[x_i^2] = v its pre-activation variance is v * sum_i w_i^2,
so pruning most of its inputs shrinks that variance by the pruned share, layer after layer. When a pruner
resets the weights (rewinds them or draws them afresh), each unit's survivors are scaled by one factor,
sqrt(sum of all its reset w^2 / sum of its surviving w^2), so that the unit's pre-activation variance is
the one the dense scheme gave it (about fan_in * sigma^2), whichever weights survived (random or the
largest), with the signs and relative sizes of the base scheme. Units with nothing pruned are unchanged;
units with no survivor stay dead.

The run calls the scheme once as usual (dense, no mask). `Job.rewind` / `Job.reinitialize` call
`fit_to_mask` with the freshly reset, still dense weights; a pruner that keeps trained values
(reinit=keep, gradual pruning) never resets, so nothing is rescaled.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from prune_lab.init import Initializer
from prune_lab.masks import Mask


@dataclass(frozen=True)
class SparsityAware:
    """Initialise with `base`; after pruning, rescale each unit's survivors to its dense pre-activation variance."""

    base: Initializer

    def __call__(self, model: nn.Module, generator: torch.Generator) -> None:
        self.base(model, generator)

    def fit_to_mask(self, model: nn.Module, mask: Mask) -> None:
        """`model` holds the dense values just reset; scale the survivors of each unit (the mask zeroes the rest)."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, keep in mask.tensors.items():
                w = params[name]
                rows = w.view(w.shape[0], -1)  # [units, fan_in]: a Linear's rows, a Conv's filters
                dense_sq = rows.pow(2).sum(1, keepdim=True)  # [units, 1]
                kept_sq = (rows * keep.view_as(rows)).pow(2).sum(1, keepdim=True)
                scale = (dense_sq / kept_sq.clamp_min(torch.finfo(w.dtype).tiny)).sqrt()
                rows.mul_(torch.where(kept_sq > 0, scale, torch.ones_like(scale)))
