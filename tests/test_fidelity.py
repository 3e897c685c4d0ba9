"""Defaults that are the papers' and the authors' code's: LeNet's iterative rates (Frankle & Carbin 2019), the
batch-norm mode SNIP and GraSP score in (their authors' code), where a late-rewound control starts (OpenLTH)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import job_from_config
from torch import nn

from prune_lab.api import prepare
from prune_lab.data.splits import DataInfo, Splits, TensorSet
from prune_lab.job import Job
from prune_lab.masks import Mask
from prune_lab.pruners.scores import SNIP, GraSP, ScoreInputs

LENET = ("model=lenet_300_100", "pruner=imp", "dataset=penguins", "device=cpu", "train.epochs=1")


def test_lenet_imp_prunes_hidden_layers_20_and_the_output_layer_10_percent_a_round(tmp_path: Path):
    job = job_from_config(tmp_path, *LENET, "sparsity=0.9")
    weights = job.weights()
    (overall, per_layer), *_ = job.pruner.plan({n: w.numel() for n, w in weights.items()})
    assert per_layer == pytest.approx({"net.1.weight": 0.2, "net.3.weight": 0.2, "net.5.weight": 0.1})
    mask = job.pruner.prune(job, 1, overall, per_layer)
    for name, rate in (("net.1.weight", 0.2), ("net.3.weight", 0.2), ("net.5.weight", 0.1)):
        w = weights[name].reshape(-1)
        by_hand = torch.ones_like(w, dtype=torch.bool)
        by_hand[w.abs().argsort()[: round(rate * w.numel())]] = False  # the smallest |w| of this layer go
        assert torch.equal(mask.tensors[name].reshape(-1).bool(), by_hand), name


@pytest.mark.parametrize("overrides, rates", [
    (("pruner.layer_rates=null",), {"net.1.weight": 0.2, "net.3.weight": 0.2, "net.5.weight": 0.2}),
    (("pruner.layer_rates={net.5.weight:0.3}",), {"net.1.weight": 0.2, "net.3.weight": 0.2, "net.5.weight": 0.3}),
])
def test_command_line_layer_rates_win_over_the_recipe(tmp_path: Path, overrides, rates):
    job = job_from_config(tmp_path, *LENET, *overrides)
    assert job.pruner.rates_for(list(job.weights())) == rates


def test_openlths_variant_is_one_documented_override(tmp_path: Path):
    job = job_from_config(tmp_path, *LENET, "pruner.layer_rates=null", "pruner.select.scope=global",
                          "prunable.exclude=[net.5.weight]")
    assert list(job.weights()) == ["net.1.weight", "net.3.weight"] and job.pruner.select.scope == "global"


def test_the_recipe_leaves_other_schedules_and_models_alone(tmp_path: Path):
    magnitude = job_from_config(tmp_path / "m", "model=lenet_300_100", "pruner=magnitude", "device=cpu")
    assert "layer_rates" not in vars(magnitude.pruner)
    mlp = job_from_config(tmp_path / "p", "pruner=imp", "device=cpu")
    assert mlp.pruner.layer_rates == {}


class BatchNormNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1, self.bn, self.fc2 = nn.Linear(5, 8), nn.BatchNorm1d(8), nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.bn(self.fc1(x))))


def bn_inputs() -> tuple[BatchNormNet, ScoreInputs, tuple[torch.Tensor, torch.Tensor]]:
    torch.manual_seed(0)
    model = BatchNormNet()
    with torch.no_grad():  # running statistics far from any batch's: the two modes must differ
        model.bn.running_mean.fill_(3.0)
        model.bn.running_var.fill_(0.1)
    x, y = torch.randn(16, 5), torch.randint(0, 3, (16,))
    split = TensorSet(x, y)
    data = Splits(DataInfo("toy", (5,), 3), split, split, split)
    mask = Mask.ones(model, ["fc1.weight", "fc2.weight"])
    inputs = ScoreInputs(model, mask, data, torch.Generator().manual_seed(1))
    perm = torch.randperm(16, generator=torch.Generator().manual_seed(1))
    return model, inputs, (x[perm], y[perm])  # the batch the score draws


def test_snip_scores_with_batch_norm_on_running_statistics_as_its_authors():
    model, inputs, (x, y) = bn_inputs()
    stats = model.bn.running_mean.clone()
    scores = SNIP(batch_size=16).weights(inputs)
    by_hand = BatchNormNet()
    by_hand.load_state_dict(model.state_dict())
    by_hand.eval()  # snip-public: is_train False while computing the connection sensitivity
    F.cross_entropy(by_hand(x), y).backward()
    assert torch.allclose(scores["fc1.weight"], (by_hand.fc1.weight.grad * by_hand.fc1.weight).abs())
    train_mode = SNIP(batch_size=16, batch_norm="train").weights(inputs)
    assert not torch.allclose(train_mode["fc1.weight"], scores["fc1.weight"])
    assert torch.equal(model.bn.running_mean, stats), "scoring never moves the model's statistics"


def test_grasp_scores_two_half_batches_in_train_mode_as_its_authors():
    model, inputs, (x, y) = bn_inputs()
    scores = GraSP(batch_size=16).weights(inputs)
    net = BatchNormNet()
    net.load_state_dict(model.state_dict())
    net.train()  # alecwangcq/GraSP leaves the network in train mode
    weights = [net.fc1.weight, net.fc2.weight]
    halves = [(x[:8], y[:8]), (x[8:], y[8:])]
    g = [torch.zeros_like(w) for w in weights]
    for hx, hy in halves:
        g = [a + b for a, b in zip(g, torch.autograd.grad(F.cross_entropy(net(hx) / 200, hy), weights))]
    hg = [torch.zeros_like(w) for w in weights]
    for hx, hy in halves:
        grads = torch.autograd.grad(F.cross_entropy(net(hx) / 200, hy), weights, create_graph=True)
        z = sum((a * b).sum() for a, b in zip(g, grads))
        hg = [a + b for a, b in zip(hg, torch.autograd.grad(z, weights))]
    assert torch.allclose(scores["fc1.weight"], net.fc1.weight.detach() * hg[0], rtol=1e-4, atol=1e-10)
    eval_mode = GraSP(batch_size=16, batch_norm="eval").weights(inputs)
    assert not torch.allclose(eval_mode["fc1.weight"], scores["fc1.weight"])


def test_a_bad_batch_norm_mode_is_refused_in_one_line():
    with pytest.raises(Exception, match=r"^pruner.score.batch_norm='test' must be one of \('eval', 'train'\)$"):
        SNIP(batch_norm="test")


class StartSteps(Job):
    """A real Job that notes the optimizer step each phase starts at."""

    def train(self, phase, epochs, **kwargs):
        self.starts = {**getattr(self, "starts", {}), phase: kwargs.get("start_step", 0)}
        super().train(phase, epochs, **kwargs)


@pytest.mark.parametrize("zero, expected", [(False, 3), (True, 0)])
def test_late_rewound_random_reinitialisation_starts_at_the_rewind_step_as_openlth(tmp_path: Path, zero, expected):
    spec, job = prepare("pruner=imp", "pruner.rewind=step:3", "pruner.controls=[randomly_reinitialize,randomly_prune]",
                        f"pruner.start_at_step_zero={str(zero).lower()}", "sparsity=0.2", "train.epochs=1",
                        "device=cpu", "cache_dir=null", run_dir=tmp_path, job_type=StartSteps)
    spec.pruner.run(job)
    assert job.starts == {"dense": 0, "round-1": 3, "randomly_reinitialize-1": expected, "randomly_prune-1": 3}


# --- MNIST without torchvision (the full-size issue's start-up cost) -------------------------------------------

@pytest.mark.parametrize("name", ["MNIST", "FashionMNIST"])
def test_mnist_files_read_directly_equal_torchvisions_loader(data_dir: Path, name: str):
    import torchvision.datasets as tvd

    from prune_lab.data import torchvision_sets

    ours = getattr(torchvision_sets, name)(data_dir=str(data_dir), val_size=0).load()
    theirs = getattr(tvd, name)
    assert getattr(torchvision_sets, name).resources == tuple(theirs.resources)  # same files, same md5s
    train, test = theirs(str(data_dir), train=True), theirs(str(data_dir), train=False)
    spec = getattr(torchvision_sets, name)
    expect = (train.data.unsqueeze(1).float() / 255.0 - spec.mean[0]) / spec.std[0]
    order = torch.randperm(60_000, generator=torch.Generator().manual_seed(0))  # the split's permutation
    assert torch.equal(ours.train.x, expect[order]) and torch.equal(ours.train.y, train.targets[order])
    assert torch.equal(ours.test.y, test.targets) and ours.test.x.shape == (10_000, 1, 28, 28)


def test_an_mnist_run_never_imports_torchvision(data_dir: Path):
    import subprocess
    import sys

    code = ("import sys; from prune_lab.data.torchvision_sets import MNIST; "
            f"s = MNIST(data_dir={str(data_dir)!r}, train_subset=100).load(); "
            "assert len(s.train) == 100; print('torchvision' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"
