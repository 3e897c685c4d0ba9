"""Payoff fields of a level: real serialised sizes, a lossless sparse format, FLOPs, slim-model latency."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from prune_lab.data.splits import DataInfo
from prune_lab.models.mlp import MLP
from prune_lab.payoff import measure_payoff, pack_sparse, saved_size, sparse_state, unpack_sparse

MNIST = DataInfo("mnist", (1, 28, 28), 10)


@pytest.mark.parametrize("sparsity", [0.0, 0.5, 0.9, 0.99])
def test_sparse_format_round_trips_exactly(sparsity: float) -> None:
    g = torch.Generator().manual_seed(1)
    t = torch.randn(37, 53, generator=g)
    t[torch.rand(t.shape, generator=g) < sparsity] = 0
    packed = pack_sparse(t)
    assert torch.equal(unpack_sparse(packed), t)
    if sparsity >= 0.5:
        assert saved_size(packed) < saved_size(t)
    if sparsity == 0.99:
        assert "indices" in packed  # under 1/32 density, int32 indices beat a bitmask


def test_payoff_of_a_magnitude_pruned_lenet() -> None:
    torch.manual_seed(0)
    model = MLP(MNIST, [300, 100])
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.Linear):  # 80% of each weight matrix zero, no whole row
                cut = m.weight.abs().flatten().kthvalue(int(0.8 * m.weight.numel())).values
                m.weight[m.weight.abs() <= cut] = 0
    record = measure_payoff(model, torch.randn(1, 1, 28, 28))
    assert record["flops_dense"] == 2 * 266_200
    assert record["flops_nonzero"] == pytest.approx(0.2 * record["flops_dense"], rel=0.01)
    # 80% zeros: values (0.2 x 4 bytes) + bitmask (1/8 byte) = 0.925 of 4 bytes per weight: ~0.23 of dense
    assert 0.2 < record["bytes_sparse"] / record["bytes_dense"] < 0.26
    assert "slim_params" not in record  # no whole unit pruned: nothing to slim
    restored = {k: unpack_sparse(v) for k, v in sparse_state(model).items()}
    assert all(torch.equal(restored[k], v) for k, v in model.state_dict().items())


def test_payoff_of_a_unit_pruned_lenet_has_a_slim_model_and_latencies() -> None:
    torch.manual_seed(0)
    model = MLP(MNIST, [300, 100])
    with torch.no_grad():
        model.net[1].weight[:150] = 0
        model.net[3].weight[:50] = 0
    record = measure_payoff(model, torch.randn(1, 1, 28, 28))
    assert record["slim_params"] == 150 * 785 + 50 * 151 + 10 * 51
    assert record["slim_flops"] == 2 * (150 * 784 + 50 * 150 + 10 * 50)
    for key in ("latency_b1_ms", "slim_latency_b1_ms", "latency_b256_ms", "slim_latency_b256_ms"):
        assert record[key] > 0
