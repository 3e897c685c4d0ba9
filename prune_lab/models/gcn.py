"""Two-layer graph convolutional network (Kipf & Welling 2017) for node classification.

The samples are node indices: `forward(idx)` propagates over the whole graph,
    Z = A_hat . relu(A_hat . X W1^T + b1) W2^T + b2,    A_hat = D^-1/2 (A + I) D^-1/2,
and returns the rows `idx` [B, classes]. A_hat (sparse [N, N]) and X ([N, F], kept sparse) come from
the dataset's DataInfo.extras ("adjacency", "features") and are non-persistent buffers: they move with
the model but stay out of checkpoints. W1, W2 are `nn.Linear` weights without bias (the bias is added after
propagation, as in the paper), so pruners treat them like any Linear layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune_lab.data.splits import DataInfo
from prune_lab.errors import UserError


class GraphConv(nn.Module):
    def __init__(self, in_features: int, out_features: int):
        super().__init__()
        self.linear = nn.Linear(in_features, out_features, bias=False)  # weight [out, in], prunable
        self.bias = nn.Parameter(torch.zeros(out_features))

    def forward(self, x: Tensor, adjacency: Tensor) -> Tensor:  # x: [N, in] (sparse or dense) -> [N, out]
        h = torch.sparse.mm(x, self.linear.weight.t()) if x.is_sparse else self.linear(x)
        return torch.sparse.mm(adjacency, h) + self.bias


class GCN(nn.Module):
    def __init__(self, info: DataInfo, hidden: int = 16, dropout: float = 0.5):
        super().__init__()
        if "adjacency" not in info.extras or "features" not in info.extras:
            raise UserError(f"model gcn needs a graph dataset (e.g. dataset=cora), but dataset {info.name} "
                            "has no adjacency/features; choose another model for it")
        if hidden < 1 or not 0.0 <= dropout < 1.0:
            raise UserError(f"model.hidden={hidden} must be >= 1 and model.dropout={dropout} in [0, 1)")
        features: Tensor = info.extras["features"]
        self.register_buffer("adjacency", info.extras["adjacency"], persistent=False)  # sparse [N, N]
        # Bag-of-words features are ~99% zeros: kept sparse, so layer 1 costs nnz x hidden, not N x F x hidden.
        self.register_buffer("features", features.to_sparse().coalesce(), persistent=False)  # [N, F]
        self.conv1 = GraphConv(features.shape[1], hidden)
        self.conv2 = GraphConv(hidden, info.num_classes)
        self.dropout = dropout

    def forward(self, idx: Tensor) -> Tensor:  # idx: [B] int64 node indices -> logits [B, classes]
        x = self.features
        if self.training and self.dropout:  # dropout on the nonzero entries (zeros stay zero either way)
            x = torch.sparse_coo_tensor(x.indices(), F.dropout(x.values(), self.dropout), x.shape,
                                        is_coalesced=True, check_invariants=False)  # same indices: valid
        x = F.relu(self.conv1(x, self.adjacency))
        x = F.dropout(x, self.dropout, self.training)
        return self.conv2(x, self.adjacency)[idx]
