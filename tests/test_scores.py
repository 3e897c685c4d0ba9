"""One scoring contract: every schedule takes every score (each pair of YAML files composes, runs on penguins,
reaches its target and records every level, or is refused before training in one line), stateful scores keep
their state through checkpoints, and the three methods added through the contract (movement, LAMP, Taylor)
compute what their papers define."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import yaml
from conftest import ROOT, job_from_config
from hydra.utils import instantiate
from torch import nn

from prune_lab.data.splits import DataInfo, Splits, TensorSet
from prune_lab.errors import UserError
from prune_lab.masks import Mask
from prune_lab.pruners.at_init import AtInit
from prune_lab.pruners.during_training import PruneWhileTraining
from prune_lab.pruners.iterative import Iterative
from prune_lab.pruners.scores import LAMP, Magnitude, Movement, ScoreInputs, Taylor, lamp_scores
from prune_lab.pruners.selection import Units, Unstructured, select_mask
from prune_lab.training import TrainSettings, train

CONF = ROOT / "conf" / "pruner"
SCHEDULES = sorted(p.stem for p in CONF.glob("*.yaml") if p.stem != "none")
SCORES = sorted(p.stem for p in (CONF / "score").glob("*.yaml"))


def score_class(name: str) -> type:
    target = yaml.safe_load((CONF / "score" / f"{name}.yaml").read_text())["_target_"]
    return type(instantiate({"_target_": target}))


def level_count(pruner: object) -> int:
    """How many levels the schedule must record on the penguin MLP (180 prunable weights in 2 layers)."""
    if isinstance(pruner, Iterative):
        return 1 + len(pruner.plan({"net.1.weight": 144, "net.3.weight": 36}))
    if isinstance(pruner, (AtInit, PruneWhileTraining)):
        return 1
    return 2  # dense, pruned


def pair(schedule: str, score: str):
    """Every pair runs in CI; the default run keeps a cover of them: every score one-shot after training, and
    every schedule with random scores (the whole product is 72 runs)."""
    quick = schedule == "magnitude" or score == "random"
    return pytest.param(schedule, score, id=f"{schedule}-{score}", marks=() if quick else pytest.mark.slow)


@pytest.mark.parametrize(("schedule", "score"), [pair(a, b) for a in SCHEDULES for b in SCORES])
def test_every_schedule_takes_every_score_to_its_target(tmp_path: Path, schedule: str, score: str) -> None:
    target = 0.4 if schedule == "unit" else 0.5  # whole units of the penguin MLP reach 0.4, not 0.5
    overrides = (f"pruner={schedule}", f"pruner/score={score}", f"sparsity={target}", "train.epochs=2",
                 "train.finetune_epochs=1", "pruner.rounds=3" if schedule == "synflow" else "seed=0")
    if score_class(score).needs_training and schedule in ("snip", "grasp", "synflow"):
        with pytest.raises(UserError, match=rf"^pruner/score={score} accumulates its scores while the network "
                                            "trains, but pruning at initialization scores before any training"):
            job_from_config(tmp_path, *overrides)  # refused while the job is built: before any training
        return
    job = job_from_config(tmp_path, *overrides)
    assert type(job.pruner.score) is score_class(score)
    job.pruner.run(job)
    assert len(job.levels) == level_count(job.pruner)
    final = job.levels[-1]
    assert final.target_sparsity == target
    slack = 12 if isinstance(job.pruner.select, Units) else 1  # one unit (a row of 12) or one weight per layer
    assert abs(final.prunable_total - final.prunable_nonzero - target * 180) <= 2 * slack
    for level in job.levels:
        pruned = level.prunable_total - level.prunable_nonzero
        assert abs(pruned - level.target_sparsity * 180) <= 2 * slack, level.name


def test_a_score_that_needs_training_is_refused_with_pruning_at_step_zero(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"^pruner/score=movement accumulates its scores .* \(pruning at step 0\)"):
        job_from_config(tmp_path, "pruner=agp", "pruner/score=movement", "pruner.start=0",
                        "pruner.initial_sparsity=0.2")


def test_synflow_scores_are_refused_on_index_samples_whatever_the_schedule(tmp_path: Path) -> None:
    job = job_from_config(tmp_path, "pruner=imp", "pruner/score=synflow")
    as_indices = TensorSet(torch.arange(len(job.data.train)), job.data.train.y)  # like a graph's node ids
    data = Splits(job.data.info, as_indices, job.data.val, job.data.test)
    with pytest.raises(UserError, match=r"^pruner/score=synflow feeds an all-ones input tensor"):
        job.pruner.check({n: tuple(w.shape) for n, w in job.weights().items()}, data)


# --- state that survives preemption -----------------------------------------------------------------------
def penguin_like(n: int = 64) -> Splits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] > 0).long()
    part = TensorSet(x, y)
    return Splits(DataInfo("toy", (6,), 2), part, part, part)


def toy_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 2))


def test_movement_scores_survive_a_checkpoint_and_resume_to_the_uninterrupted_scores() -> None:
    data, names = penguin_like(), ["0.weight", "2.weight"]
    settings = TrainSettings(optimizer=torch.optim.Adam, lr=0.01, batch_size=8, checkpoint_every_s=0)
    whole_net = toy_net()
    whole = Movement().observer(whole_net, names)
    saved = []
    train(whole_net, Mask.ones(whole_net, names), data, settings, 3, seed=1, phase="p", on_step=whole,
          save=lambda state: saved.append(copy.deepcopy(state)))
    assert saved[0]["hook"]["scores"].keys() == set(names), "the observer's scores are in the checkpoint"
    resumed_net = toy_net()
    resumed = Movement().observer(resumed_net, names)
    train(resumed_net, Mask.ones(resumed_net, names), data, settings, 3, seed=1, phase="p", on_step=resumed,
          resume=saved[0])
    for n in names:
        assert torch.equal(resumed.scores[n], whole.scores[n]), n
        assert whole.scores[n].abs().sum() > 0


def test_movement_accumulates_minus_w_times_the_gradient_with_the_weights_before_the_step() -> None:
    data, names = penguin_like(8), ["0.weight", "2.weight"]
    net = toy_net()
    reference = copy.deepcopy(net)
    settings = TrainSettings(optimizer=torch.optim.SGD, lr=0.1, batch_size=8)  # one step per epoch
    observer = Movement().observer(net, names)
    train(net, Mask.ones(net, names), data, settings, 2, seed=0, phase="p", on_step=observer)
    expected = {n: torch.zeros_like(p) for n, p in reference.named_parameters() if n in names}
    opt = torch.optim.SGD(reference.parameters(), lr=0.1)
    for _ in range(2):  # one full batch per step: the data order does not matter
        opt.zero_grad()
        F.cross_entropy(reference(data.train.x), data.train.y).backward()
        for n, p in reference.named_parameters():
            if n in names:
                expected[n] -= p.grad * p.detach()
        opt.step()
    for n in names:
        assert torch.allclose(observer.scores[n], expected[n], atol=1e-6), n


def test_a_finished_phase_replayed_from_the_store_hands_back_the_movement_scores(tmp_path: Path) -> None:
    first = job_from_config(tmp_path, "pruner=magnitude", "pruner/score=movement", "train.epochs=2",
                            "keep_checkpoints=true")
    observer = first.pruner.score.observer(first.model, first.prunable)
    first.train("dense", 2, on_step=observer)
    again = job_from_config(tmp_path, "pruner=magnitude", "pruner/score=movement", "train.epochs=2")
    replay = again.pruner.score.observer(again.model, again.prunable)
    again.train("dense", 2, on_step=replay)
    assert again.resumed == [{"phase": "dense", "restored": True}]
    for n in first.prunable:
        assert torch.equal(replay.scores[n], observer.scores[n]) and observer.scores[n].abs().sum() > 0


# --- LAMP -------------------------------------------------------------------------------------------------
def test_lamp_scores_by_hand() -> None:
    w = torch.tensor([[3.0, -1.0], [2.0, 0.5]])  # squares 9, 1, 4, 0.25; ascending 0.25, 1, 4, 9 (sum 14.25)
    expected = torch.tensor([[9 / 9, 1 / 14.0], [4 / 13.0, 0.25 / 14.25]])
    assert torch.allclose(lamp_scores(w), expected)
    assert lamp_scores(w).max() == 1.0  # each layer's largest weight scores 1: no layer is ever emptied


def test_lamp_global_masks_adapt_to_each_layer_where_global_magnitude_follows_the_weight_scale() -> None:
    # LeNet-300-100's layers at Kaiming scale, the output layer 100x smaller (as a layer trained to small
    # weights can be). Global magnitude compares raw |w| across layers, so it empties that layer (collapse);
    # LAMP normalises within each layer (Lee et al. 2021): its masks do not depend on a layer's scale, every
    # layer keeps its largest weight, and the sparsity goes where the weights are many (the first layer).
    torch.manual_seed(0)
    w = {"fc1": torch.randn(300, 784) * (2 / 784) ** 0.5, "fc2": torch.randn(100, 300) * (2 / 300) ** 0.5,
         "fc3": torch.randn(10, 100) * (2 / 100) ** 0.5}
    small = {**w, "fc3": w["fc3"] * 0.01}
    ones = Mask({n: torch.ones_like(t, dtype=torch.bool) for n, t in w.items()})
    total = sum(t.numel() for t in w.values())

    def layer_sparsity(score, weights):
        mask = select_mask(score, Unstructured("global"), weights, ones, 0.9)
        assert abs(mask.sparsity() * total - 0.9 * total) <= 1
        return mask, {n: s.sparsity for n, s in mask.layers().items()}

    magnitude_mask, magnitude = layer_sparsity(Magnitude(), small)
    assert magnitude["fc3"] == 1.0  # layer collapse: the network is cut
    lamp_mask, lamp = layer_sparsity(LAMP(), small)
    assert lamp["fc3"] < lamp["fc2"] < lamp["fc1"] and lamp["fc3"] < 0.9
    same_mask, _ = layer_sparsity(LAMP(), w)  # the scale of a layer does not move LAMP's masks
    assert all(torch.equal(lamp_mask.tensors[n], same_mask.tensors[n]) for n in w)
    other, _ = layer_sparsity(Magnitude(), w)
    assert not torch.equal(other.tensors["fc3"], magnitude_mask.tensors["fc3"])  # but moves magnitude's
    # Layerwise, LAMP orders each layer as magnitude does: the same masks.
    for sparsity in (0.3, 0.8):
        a = select_mask(LAMP(), Unstructured("layerwise"), w, ones, sparsity)
        b = select_mask(Magnitude(), Unstructured("layerwise"), w, ones, sparsity)
        assert all(torch.equal(a.tensors[n], b.tensors[n]) for n in w)


# --- Taylor -----------------------------------------------------------------------------------------------
def test_taylor_unit_scores_equal_a_hand_computation() -> None:
    # One Linear layer, logits = x W^T: dL/dW = (softmax(x W^T) - onehot(y))^T x / N for mean cross-entropy.
    w = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.25, -0.5], [-1.0, 1.0, 0.0]])
    x = torch.tensor([[1.0, 2.0, -1.0], [0.5, -0.5, 1.0]])
    y = torch.tensor([0, 2])
    net = nn.Linear(3, 3, bias=False)
    with torch.no_grad():
        net.weight.copy_(w)
    data = Splits(DataInfo("toy", (3,), 3), TensorSet(x, y), TensorSet(x, y), TensorSet(x, y))
    mask = Mask({"weight": torch.ones(3, 3, dtype=torch.bool)})
    inputs = ScoreInputs(net, mask, data, torch.Generator().manual_seed(0))
    p = torch.softmax(x @ w.T, dim=1)
    grad = (p - F.one_hot(y, 3).float()).T @ x / 2  # [out, in], by hand
    by_hand = (grad * w).sum(1) ** 2  # Molchanov et al. 2019: (sum over the unit's weights of g * w)^2
    assert torch.allclose(Taylor(batches=1, batch_size=2).units(inputs)["weight"], by_hand, atol=1e-6)
    assert torch.allclose(Taylor(batches=1, batch_size=2).weights(inputs)["weight"], (grad * w) ** 2, atol=1e-6)
    # Two batches of one example: the mean of the per-batch squares, not the square of the mean.
    per = []
    for i in range(2):
        pi = torch.softmax(x[i : i + 1] @ w.T, dim=1)
        gi = (pi - F.one_hot(y[i : i + 1], 3).float()).T @ x[i : i + 1]
        per.append((gi * w).sum(1) ** 2)
    got = Taylor(batches=2, batch_size=1).units(inputs)["weight"]
    assert torch.allclose(got, (per[0] + per[1]) / 2, atol=1e-6)
    assert not torch.allclose(got, by_hand)


# --- movement pruning on real MNIST -----------------------------------------------------------------------
@pytest.mark.slow
def test_movement_pruning_of_lenet_on_mnist_reaches_90_percent_and_records_its_level(tmp_path: Path,
                                                                                     data_dir: Path) -> None:
    # The command docs/results/movement_lenet_mnist.json was made with, two epochs instead of three.
    job = job_from_config(tmp_path, "dataset=mnist", f"dataset.data_dir={data_dir}", "model=lenet_300_100",
                          "pruner=agp", "pruner/score=movement", "sparsity=0.9", "train.epochs=2", "threads=1")
    job.pruner.run(job)
    (level,) = job.levels
    assert level.target_sparsity == 0.9 and abs(level.sparsity - 0.9) < 1e-4
    assert all(abs(s["sparsity"] - 0.9) < 1e-3 for s in level.layers.values())  # layerwise selection
    assert level.test_acc > 0.9  # a working network at 10% of its weights after two epochs
    assert level.extra["prune_events"] > 1 and level.extra["epochs_trained"] == 2
