"""Residual networks in their CIFAR form (3x3 stem, no initial max-pool): ResNet-18 and ResNet-20.

One class covers both: `blocks` basic blocks per stage, `widths` channels per stage, stride 2 at the
start of every stage but the first, a 1x1 convolution + batch norm on the shortcut where the shape
changes, then global average pooling and one Linear layer.
- ResNet-18 (He et al. 2016, as in kuangliu/pytorch-cifar): blocks [2, 2, 2, 2], widths [64, 128, 256, 512].
- ResNet-20 (He et al. 2016, Sec. 4.2; OpenLTH's cifar_resnet_20): blocks [3, 3, 3], widths [16, 32, 64].
Convolutions carry no bias (batch norm follows each one).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from prune_lab.data.splits import DataInfo
from prune_lab.errors import UserError
from prune_lab.models.fit import require_image


class BasicBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_ch != out_ch:  # projection shortcut (option B) where the shape changes
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_ch))

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet(nn.Module):
    def __init__(self, info: DataInfo, blocks: Sequence[int], widths: Sequence[int], name: str = "resnet"):
        super().__init__()
        if len(blocks) != len(widths) or not blocks or min(blocks) < 1 or min(widths) < 1:
            raise UserError(f"model.blocks={list(blocks)} and model.widths={list(widths)} must be equally long "
                            "lists of positive integers, e.g. blocks=[3,3,3] widths=[16,32,64]")
        c, _, _ = require_image(info, name, min_side=2 ** (len(blocks) - 1))
        self.stem = nn.Sequential(nn.Conv2d(c, widths[0], 3, padding=1, bias=False), nn.BatchNorm2d(widths[0]),
                                  nn.ReLU())
        stages: list[nn.Module] = []
        in_ch = widths[0]
        for i, (n, width) in enumerate(zip(blocks, widths)):
            for j in range(n):
                stages.append(BasicBlock(in_ch, width, stride=2 if i > 0 and j == 0 else 1))
                in_ch = width
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(in_ch, info.num_classes)

    def forward(self, x: Tensor) -> Tensor:  # x: [B, C, H, W] -> logits [B, classes]
        out = self.stages(self.stem(x))
        return self.fc(out.mean(dim=(2, 3)))  # global average pooling: [B, C_last]
