"""FLOPs of a model's matmul-carrying layers (Linear, Conv1d/2d/3d), dense and counting only nonzero weights.

One multiply-add is 2 FLOPs, so a Linear with n_in inputs and n_out outputs costs 2*n_in*n_out per sample
(2*m*n*k for a batch of m), and a convolution 2 * (output positions) * (out_channels * in_channels/groups *
kernel volume). The nonzero count replaces the weight's numel by its count of nonzero entries: the work a
sparse kernel would do. Biases, activations, pooling and normalisation are not counted (they are a small
fraction of a matmul network's work). Backward costs about twice the forward, so one training step is ~3x.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

MATMUL_LAYERS = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass(frozen=True)
class LayerFlops:
    dense: int  # FLOPs of one sample's forward pass through this layer
    nonzero: int  # the same, counting only nonzero weights


@dataclass(frozen=True)
class Flops:
    layers: dict[str, LayerFlops]  # module name -> per-sample forward FLOPs

    @property
    def dense(self) -> int:
        return sum(f.dense for f in self.layers.values())

    @property
    def nonzero(self) -> int:
        return sum(f.nonzero for f in self.layers.values())

    def train_epoch(self, samples: int) -> int:
        """FLOPs of one training epoch: forward plus a backward of about twice the forward."""
        return 3 * self.dense * samples


def _positions(module: nn.Module, out: Tensor) -> int:
    """Output positions per sample at which the weight is applied (1 for a Linear on vectors)."""
    if isinstance(module, nn.Linear):
        return math.prod(out.shape[1:-1])  # [B, ..., n_out]: one matmul row per leading position
    return math.prod(out.shape[2:])  # [B, C_out, *spatial]


def count_flops(model: nn.Module, sample: Tensor) -> Flops:
    """Per-sample forward FLOPs, measured by one forward pass of `sample` ([1, *input_shape]) with hooks."""
    found: dict[str, LayerFlops] = {}
    handles = []
    for name, module in model.named_modules():
        if not isinstance(module, MATMUL_LAYERS):
            continue

        def hook(mod: nn.Module, inputs: tuple[Tensor, ...], out: Tensor, name: str = name) -> None:
            positions = _positions(mod, out)
            weight = mod.weight.detach()
            dense = 2 * positions * weight.numel()
            nonzero = 2 * positions * int(torch.count_nonzero(weight))
            prev = found.get(name)  # a module applied twice (weight sharing) costs twice
            found[name] = LayerFlops(dense + (prev.dense if prev else 0), nonzero + (prev.nonzero if prev else 0))

        handles.append(module.register_forward_hook(hook))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(sample[:1])
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return Flops(found)
