"""The FLOP counter against small models counted by hand."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prune_lab.data.splits import DataInfo
from prune_lab.flops import count_flops
from prune_lab.models.convnets import ConvNet
from prune_lab.models.mlp import MLP


def test_linear_chain_by_hand() -> None:
    # 4 -> 3 -> 2: 2*4*3 + 2*3*2 = 24 + 12 = 36 FLOPs per sample
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    flops = count_flops(model, torch.randn(1, 4))
    assert flops.dense == 36
    assert flops.nonzero == 36
    with torch.no_grad():
        model[0].weight[0] = 0  # 4 of the first layer's 12 weights: 2*8 + 12 = 28
        model[2].weight[1, 2] = 0  # one more: 2*8 + 2*5 = 26
    flops = count_flops(model, torch.randn(1, 4))
    assert (flops.dense, flops.nonzero) == (36, 26)
    assert flops.train_epoch(10) == 3 * 36 * 10


def test_conv_by_hand() -> None:
    # Conv 2->3, 3x3, pad 1 on 5x5: 25 positions * 3*2*9 weights * 2 = 2700; stride 2 no pad on 5x5: 2x2 = 4 positions
    conv = nn.Conv2d(2, 3, 3, padding=1)
    assert count_flops(conv, torch.randn(1, 2, 5, 5)).dense == 2 * 25 * 54
    strided = nn.Conv2d(2, 3, 3, stride=2)
    assert count_flops(strided, torch.randn(1, 2, 5, 5)).dense == 2 * 4 * 54
    with torch.no_grad():
        strided.weight[0] = 0  # one filter of 18 weights gone
    assert count_flops(strided, torch.randn(1, 2, 5, 5)).nonzero == 2 * 4 * 36


def test_lenet_300_100_matches_the_paper_count() -> None:
    model = MLP(DataInfo("mnist", (1, 28, 28), 10), hidden=[300, 100])
    flops = count_flops(model, torch.randn(1, 1, 28, 28))
    assert flops.dense == 2 * (784 * 300 + 300 * 100 + 100 * 10)  # 532,000 = 2 x 266,000 multiply-adds


def test_conv6_on_cifar_shapes() -> None:
    model = ConvNet(DataInfo("cifar10", (3, 32, 32), 10), [64, 64, "M", 128, 128, "M", 256, 256, "M"])
    macs = (32 * 32 * (64 * 3 * 9 + 64 * 64 * 9) + 16 * 16 * (128 * 64 * 9 + 128 * 128 * 9)
            + 8 * 8 * (256 * 128 * 9 + 256 * 256 * 9) + 4096 * 256 + 256 * 256 + 256 * 10)
    assert count_flops(model, torch.randn(1, 3, 32, 32)).dense == 2 * macs


@pytest.mark.parametrize("batch", [1, 5])
def test_per_sample_whatever_the_batch(batch: int) -> None:
    model = nn.Sequential(nn.Conv1d(1, 2, 3), nn.Flatten(), nn.Linear(2 * 6, 4))
    assert count_flops(model, torch.randn(batch, 1, 8)).dense == 2 * (6 * 2 * 3) + 2 * 12 * 4
