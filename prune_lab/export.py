"""Export a unit-pruned model as a physically smaller one: dead units and filters removed, with the next
layer's inputs removed with them, computing the same outputs as the masked model (to float tolerance).

A unit (a Linear output row, a Conv filter) is dead when all its weights are zero. It still emits a
constant: its bias, passed through the channel-wise modules up to the next matmul layer (ReLU, pooling,
batch norm in eval mode, flatten). Into a next Linear that constant is folded into the bias, exactly; into
a next Conv (whose zero padding makes a constant channel position-dependent) the unit is removed only
when its constant is exactly zero, and kept otherwise. The output layer keeps all its units.

Scope: models whose forward is a chain of modules (nested `nn.Sequential`s of Linear/Conv and channel-wise
modules), which covers the MLPs and Conv-N/LeNet-5. Residual networks are refused with `NotExportable`.
"""

from __future__ import annotations

import copy

import torch
from torch import Tensor, nn

from prune_lab.flops import MATMUL_LAYERS

ELEMENTWISE = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.Identity,
               nn.Dropout)
POOLS = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
         nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d)
NORMS = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
CHANNELWISE = (*ELEMENTWISE, *POOLS, *NORMS, nn.Flatten)


class NotExportable(ValueError):
    """The model is not a chain the exporter can slim (e.g. it has residual connections)."""


def sequential_chain(model: nn.Module, sample: Tensor) -> list[nn.Module]:
    """The model's leaf modules in order, checked to compute exactly what the model does on `sample`."""
    leaves: list[nn.Module] = []

    def walk(module: nn.Module, top: bool) -> None:
        children = list(module.children())
        if not children:
            leaves.append(module)
        elif top or isinstance(module, nn.Sequential):
            for child in children:
                walk(child, False)
        else:
            raise NotExportable(f"{type(module).__name__} is a container with its own forward; not a chain")

    walk(model, True)
    for leaf in leaves:
        if not isinstance(leaf, (*MATMUL_LAYERS, *CHANNELWISE)):
            raise NotExportable(f"cannot slim through {type(leaf).__name__}")
        if isinstance(leaf, nn.Flatten) and leaf.start_dim != 1:
            raise NotExportable("only Flatten(start_dim=1) is supported")
        if isinstance(leaf, MATMUL_LAYERS[1:]) and leaf.groups != 1:
            raise NotExportable("grouped convolutions are not supported")
    was_training = model.training
    model.eval()
    with torch.no_grad():
        same = torch.equal(nn.Sequential(*leaves)(sample), model(sample))
    model.train(was_training)
    if not same:
        raise NotExportable(f"{type(model).__name__}'s forward is not the chain of its modules")
    return leaves


def dead_units(layer: nn.Module) -> Tensor:
    """[out_units] bool: output rows / filters whose weights are all zero."""
    return ~(layer.weight.detach().flatten(1) != 0).any(1)


def _set(module: nn.Module, name: str, value: Tensor | None) -> None:
    if value is None:
        return
    old = getattr(module, name)
    if isinstance(old, nn.Parameter):
        setattr(module, name, nn.Parameter(value.clone(), requires_grad=old.requires_grad))
    else:
        module.register_buffer(name, value.clone())


def _slice_outputs(layer: nn.Module, keep: Tensor) -> None:
    _set(layer, "weight", layer.weight.detach()[keep])
    if layer.bias is not None:
        _set(layer, "bias", layer.bias.detach()[keep])
    n = int(keep.sum())
    if isinstance(layer, nn.Linear):
        layer.out_features = n
    else:
        layer.out_channels = n


def _slice_norm(norm: nn.Module, keep: Tensor) -> None:
    for name in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(norm, name, None)
        if value is not None:
            _set(norm, name, value.detach()[keep])
    norm.num_features = int(keep.sum())


def export_slim(model: nn.Module, sample: Tensor) -> nn.Sequential:
    """A smaller `nn.Sequential` with the same outputs as `model` (eval mode) for inputs shaped like `sample`."""
    sample = sample[:1]
    chain = [copy.deepcopy(m) for m in sequential_chain(model, sample)]
    for m in chain:
        m.eval()
    shapes = []
    with torch.no_grad():
        x = sample
        for m in chain:
            x = m(x)
            shapes.append(x.shape)
        matmuls = [i for i, m in enumerate(chain) if isinstance(m, MATMUL_LAYERS)]
        for i, k in zip(matmuls[:-1], matmuls[1:]):
            a, b = chain[i], chain[k]
            dead = dead_units(a)  # recomputed after the previous pair sliced a's inputs and folded its bias
            if not dead.any():
                continue
            units = len(dead)
            # What each unit delivers to b when its weights are zero: its bias through the modules between.
            bias = a.bias.detach() if a.bias is not None else torch.zeros(units, device=a.weight.device)
            z = bias.view(1, units, *([1] * (len(shapes[i]) - 2))).expand(shapes[i]).clone()
            for m in chain[i + 1 : k]:
                z = m(z)  # channel-wise modules: each unit's value depends on that unit alone
            if isinstance(b, nn.Linear):
                z = z.reshape(-1)  # [in_features of b], channel-major as Flatten lays it out
                unit_of_input = torch.arange(b.in_features, device=z.device) // (b.in_features // units)
                removable = dead.clone()
            else:
                unit_of_input = torch.arange(units, device=z.device)
                removable = dead & (z[0].reshape(units, -1) == 0).all(1)
            if removable.all():
                removable[0] = False  # keep one unit: a zero-width layer is not worth the edge cases
            if not removable.any():
                continue
            gone = removable[unit_of_input]  # [b's inputs] that belong to removed units
            if isinstance(b, nn.Linear):
                shift = b.weight.detach()[:, gone] @ z[gone]  # the removed units' constant contribution
                if bool((shift != 0).any()):
                    base = b.bias.detach() if b.bias is not None else torch.zeros_like(shift)
                    b.bias = nn.Parameter(base + shift)
                _set(b, "weight", b.weight.detach()[:, ~gone])
                b.in_features = int((~gone).sum())
            else:
                _set(b, "weight", b.weight.detach()[:, ~gone])
                b.in_channels = int((~gone).sum())
            keep = ~removable
            _slice_outputs(a, keep)
            for m in chain[i + 1 : k]:
                if isinstance(m, NORMS):
                    _slice_norm(m, keep)
    return nn.Sequential(*chain)


def params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
