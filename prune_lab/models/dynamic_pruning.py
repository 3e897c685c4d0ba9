"""The dynamic-pruning study's models: the penguin MLP with tanh on its outputs, and the flowers CNN.

Both put a tanh on the logits, as the study's code did (so the cross-entropy cannot fall below that of
logits in [-1, 1]: 0.24 for 3 classes; the study's test losses of ~0.43-0.48 are on that scale).
Flowers CNN (for 180x180 RGB, 5 classes): conv 3->12 + BN + ReLU, 2x2 max-pool, conv 12->20 + ReLU,
conv 20->32 + BN + ReLU (3x3, padding 1), then Linear(32*90*90 -> 32) + ReLU, Linear(32 -> classes), tanh.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from prune_lab.data.splits import DataInfo
from prune_lab.models.fit import require_image
from prune_lab.models.mlp import MLP


class TanhMLP(MLP):
    """`MLP` with tanh on the logits: the study's `tanh(stack2(relu(stack1(x))))` for hidden=[12]."""

    def __init__(self, info: DataInfo, hidden: Sequence[int], bias: bool = True):
        super().__init__(info, hidden, bias)

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.net(x))


class FlowersCNN(nn.Module):
    def __init__(self, info: DataInfo, channels: Sequence[int] = (12, 20, 32), hidden: int = 32,
                 tanh_output: bool = True):
        super().__init__()
        c, h, w = require_image(info, "flowers_cnn", min_side=2)
        c1, c2, c3 = channels
        self.features = nn.Sequential(
            nn.Conv2d(c, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1), nn.ReLU(),  # the study's second conv has no batch norm
            nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU(),
        )
        self.classifier = nn.Sequential(nn.Flatten(), nn.Linear(c3 * (h // 2) * (w // 2), hidden), nn.ReLU(),
                                        nn.Linear(hidden, info.num_classes))
        self.tanh_output = tanh_output

    def forward(self, x: Tensor) -> Tensor:  # x: [B, C, H, W] -> [B, classes]
        out = self.classifier(self.features(x))
        return torch.tanh(out) if self.tanh_output else out
