"""Frozen config hashes: representative command lines keep the config hash they had when
tests/data/frozen_configs.json was written (before pruner/select became a config group), so a refactor of
conf/ that moves settings between files, or a setting added at its neutral value (bookkeeping.NEUTRAL), can
never silently turn finished sweeps into new experiments.

The hash is prune_lab.config.compose_run's (the one a run records in results.json), of the config
prune_lab.api.compose builds from the same overrides the command line takes. An experiment preset is a sweep:
each entry is one of its jobs, the preset with one value of each sweep axis (`hydra.sweeper.params`) set.

Regenerate (only when a hash is meant to change, and say why in the commit):
    .venv/bin/python tests/test_frozen_configs.py
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from prune_lab.api import compose
from prune_lab.config import compose_run

DATA = Path(__file__).resolve().parent / "data" / "frozen_configs.json"

PRUNERS = ["none", "magnitude", "random", "unit", "imp", "gradual", "agp", "snip", "grasp", "synflow"]
COMMANDS: list[list[str]] = [
    *([f"pruner={p}"] for p in PRUNERS),
    *([f"pruner={p}", "pruner.select.scope=global"] for p in ("magnitude", "unit", "imp", "agp")),
    *([f"pruner={p}", "pruner.select.scope=layerwise"] for p in ("snip", "synflow")),
    ["pruner=magnitude", "pruner/score=lamp", "pruner.select.scope=global", "sparsity=0.9"],
    ["pruner=imp", "pruner/score=snip"],
    ["pruner=unit", "pruner/score=taylor", "sparsity=0.2"],
    ["pruner=agp", "pruner/score=movement", "sparsity=0.9"],
    ["dataset=mnist", "model=lenet_300_100", "pruner=imp", "sparsity=0.9"],  # conf/recipe/pruning/
    ["dataset=mnist", "model=lenet_300_100", "pruner=magnitude", "sparsity=0.9", "train.epochs=3"],
]
# Each arm of an arm-based preset (arms differ most), the first value of every other axis.
EXPERIMENTS: dict[str, list[str]] = {
    "fmnist_dynamic": ["fmnist_unpruned", "fmnist_pruned", "fmnist_lottery_ticket", "fmnist_dynamic"],
    "init_robustness": ["init_lenet_mnist", "init_conv6_cifar10"],
    "lth_gcn_cora": [],
    "lth_lenet_mnist": [],
    "lth_resnet18_cifar10": [],
    "penguins_dynamic": ["penguins_unpruned", "penguins_pruned", "penguins_lottery_ticket", "penguins_dynamic"],
    "reinit_comparison": ["reinit_lightcnn_faces", "reinit_mlp_mnist"],
    "weight_vs_unit_mnist": ["wvu_weight", "wvu_unit"],
}


def experiment_jobs() -> list[list[str]]:
    jobs = []
    for name, arms in EXPERIMENTS.items():
        for arm in arms or [None]:
            jobs.append([f"experiment={name}", *([f"arm={arm}"] if arm else [])])
    return jobs


def sweep_axes(overrides: list[str]) -> list[str]:
    """The preset's sweep axes other than those already set, each at its first value: one job of the sweep."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from prune_lab.config import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="prune_lab"):
        cfg = hydra_compose("config", overrides=overrides, return_hydra_config=True)
    params = cfg.hydra.sweeper.get("params") or {}
    given = {o.split("=", 1)[0] for o in overrides}
    return [f"{k}={str(v).split(',')[0].strip()}" for k, v in params.items() if k not in given]


def job_overrides(command: list[str]) -> list[str]:
    """The overrides of one job: a preset's command gets its remaining sweep axes at their first values."""
    if not any(o.startswith("experiment=") for o in command):
        return command
    return [*command, *sweep_axes(command)]


def frozen_hash(command: list[str]) -> str:
    return compose_run(*compose(*job_overrides(command))).config_hash


ALL = [*COMMANDS, *experiment_jobs()]


def test_the_frozen_file_covers_every_command() -> None:
    frozen = json.loads(DATA.read_text())
    assert [e["command"] for e in frozen] == [" ".join(c) for c in ALL]


@pytest.mark.parametrize("entry", json.loads(DATA.read_text()) if DATA.exists() else [], ids=lambda e: e["command"])
def test_a_command_keeps_its_config_hash(entry: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRUNE_LAB_CACHE_DIR", "/nonexistent-cache")  # bookkeeping: not hashed either way
    assert frozen_hash(entry["command"].split()) == entry["config_hash"], entry["overrides"]


if __name__ == "__main__":
    os.environ.setdefault("PRUNE_LAB_CACHE_DIR", "/nonexistent-cache")
    out = [{"command": " ".join(c), "overrides": job_overrides(c), "config_hash": frozen_hash(c)} for c in ALL]
    DATA.write_text(json.dumps(out, indent=1) + "\n")
    print(f"{len(out)} hashes -> {DATA}")
