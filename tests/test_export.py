"""The exported slim model computes what the unit-pruned (masked) model computes, and is smaller."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prune_lab.data.splits import DataInfo
from prune_lab.export import NotExportable, export_slim, params
from prune_lab.flops import MATMUL_LAYERS, count_flops
from prune_lab.models.convnets import ConvNet, LeNet5
from prune_lab.models.mlp import MLP

MNIST = DataInfo("mnist", (1, 28, 28), 10)
CIFAR = DataInfo("cifar10", (3, 32, 32), 10)


def prune_units(model: nn.Module, fraction: float, seed: int = 0) -> None:
    """Zero whole output rows / filters of every matmul layer but the last; biases stay (nonzero)."""
    g = torch.Generator().manual_seed(seed)
    layers = [m for m in model.modules() if isinstance(m, MATMUL_LAYERS)]
    with torch.no_grad():
        for layer in layers[:-1]:
            units = layer.weight.shape[0]
            gone = torch.randperm(units, generator=g)[: int(fraction * units)]
            layer.weight[gone] = 0
            if layer.bias is not None:
                layer.bias.uniform_(-0.5, 0.5, generator=g)  # both signs: ReLU keeps some constants nonzero


MODELS = {
    "lenet_300_100": lambda: (MLP(MNIST, [300, 100]), (1, 28, 28)),
    "mlp_no_bias": lambda: (MLP(MNIST, [64, 32], bias=False), (1, 28, 28)),
    "lenet5": lambda: (LeNet5(MNIST), (1, 28, 28)),
    "conv4": lambda: (ConvNet(CIFAR, [16, 16, "M", 32, 32, "M"], fc=[64, 32]), (3, 32, 32)),
    "conv_bn": lambda: (ConvNet(CIFAR, [16, "M", 32, "M"], fc=[32], batch_norm=True), (3, 32, 32)),
}


@pytest.mark.parametrize("name", MODELS)
@pytest.mark.parametrize("fraction", [0.5, 0.9])
def test_slim_model_equals_masked_model(name: str, fraction: float) -> None:
    torch.manual_seed(0)
    model, shape = MODELS[name]()
    prune_units(model, fraction)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):  # non-trivial running statistics
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    model.eval()
    x = torch.randn(64, *shape)
    slim = export_slim(model, x[:1])
    with torch.no_grad():
        assert torch.allclose(slim(x), model(x), atol=1e-5, rtol=1e-4)
    assert params(slim) < params(model)
    assert count_flops(slim, x[:1]).dense < count_flops(model, x[:1]).dense
    assert slim[-1].out_features == 10  # logits kept


def test_removed_units_take_the_next_layers_inputs_with_them() -> None:
    model = MLP(DataInfo("toy", (6,), 3), [4, 5])
    with torch.no_grad():
        model.net[1].weight[[0, 2]] = 0  # 2 of 4 hidden units dead
    slim = export_slim(model, torch.randn(1, 6))
    linears = [m for m in slim if isinstance(m, nn.Linear)]
    assert [tuple(m.weight.shape) for m in linears] == [(2, 6), (5, 2), (3, 5)]


def test_dead_conv_filters_with_nonzero_constant_into_a_padded_conv_are_kept() -> None:
    # Zero padding makes a constant channel position-dependent: only exact zeros can go.
    model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1), nn.Flatten(),
                          nn.Linear(2 * 8 * 8, 3))
    with torch.no_grad():
        model[0].weight[:2] = 0
        model[0].bias[:] = torch.tensor([1.0, -1.0, 0.3, 0.3])  # filter 0 emits relu(1)=1, filter 1 relu(-1)=0
    x = torch.randn(8, 1, 8, 8)
    slim = export_slim(model, x[:1])
    assert slim[0].out_channels == 3 and slim[2].in_channels == 3
    with torch.no_grad():
        assert torch.allclose(slim(x), model(x), atol=1e-5)


def test_cascade_a_unit_fed_only_by_dead_units_dies_too() -> None:
    model = MLP(DataInfo("toy", (6,), 3), [4, 5])
    with torch.no_grad():
        model.net[1].weight[[0, 1]] = 0
        model.net[3].weight[:, [2, 3]] = 0  # second hidden layer reads only units 0 and 1, which are dead
        model.net[3].weight[0, 0] = 1.0
    x = torch.randn(16, 6)
    slim = export_slim(model, x[:1])
    with torch.no_grad():
        assert torch.allclose(slim(x), model(x), atol=1e-6)
    assert slim[3].out_features == 1  # all five are constant now; one kept (no zero-width layers)


def test_residual_models_are_refused() -> None:
    class Residual(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 2)

        def forward(self, x):
            return self.b(x + self.a(x))

    with pytest.raises(NotExportable):
        export_slim(Residual(), torch.randn(1, 4))
