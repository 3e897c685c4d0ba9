"""Saliency scores for pruning at initialisation: which weights matter before any training.

Each `scores(model, mask, names, data, generator)` works on a copy of the model (the model, its
batch-norm statistics and its gradients are left untouched) and returns one score tensor per named
weight; the lowest scores are pruned.

- SNIP (Lee et al. 2019): |g * w|, the connection sensitivity of the loss on a few training batches.
- GraSP (Wang et al. 2020): w * (H g); GraSP removes the highest -w * (H g), i.e. the lowest w * (H g),
  the weights whose removal least reduces gradient flow.
- SynFlow (Tanaka et al. 2020): |w * dR/dw| for R = sum of the outputs of the network with |w| on an
  all-ones input, in float64: no data at all.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune_lab.data.splits import Splits
from prune_lab.errors import UserError
from prune_lab.masks import Mask

Scores = dict[str, Tensor]  # parameter name -> one score per weight, its shape


class Saliency(Protocol):
    def scores(self, model: nn.Module, mask: Mask, data: Splits, generator: torch.Generator) -> Scores:
        """One score per weight of each name in `mask`: [same shape as the weight]; the lowest go."""


def _masked_copy(model: nn.Module, mask: Mask,
                 dtype: torch.dtype | None = None) -> tuple[nn.Module, list[Tensor]]:
    """A copy of `model` with the mask applied, and its named prunable weights in mask order."""
    clone = copy.deepcopy(model)
    if dtype is not None:
        clone = clone.to(dtype)
    mask.apply_(clone)
    for p in clone.parameters():
        p.grad = None
    params = dict(clone.named_parameters())
    return clone, [params[n] for n in mask.names()]


def _batches(data: Splits, count: int, batch_size: int,
             generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
    """`count` training batches drawn without replacement from a seeded permutation."""
    perm = torch.randperm(len(data.train), generator=generator).to(data.train.y.device)
    for i in range(count):
        idx = perm[i * batch_size : (i + 1) * batch_size]
        if len(idx):
            yield data.train.x[idx], data.train.y[idx]


def _check_batches(batches: object) -> int:
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise UserError(f"pruner.saliency.batches={batches!r} must be a positive number of training batches")
    return batches


@dataclass(frozen=True)
class SNIP:
    batches: int = 1  # SNIP scores one mini-batch
    batch_size: int = 128

    def __post_init__(self) -> None:
        _check_batches(self.batches)

    def scores(self, model: nn.Module, mask: Mask, data: Splits, generator: torch.Generator) -> Scores:
        clone, weights = _masked_copy(model, mask)
        for x, y in _batches(data, self.batches, self.batch_size, generator):
            F.cross_entropy(clone(x), y).backward()  # gradients add up over the batches
        return {n: (w.grad * w).detach().abs() for n, w in zip(mask.names(), weights)}


@dataclass(frozen=True)
class GraSP:
    batches: int = 1
    batch_size: int = 128
    temperature: float = 200.0  # logits / T before the loss, as in the authors' code: keeps H g informative

    def __post_init__(self) -> None:
        _check_batches(self.batches)

    def scores(self, model: nn.Module, mask: Mask, data: Splits, generator: torch.Generator) -> Scores:
        clone, weights = _masked_copy(model, mask)
        batches = list(_batches(data, self.batches, self.batch_size, generator))
        g = [torch.zeros_like(w) for w in weights]
        for x, y in batches:  # g = dL/dw, no graph
            grads = torch.autograd.grad(F.cross_entropy(clone(x) / self.temperature, y), weights)
            g = [a + b for a, b in zip(g, grads)]
        for x, y in batches:  # d(g . dL/dw)/dw = H g, accumulated in .grad
            loss = F.cross_entropy(clone(x) / self.temperature, y)
            grads = torch.autograd.grad(loss, weights, create_graph=True)
            sum((a.detach() * b).sum() for a, b in zip(g, grads)).backward()
        return {n: (w.detach() * w.grad).detach() for n, w in zip(mask.names(), weights)}


@dataclass(frozen=True)
class SynFlow:
    def scores(self, model: nn.Module, mask: Mask, data: Splits, generator: torch.Generator) -> Scores:
        if not data.train.x.is_floating_point():  # the dtype only: e.g. node indices into a graph
            raise UserError(f"pruner=synflow feeds an all-ones input tensor, but {data.info.name} samples are "
                            f"{data.train.x.dtype} indices (the features live in the model); use pruner=snip "
                            "or pruner=grasp for this dataset")
        # float64: the products over layers overflow float32 in deep networks
        clone, weights = _masked_copy(model, mask, torch.float64)
        clone.eval()  # batch norm uses its running statistics: no batch, no data
        with torch.no_grad():
            for p in clone.parameters():
                p.abs_()
        device = weights[0].device
        ones = torch.ones((1, *data.info.input_shape), dtype=torch.float64, device=device)  # shapes only
        clone(ones).sum().backward()
        return {n: (w.grad * w).detach().abs() for n, w in zip(mask.names(), weights)}

