"""Structured (unit) pruning: whole output units go, the rows of a Linear weight or the filters of a Conv.

Units are ranked by the L2 norm of their (masked) weights, as torch.nn.utils.prune.ln_structured(n=2,
dim=0) ranks them; on the same tensors (no protected layer) the layerwise masks equal torch's.
`sparsity` still counts all prunable weights, the protected output layer's included: layerwise, every
candidate layer loses the same share f of its units, f = sparsity * all weights / candidate weights, so the
total reaches the target within one unit per layer; globally, units leave in order of norm until the
pruned weights come closest to round(sparsity * all weights). A target that would leave a layer without a
unit is refused before training (`max_sparsity`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from prune_lab.masks import Mask
from prune_lab.pruners.base import Criterion
from prune_lab.pruners.criteria import _check_scope


def unit_norms(weight: Tensor, keep: Tensor) -> Tensor:
    """L2 norm of each unit's surviving weights: [out]; units with no survivor score -1, so they go first."""
    rows = (weight * keep).reshape(weight.shape[0], -1).float()
    alive = keep.reshape(keep.shape[0], -1).any(1)
    return torch.where(alive, rows.norm(dim=1), torch.tensor(-1.0, device=weight.device))


@dataclass(frozen=True)
class Unit(Criterion):
    """The lowest-L2-norm output units go (structured pruning; Li et al. 2017 rank conv filters this way)."""

    scope: str = "layerwise"
    # The last prunable layer's rows are the class logits: removing one removes a class.
    skip_output: bool = True

    def __post_init__(self) -> None:
        _check_scope(self.scope)

    def candidates(self, names: list[str]) -> list[str]:
        """The layers whose units may go (in module order, the last one is the output layer)."""
        return names[:-1] if self.skip_output and len(names) > 1 else names

    def max_sparsity(self, shapes: Mapping[str, tuple[int, ...]]) -> float:
        """The highest sparsity that leaves every layer at least one unit (and the output layer whole)."""
        total = sum(math.prod(s) for s in shapes.values())
        removable = sum(math.prod(shapes[n]) // shapes[n][0] * (shapes[n][0] - 1)
                        for n in self.candidates(list(shapes)))
        return removable / total

    def compute_mask(self, weights: Mapping[str, Tensor], mask: Mask, sparsity: float,
                     generator: torch.Generator | None = None) -> Mask:
        candidates = self.candidates(list(weights))
        norms = {n: unit_norms(weights[n], mask.tensors[n]) for n in candidates}
        drop = {n: torch.zeros_like(s, dtype=torch.bool) for n, s in norms.items()}  # units to remove: [out]
        if self.scope == "layerwise":
            # The share of each candidate layer's units that must go for `sparsity` of ALL weights.
            total = sum(w.numel() for w in weights.values())
            share = sparsity * total / sum(weights[n].numel() for n in candidates)
            for n, s in norms.items():
                k = min(round(share * s.numel()), s.numel() - 1)  # never the last unit (max_sparsity refuses)
                if k > 0:
                    drop[n][torch.topk(s, k, largest=False).indices] = True
        else:
            self._drop_globally(weights, mask, sparsity, norms, drop)
        out = dict(mask.tensors)
        for n, d in drop.items():
            out[n] = mask.tensors[n] & ~d.view(-1, *([1] * (mask.tensors[n].dim() - 1)))
        return Mask(out)

    @staticmethod
    def _drop_globally(weights: Mapping[str, Tensor], mask: Mask, sparsity: float,
                       norms: dict[str, Tensor], drop: dict[str, Tensor]) -> None:
        total = sum(w.numel() for w in weights.values())
        already = sum(int((~mask.tensors[n]).sum()) for n in weights)
        wanted = round(sparsity * total) - already  # weights still to prune
        if wanted <= 0:
            return
        flat = torch.cat(list(norms.values()))  # every candidate unit: [units]
        # What removing each unit adds to the pruned count: its still-kept weights.
        gain = torch.cat([mask.tensors[n].reshape(mask.tensors[n].shape[0], -1).sum(1) for n in norms])
        # Each layer's strongest unit never goes: a layer without units cuts the network (max_sparsity refuses).
        last = torch.cat([torch.nn.functional.one_hot(s.argmax(), s.numel()).bool() for s in norms.values()])
        order = torch.argsort(flat, stable=True)
        order = order[~last[order]]
        pruned = torch.cat([torch.zeros(1, dtype=gain.dtype, device=gain.device), gain[order].cumsum(0)])
        k = int(torch.argmin((pruned - wanted).abs()))  # units to remove: the count closest to the target
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[order[:k]] = True
        offset = 0
        for n, s in norms.items():
            drop[n] |= chosen[offset : offset + s.numel()]
            offset += s.numel()
