"""Masks over prunable weights, and the choice of which weights are prunable.

A `Mask` maps parameter names to boolean tensors of the parameter's shape: True keeps a weight,
False prunes it. Masks are applied by zeroing weights in place (after every optimizer step during
training), never by forward hooks, so a masked model's forward pass costs what a dense one does.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import Tensor, nn

from prune_lab.errors import UserError

# Module types whose `weight` is prunable by default: the matmul-carrying layers.
DEFAULT_LAYER_TYPES = ("Linear", "Conv1d", "Conv2d", "Conv3d")


@dataclass(frozen=True)
class PrunableSelection:
    """Which weights may be pruned: `weight` of modules of these types, minus names matching `exclude`.

    `exclude` takes shell-style patterns on parameter names, e.g. ["net.0.weight", "*.fc_out.*"].
    """

    layer_types: tuple[str, ...] = DEFAULT_LAYER_TYPES
    exclude: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "layer_types", tuple(self.layer_types))
        object.__setattr__(self, "exclude", tuple(self.exclude))

    def names(self, model: nn.Module) -> list[str]:
        names = []
        for module_name, module in model.named_modules():
            if type(module).__name__ not in self.layer_types:
                continue
            weight = getattr(module, "weight", None)
            if not isinstance(weight, nn.Parameter):
                continue
            name = f"{module_name}.weight" if module_name else "weight"
            if not any(fnmatch.fnmatchcase(name, pattern) for pattern in self.exclude):
                names.append(name)
        if not names:
            raise UserError(
                f"no prunable weights in {type(model).__name__}: no module of types {list(self.layer_types)} "
                f"survives exclude={list(self.exclude)}; widen prunable.layer_types or shorten prunable.exclude"
            )
        return names


@dataclass(frozen=True)
class LayerSparsity:
    numel: int
    nonzero: int

    @property
    def sparsity(self) -> float:
        return 1.0 - self.nonzero / self.numel if self.numel else 0.0


@dataclass(frozen=True)
class Mask:
    """Boolean keep-masks by parameter name (True = weight survives)."""

    tensors: Mapping[str, Tensor] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, t in self.tensors.items():
            if not isinstance(t, Tensor) or t.dtype != torch.bool:
                raise TypeError(f"mask for {name} must be a bool tensor, got {getattr(t, 'dtype', type(t))}")
        object.__setattr__(self, "tensors", dict(self.tensors))

    @classmethod
    def ones(cls, model: nn.Module, names: Iterable[str]) -> Mask:
        params = dict(model.named_parameters())
        return cls({n: torch.ones_like(params[n], dtype=torch.bool) for n in names})

    @classmethod
    def from_weights(cls, model: nn.Module, names: Iterable[str]) -> Mask:
        """The mask a model already carries: nonzero weights survive."""
        params = dict(model.named_parameters())
        return cls({n: params[n].detach() != 0 for n in names})

    def names(self) -> list[str]:
        return list(self.tensors)

    def check_fits(self, model: nn.Module) -> None:
        params = dict(model.named_parameters())
        for name, t in self.tensors.items():
            if name not in params:
                raise ValueError(f"mask names {name!r}, which the model does not have")
            if params[name].shape != t.shape:
                raise ValueError(f"mask for {name} has shape {tuple(t.shape)}, weight {tuple(params[name].shape)}")

    def apply_(self, model: nn.Module) -> None:
        """Zero the pruned weights in place."""
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, keep in self.tensors.items():
                params[name].mul_(keep.to(params[name].device, params[name].dtype))

    def layers(self) -> dict[str, LayerSparsity]:
        return {n: LayerSparsity(t.numel(), int(t.sum())) for n, t in self.tensors.items()}

    def sparsity(self) -> float:
        """Fraction of masked-out weights over all masked tensors."""
        total = sum(t.numel() for t in self.tensors.values())
        kept = sum(int(t.sum()) for t in self.tensors.values())
        return 1.0 - kept / total if total else 0.0

    def __and__(self, other: Mask) -> Mask:
        if self.tensors.keys() != other.tensors.keys():
            raise ValueError("masks over different parameters cannot be combined")
        return Mask({n: t & other.tensors[n] for n, t in self.tensors.items()})

    def state_dict(self) -> dict[str, Tensor]:
        return {n: t.cpu() for n, t in self.tensors.items()}

    @classmethod
    def from_state_dict(cls, state: Mapping[str, Tensor], device: str | torch.device = "cpu") -> Mask:
        return cls({n: t.to(device=device, dtype=torch.bool) for n, t in state.items()})


def measured_sparsity(model: nn.Module, names: Iterable[str]) -> dict[str, LayerSparsity]:
    """Per-layer counts of the weights that are actually zero (what a run records, not what it asked for)."""
    params = dict(model.named_parameters())
    return {n: LayerSparsity(params[n].numel(), int(torch.count_nonzero(params[n].detach()))) for n in names}
