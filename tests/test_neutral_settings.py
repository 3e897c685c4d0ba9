"""A setting added later, at its neutral value (bookkeeping.NEUTRAL), leaves a finished run's identity alone:
the config hash, the dense-cache key and the analysis' condition are those of the config without the key."""

from __future__ import annotations

import copy

import pytest

from prune_lab import bookkeeping
from prune_lab.cache import dense_basis
from prune_lab.config import config_hash

OLD = {"seed": 0, "sparsity": 0.5, "device": "cpu",
       "train": {"lr": 0.01, "epochs": 3, "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True}},
       "model": {"_target_": "prune_lab.models.mlp.MLP", "_partial_": True, "hidden": [12]},
       "init": {"_target_": "prune_lab.init.PyTorchDefault"},
       "dataset": {"_target_": "prune_lab.data.penguins.Penguins"},
       "pruner": {"_target_": "prune_lab.pruners.schedules.OneShot",
                  "select": {"_target_": "prune_lab.pruners.selection.Unstructured", "scope": "layerwise"}}}


@pytest.fixture
def neutral(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bookkeeping, "NEUTRAL", {"pruner.select.distribution": "uniform", "train.extra": []})


def with_keys(**values: object) -> dict:
    config = copy.deepcopy(OLD)
    if "distribution" in values:
        config["pruner"]["select"]["distribution"] = values["distribution"]
    if "extra" in values:
        config["train"]["extra"] = values["extra"]
    return config


def test_a_neutral_value_keeps_the_hash_and_the_condition(neutral: None) -> None:
    new = with_keys(distribution="uniform", extra=[])
    assert config_hash(new) == config_hash(OLD)
    assert bookkeeping.condition_config(new) == bookkeeping.condition_config(OLD)
    assert dense_basis(new, "cpu", 1) == dense_basis(OLD, "cpu", 1)


@pytest.mark.parametrize("values", [{"distribution": "erk"}, {"extra": ["x"]}, {"distribution": None}])
def test_any_other_value_is_a_new_experiment(neutral: None, values: dict) -> None:
    new = with_keys(**values)
    assert config_hash(new) != config_hash(OLD)
    assert bookkeeping.condition_config(new) != bookkeeping.condition_config(OLD)


def test_without_the_list_every_key_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bookkeeping, "NEUTRAL", {})
    assert config_hash(with_keys(distribution="uniform")) != config_hash(OLD)


def test_a_key_new_to_some_options_is_neutral_only_in_those(monkeypatch: pytest.MonkeyPatch) -> None:
    # pruner.controls: new to the at-init pruners, part of imp's config all along (bookkeeping.NEUTRAL_WHERE)
    monkeypatch.setattr(bookkeeping, "NEUTRAL", {"pruner.extra": []})
    monkeypatch.setattr(bookkeeping, "NEUTRAL_WHERE", {"pruner.extra": {"pruner._target_": OLD["pruner"]["_target_"]}})
    new = copy.deepcopy(OLD)
    new["pruner"]["extra"] = []
    assert config_hash(new) == config_hash(OLD)
    other, other_with = copy.deepcopy(OLD), copy.deepcopy(new)
    other["pruner"]["_target_"] = other_with["pruner"]["_target_"] = "prune_lab.pruners.iterative.Iterative"
    assert config_hash(other_with) != config_hash(other)
    assert bookkeeping.condition_config(other_with) != bookkeeping.condition_config(other)


def test_layerwise_selection_s_uniform_distribution_is_neutral() -> None:
    """pruner.select.distribution (er, erk) came after runs were recorded: uniform is what they all did."""
    assert config_hash(with_keys(distribution="uniform")) == config_hash(OLD)
    assert config_hash(with_keys(distribution="erk")) != config_hash(OLD)
