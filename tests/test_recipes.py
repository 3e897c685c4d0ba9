"""A recipe per model: choosing model= gives the training its source paper used (conf/recipe/)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir

from prune_lab.config import compose_run

CONF = Path(__file__).resolve().parent.parent / "conf"
RECIPES = sorted(p.stem for p in (CONF / "recipe").glob("*.yaml"))
DATASET = {"lenet_300_100": "mnist"}  # the rest are CIFAR-10 networks


def composed(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides))


@pytest.mark.parametrize("model", RECIPES)
def test_choosing_a_model_applies_its_recipe(model: str):
    recipe = yaml.safe_load((CONF / "recipe" / f"{model}.yaml").read_text())["train"]
    spec = compose_run(composed(f"model={model}", f"dataset={DATASET.get(model, 'cifar10')}"), {})
    for key, value in recipe.items():
        if key != "schedule":
            assert getattr(spec.train, key) == value, (model, key)
    text = (CONF / "recipe" / f"{model}.yaml").read_text()
    assert "Frankle" in text or "study" in text, "every recipe names its source"


def test_the_lottery_ticket_recipe_for_lenet():
    spec = compose_run(composed("dataset=mnist", "model=lenet_300_100", "pruner=none"), {})
    t = spec.train
    assert (t.optimizer.func.__name__, t.lr, t.batch_size) == ("Adam", 0.0012, 60)
    assert 50_000 <= t.epochs * -(-55_000 // 60) <= 51_000  # the paper's 50K iterations


def test_resnet20_gets_sgd_with_its_drops_and_user_values_still_win():
    spec = compose_run(composed("model=resnet20", "dataset=cifar10"), {})
    t = spec.train
    assert t.optimizer.func.__name__ == "SGD" and t.optimizer.keywords["momentum"] == 0.9
    assert (t.lr, t.weight_decay, t.batch_size, t.epochs) == (0.1, 1e-4, 128, 160)
    assert t.schedule.milestones == [80, 120] and t.schedule.gamma == 0.1
    mine = compose_run(composed("model=resnet20", "dataset=cifar10", "train.lr=0.05", "train.epochs=2"), {})
    assert (mine.train.lr, mine.train.epochs) == (0.05, 2)


def test_penguins_keep_their_own_defaults():
    t = compose_run(composed(), {}).train
    assert (t.optimizer.func.__name__, t.lr, t.batch_size, t.epochs) == ("Adam", 0.01, 64, 100)
