"""Every YAML option of every core config group composes and instantiates (new files are picked up)."""

from __future__ import annotations

import inspect
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from prune_lab.config import GROUPS, compose_run
from prune_lab.pruners.base import Pruner
from prune_lab.training import TrainSettings

CONF = Path(__file__).resolve().parent.parent / "conf"
OPTIONS = [(group, path.stem) for group in GROUPS for path in sorted((CONF / group).glob("*.yaml"))]


def composed(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_every_group_has_options():
    for group in GROUPS:
        assert any(g == group for g, _ in OPTIONS), f"conf/{group}/ has no options"


@pytest.mark.parametrize(("group", "option"), OPTIONS, ids=[f"{g}={o}" for g, o in OPTIONS])
def test_option_composes_and_instantiates(group: str, option: str, tmp_path: Path):
    overrides = [f"{group}={option}"]
    if (group, option) == ("init", "checkpoint"):  # not a draw: it loads a file, here one of the very net below
        saved = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4))
        torch.save(saved.state_dict(), tmp_path / "weights.pt")
        overrides.append(f"init.path={tmp_path / 'weights.pt'}")
    cfg = composed(*overrides)
    spec = compose_run(cfg, {group: option})
    built = getattr(spec, group)
    if group == "model":
        # A partial of an nn.Module class (or a function building one) taking the DataInfo first; its YAML
        # keys must bind.
        assert issubclass(built.func, nn.Module) if inspect.isclass(built.func) else callable(built.func)
        inspect.signature(built.func).bind(None, *built.args, **built.keywords)
    elif group == "pruner":
        assert isinstance(built, Pruner)
    elif group == "train":
        assert isinstance(built, TrainSettings)
        optimizer = built.optimizer([nn.Parameter(torch.zeros(3))], lr=built.lr)
        assert isinstance(optimizer, torch.optim.Optimizer)
    elif (group, option) == ("init", "checkpoint"):
        model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4))
        built(model, torch.Generator().manual_seed(1))
        assert all(torch.equal(a, b) for a, b in zip(saved.parameters(), model.parameters())), "the file's weights"
    elif group == "init":
        model = nn.Sequential(nn.Linear(20, 30), nn.ReLU(), nn.Linear(30, 4))
        before = [p.detach().clone() for p in model.parameters()]
        built(model, torch.Generator().manual_seed(1))
        first = [p.detach().clone() for p in model.parameters()]
        assert not torch.equal(before[0], first[0]), "the scheme must redraw the weights"
        built(model, torch.Generator().manual_seed(1))
        assert all(torch.equal(a, b) for a, b in zip(first, model.parameters())), "same seed, same weights"
    elif group == "dataset":
        assert callable(built.load)


def test_config_hash_ignores_data_location_but_not_the_experiment():
    base = compose_run(composed(), {})
    moved = compose_run(composed("dataset=mnist", "dataset.data_dir=/a"), {})
    moved_again = compose_run(composed("dataset=mnist", "dataset.data_dir=/b"), {})
    other_seed = compose_run(composed("seed=1"), {})
    assert moved.config_hash == moved_again.config_hash
    assert base.config_hash != other_seed.config_hash
    assert base.config_hash != moved.config_hash


def test_recorded_choice_names_nested_options():
    from prune_lab.config import recorded_choice

    choices = {"init": "sparsity_aware", "init@init.base": "xavier_normal", "model": "lenet5"}
    assert recorded_choice("init", choices) == "sparsity_aware(xavier_normal)"
    assert recorded_choice("model", choices) == "lenet5"
