"""Payoff fields of a level: real serialised sizes, a lossless sparse format, FLOPs, slim-model latency."""

from __future__ import annotations

from pathlib import Path

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


def test_payoff_of_a_unit_pruned_lenet_has_a_slim_model_and_latencies_only_when_asked() -> None:
    torch.manual_seed(0)
    model = MLP(MNIST, [300, 100])
    with torch.no_grad():
        model.net[1].weight[:150] = 0
        model.net[3].weight[:50] = 0
    cheap = measure_payoff(model, torch.randn(1, 1, 28, 28))  # the default: no export, no timing
    assert "slim_params" not in cheap and not any("latency" in k for k in cheap) and cheap["flops_nonzero"] > 0
    slim = measure_payoff(model, torch.randn(1, 1, 28, 28), "slim")
    assert slim["slim_params"] == 150 * 785 + 50 * 151 + 10 * 51 and not any("latency" in k for k in slim)
    record = measure_payoff(model, torch.randn(1, 1, 28, 28), "latency")
    assert record["slim_params"] == 150 * 785 + 50 * 151 + 10 * 51
    assert record["slim_flops"] == 2 * (150 * 784 + 50 * 150 + 10 * 50)
    for key in ("latency_b1_ms", "slim_latency_b1_ms", "latency_b256_ms", "slim_latency_b256_ms"):
        assert record[key] > 0


def test_latency_is_measured_only_when_asked_and_later_from_the_kept_tickets(tmp_path: Path) -> None:
    from prune_lab.api import run
    from prune_lab.measure import PAYOFF, measure_run

    default = run("pruner=unit", "sparsity=0.4", "train.epochs=2", "keep_tickets=true", "cache_dir=null",
                  run_dir=tmp_path / "default")
    assert not any(k.startswith(("slim_", "latency")) for level in default.levels for k in level)
    assert sorted(p.name for p in (default.path / "tickets").glob("*.pt")) == ["00-dense.pt", "01-pruned.pt"]
    before = (default.path / "results.json").read_bytes()
    record = measure_run(default.path)
    assert [level["name"] for level in record["levels"]] == ["dense", "pruned"]
    pruned = record["levels"][1]
    assert pruned["slim_params"] < default.levels[1]["params_total"] and pruned["latency_b1_ms"] > 0
    assert pruned["flops_nonzero"] == default.levels[1]["flops_nonzero"]  # the saved ticket is the level's network
    assert "slim_params" not in record["levels"][0]  # the dense level has no dead unit
    assert (default.path / "results.json").read_bytes() == before and (default.path / PAYOFF).exists()
    asked = run("pruner=unit", "sparsity=0.4", "train.epochs=2", "measure=latency", "cache_dir=null",
                run_dir=tmp_path / "asked")
    assert asked.levels[1]["latency_b1_ms"] > 0 and asked.results["config_hash"] == default.results["config_hash"]
