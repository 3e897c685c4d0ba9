"""`init=sparsity_aware`: a base scheme whose surviving weights are rescaled once a mask is known.

A unit (a row of a Linear weight [out, in], a filter of a Conv weight [out, in, *kernel]) computes
y = sum_i w_i x_i. On inputs with E[x_i] = 0 and E[x_i^2] = v its pre-activation variance is
v * sum_i w_i^2, so pruning most of its inputs shrinks that variance by the pruned share, layer after
layer. Here each unit's survivors are scaled by one factor so that their sum of squares equals
fan_in * sigma^2, the expected sum of squares of a dense unit under the base scheme (sigma^2: the
scheme's per-weight variance for that layer, estimated from reference draws). The unit's
pre-activation variance is then the dense scheme's again, whichever weights survived (random or the
largest ones), and the sign pattern and relative sizes of the survivors are the base scheme's.

The run calls the scheme once as usual (dense, no mask). Pruners reset survivors through
`Job.rewind` / `Job.reinitialize`, which hand the mask to `fit_to_mask`; a pruner that keeps trained
values (reinit=keep, gradual pruning) leaves them alone.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
from torch import nn

from prune_lab.init import Initializer
from prune_lab.masks import Mask

REFERENCE_SAMPLES = 10_000  # weights per layer behind each sigma^2 estimate: about 1.4% standard error
MAX_REFERENCE_DRAWS = 256  # a cap for tiny layers (a 12x3 output layer would otherwise need 278 draws)
REFERENCE_SEED = 20_240_601  # reference draws only estimate the scheme's variance: one fixed stream


@dataclass
class SparsityAware:
    """Initialise with `base`; after pruning, rescale each unit's survivors to the dense variance."""

    base: Initializer
    _sigma2: dict[str, float] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __call__(self, model: nn.Module, generator: torch.Generator) -> None:
        self.base(model, generator)

    def fit_to_mask(self, model: nn.Module, mask: Mask) -> None:
        params = dict(model.named_parameters())
        sigma2 = self.scheme_variance(model, mask.names())
        with torch.no_grad():
            for name, keep in mask.tensors.items():
                w = params[name]
                rows = w.view(w.shape[0], -1)  # [units, fan_in]: a Linear's rows, a Conv's filters
                kept_sq = (rows * keep.view_as(rows)).pow(2).sum(1, keepdim=True)  # [units, 1]
                target = rows.shape[1] * sigma2[name]
                # Units with no survivor (or survivors at exactly zero) have nothing to rescale.
                scale = (target / kept_sq.clamp_min(1e-30)).sqrt()
                rows.mul_(torch.where(kept_sq > 0, scale, torch.ones_like(scale)))

    def scheme_variance(self, model: nn.Module, names: list[str]) -> dict[str, float]:
        """sigma^2 of each named weight under the base scheme: mean w^2 over fresh dense draws (cached)."""
        missing = [n for n in names if n not in self._sigma2]
        if missing:
            reference = copy.deepcopy(model).cpu()
            params = dict(reference.named_parameters())
            smallest = min(params[n].numel() for n in missing)
            draws = min(MAX_REFERENCE_DRAWS, math.ceil(REFERENCE_SAMPLES / smallest))
            g = torch.Generator().manual_seed(REFERENCE_SEED)
            sums = dict.fromkeys(missing, 0.0)
            for _ in range(draws):
                self.base(reference, g)
                for n in missing:
                    sums[n] += float(params[n].detach().double().pow(2).mean())
            self._sigma2.update({n: s / draws for n, s in sums.items()})
        return {n: self._sigma2[n] for n in names}

