"""Fully connected networks: flatten, then Linear+ReLU per hidden width, then a Linear to the classes.

`output_relu=True` puts a ReLU on the logits too: the weight-vs-unit study's network did
(jf20541/Pruning-DeepNeuralNetwork, src/model.py: `return F.relu(self.fc5(x))`), so its logits are >= 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from torch import Tensor, nn

from prune_lab.data.splits import DataInfo
from prune_lab.errors import UserError


class MLP(nn.Module):
    def __init__(self, info: DataInfo, hidden: Sequence[int], bias: bool = True, output_relu: bool = False):
        super().__init__()
        if any(int(h) <= 0 for h in hidden):
            raise UserError(f"model.hidden={list(hidden)} must list positive widths")
        if not info.input_shape:  # samples without a shape are node indices of a graph (dataset=cora)
            raise UserError(f"an MLP needs feature vectors or images, but dataset {info.name}'s samples are graph "
                            "nodes; choose model=gcn")
        widths = [math.prod(info.input_shape), *map(int, hidden), info.num_classes]
        layers: list[nn.Module] = [nn.Flatten()]
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.Linear(n_in, n_out, bias=bias))
            if i < len(widths) - 2:
                layers.append(nn.ReLU())
        if output_relu:  # after the last Linear: the layer indices (and parameter names) above do not move
            layers.append(nn.ReLU())
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:  # x: [B, *input_shape] -> logits [B, classes]
        return self.net(x)
