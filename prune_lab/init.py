"""Weight initialisation schemes: every option of the `init` config group.

A scheme initialises the weight of every Linear and Conv layer from a torch.Generator, so a seed
reproduces it and a second generator gives a fresh draw from the same distribution (the Lottery
Ticket "random reinitialisation" control). Biases: the named schemes (Xavier, Kaiming, orthogonal)
set them to zero, or with zero_bias=false draw them as PyTorch's layers do (uniform in +-1/sqrt(fan_in)),
so a reinitialisation redraws them too; `default` is PyTorch's own initialisation for weights and biases.
Other layers (batch norm) keep their constructor values (weight 1, bias 0).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from prune_lab.masks import Mask

INIT_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)

# torch.nn.init-style function: fills `tensor` in place from `generator`.
WeightFn = Callable[..., Tensor]


def init_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, INIT_TYPES)]


@dataclass(frozen=True)
class InitScheme:
    """Apply `weight` (e.g. a partial of torch.nn.init.xavier_normal_) to every Linear/Conv weight."""

    weight: WeightFn
    zero_bias: bool = True  # zero biases: the usual companion of Xavier/Kaiming, so only weights carry the scheme

    def __call__(self, model: nn.Module, generator: torch.Generator) -> None:
        with torch.no_grad():
            for m in init_layers(model):
                # Drawn on the CPU from a CPU generator, then copied: the same seed gives the same
                # weights on every device.
                draw = torch.empty(m.weight.shape, dtype=m.weight.dtype)
                self.weight(draw, generator=generator)
                m.weight.copy_(draw)
                if m.bias is None:
                    continue
                if self.zero_bias:
                    m.bias.zero_()
                else:  # nn.Linear / nn.ConvNd's own bias law, from this generator: a redraw redraws biases too
                    bound = 1.0 / math.sqrt(m.weight[0].numel()) if m.weight[0].numel() else 0.0
                    m.bias.copy_(torch.empty(m.bias.shape, dtype=m.bias.dtype).uniform_(-bound, bound,
                                                                                       generator=generator))


@dataclass(frozen=True)
class PyTorchDefault:
    """PyTorch's own `reset_parameters()` (Kaiming-uniform with a=sqrt(5), uniform biases), seeded."""

    def __call__(self, model: nn.Module, generator: torch.Generator) -> None:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng(devices=[]):  # leave the caller's global RNG stream untouched
            torch.manual_seed(seed)
            for m in init_layers(model):
                fresh = copy.deepcopy(m).cpu()  # drawn on the CPU: same values on every device
                fresh.reset_parameters()
                with torch.no_grad():
                    for mine, drawn in zip(m.parameters(), fresh.parameters()):
                        mine.copy_(drawn)


Initializer = Callable[[nn.Module, torch.Generator], None]


@runtime_checkable
class MaskAwareInit(Protocol):
    """An init scheme that also adapts freshly reset weights to a mask (init=sparsity_aware): `Job.rewind` and
    `Job.reinitialize` call `fit_to_mask(model, mask)` on the dense reset values, before the mask is applied."""

    def __call__(self, model: nn.Module, generator: torch.Generator) -> None: ...

    def fit_to_mask(self, model: nn.Module, mask: Mask) -> None: ...
