"""The launchers' fast composition of a sweep's job configs equals Hydra's own, key for key."""

from __future__ import annotations

import copy

import pytest
from conftest import ROOT
from hydra import initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.types import RunMode
from omegaconf import OmegaConf, open_dict

import prune_lab.config  # noqa: F401  (registers the resolvers the configs use)
from hydra_plugins.prune_lab_launchers._compose import SweepComposer

pytestmark = pytest.mark.slow  # a dozen Hydra compositions: seconds on a busy machine


def resolved_task(cfg):
    cfg = copy.deepcopy(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return OmegaConf.to_container(cfg, resolve=True)


def test_jobs_differing_in_values_reuse_a_composition_and_get_exactly_hydras_config(tmp_path) -> None:
    jobs = [["seed=0", "sparsity=0.5", "model=penguin_mlp"], ["seed=1", "sparsity=0.9", "model=penguin_mlp"],
            ["seed=0", "sparsity=0.5", "model=penguin_mlp_tanh"], ["seed=2", "sparsity=0.7", "model=penguin_mlp_tanh"],
            ["seed=3", "sparsity=0.6", "model=penguin_mlp"], ["seed=1", "pruner=random", "train.lr=0.1"],
            ["+extra=1", "seed=4"]]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        loader = GlobalHydra.instance().config_loader()
        master = loader.load_configuration("config", overrides=[f"hydra.sweep.dir={tmp_path}"],
                                           run_mode=RunMode.MULTIRUN)
        composer = SweepComposer(loader, master)
        for overrides in jobs:
            ours, hydras = composer.compose(overrides), loader.load_sweep_config(master, overrides)
            assert OmegaConf.to_yaml(ours) == OmegaConf.to_yaml(hydras), overrides
            assert resolved_task(ours) == resolved_task(hydras), overrides
            assert ours.hydra.job.override_dirname == hydras.hydra.job.override_dirname
            ours.seed = 99  # a job's config is its own: changing it changes no later job's
    assert composer.fast == 3  # seed=1 / seed=3 reuse the first penguin_mlp job, seed=2 the first tanh one
