"""The study presets (conf/experiment/): every job of every sweep composes at full and smoke size, the
full-size settings are the studies' own, and each preset runs end to end at `size=debug`."""

from __future__ import annotations

import itertools
import math
import os
from pathlib import Path

import numpy as np
import pytest
from conftest import read_json, results_below, run_cli, write_cifar10_files
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf
from PIL import Image

from prune_lab.config import compose_run

CONF = Path(__file__).resolve().parent.parent / "conf"
PRESETS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))


def composed(*overrides: str, hydra: bool = False):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def sweep_jobs(*overrides: str) -> list[list[str]]:
    """Every job of the sweep a preset launches, as override lists (Hydra's basic sweeper: the product)."""
    cfg = composed(*overrides, hydra=True)
    assert cfg.hydra.mode.name == "MULTIRUN", "a study preset launches its whole sweep"
    parser = OverridesParser.create()
    axes = []
    for key, value in cfg.hydra.sweeper.params.items():
        (override,) = parser.parse_overrides([f"{key}={value}"])
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [str(value)]
        axes.append([f"{key}={v}" for v in values])
    return [list(job) for job in itertools.product(*axes)]


def job_spec(preset: str, *job: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}", *job], return_hydra_config=True)
        choices = dict(cfg.hydra.runtime.choices)
        plain = compose("config", overrides=[f"experiment={preset}", *job])
    return compose_run(plain, choices), cfg


@pytest.mark.parametrize("size", ["full", "debug"])
@pytest.mark.parametrize("preset", PRESETS)
def test_every_job_of_every_preset_composes(preset: str, size: str):
    jobs = sweep_jobs(f"experiment={preset}", f"size={size}")
    assert jobs
    hashes = set()
    for job in jobs:
        spec, cfg = job_spec(preset, f"size={size}", *job)  # instantiates dataset, model, init, pruner, train
        assert spec.choices["experiment"] == preset
        assert str(cfg.hydra.sweep.dir) == (f"sweeps/{preset}" if size == "full" else f"sweeps/debug/{preset}")
        hashes.add(spec.config_hash)
    assert len(hashes) == len(jobs), "every job of a sweep is a different experiment"


def full(preset: str, *job: str):
    spec, _ = job_spec(preset, *job)
    return spec


def test_penguins_dynamic_is_the_studys_four_trials():
    jobs = sweep_jobs("experiment=penguins_dynamic")
    assert {j[0] for j in jobs} == {"arm=penguins_unpruned", "arm=penguins_pruned", "arm=penguins_lottery_ticket",
                                    "arm=penguins_dynamic"}
    unpruned, pruned, ticket, dynamic = (full("penguins_dynamic", f"arm=penguins_{a}")
                                         for a in ("unpruned", "pruned", "lottery_ticket", "dynamic"))
    t = unpruned.train
    assert (t.lr, t.epochs) == (1e-4, 4000)
    from prune_lab.data.penguins import Penguins
    assert math.ceil(len(Penguins().load().train) / t.batch_size) == 4  # 4 batches per epoch
    assert type(unpruned.pruner).__name__ == "Dense"
    assert (pruned.pruner.sparsity, pruned.pruner.finetune_epochs) == (0.3, 0)  # pruned, not retrained
    assert (ticket.pruner.sparsity, ticket.pruner.rate, ticket.pruner.rewind, ticket.pruner.reinit) == (
        0.3, 0.3, "init", "original")  # one round to 30%, rewound to init, mask kept
    assert ticket.pruner.plan({"w": 1000}) == [(0.3, {"w": pytest.approx(0.3)})]
    assert list(dynamic.pruner.events) == [0.3333, 0.6667] and dynamic.pruner.target == 0.3111
    assert dynamic.pruner.rate == pytest.approx(0.17, abs=1e-4)  # 17% of what remains at each event
    assert [s.pruner.target for s in (unpruned, pruned, ticket)] == [0.0, 0.3, 0.3]


def test_weight_vs_unit_is_the_studys_grid_without_retraining():
    jobs = sweep_jobs("experiment=weight_vs_unit_mnist")
    ks = sorted({float(j[1].split("=")[1]) for j in jobs})
    assert ks == [0, .25, .5, .6, .7, .75, .8, .85, .9, .925, .95, .975, .99]
    assert {j[0] for j in jobs} == {"arm=wvu_weight", "arm=wvu_unit"} and len(jobs) == 26
    spec = full("weight_vs_unit_mnist", "arm=wvu_unit", "sparsity=0.5")
    assert spec.pruner.finetune_epochs == 0 and spec.config["model"]["hidden"] == [1000, 1000, 500, 200]
    assert spec.config["model"]["bias"] is False and spec.train.epochs == 10
    # the study's src/config.py: Adam 1e-3, batch 512
    assert (spec.choices["pruner"], spec.train.lr, spec.train.batch_size) == ("unit", 0.001, 512)
    assert full("weight_vs_unit_mnist", "arm=wvu_weight").choices["pruner"] == "magnitude"


def test_weight_vs_unit_network_and_pruning_are_the_studys_code():
    """jf20541/Pruning-DeepNeuralNetwork: no dropout, ReLU on the logits, the output layer never pruned."""
    import torch

    from prune_lab.data.splits import DataInfo
    from prune_lab.masks import Mask
    from prune_lab.pruners.selection import select_mask

    info = DataInfo("mnist", (1, 28, 28), 10)
    for arm in ("wvu_weight", "wvu_unit"):
        spec = full("weight_vs_unit_mnist", f"arm={arm}", "sparsity=0.5")
        model = spec.model(info)
        kinds = [type(m).__name__ for m in model.net]
        assert kinds == ["Flatten"] + ["Linear", "ReLU"] * 5, kinds  # ReLU after the last Linear too; no Dropout
        logits = model(torch.randn(8, 1, 28, 28))
        assert logits.shape == (8, 10) and bool((logits >= 0).all())
        names = spec.prunable.names(model)
        assert names == ["net.1.weight", "net.3.weight", "net.5.weight", "net.7.weight"]  # not net.9 (fc5)
        weights = {n: model.get_parameter(n).detach() for n in names}
        keep = select_mask(spec.pruner.score, spec.pruner.select, weights, Mask.ones(model, names), 0.5).tensors
        for n in names:
            if arm == "wvu_weight":  # half of each hidden layer's weights, as sparsify_by_weights
                assert int((~keep[n]).sum()) == weights[n].numel() // 2
            else:  # half of each hidden layer's units (rows), fc4's included, as sparsify_by_unit
                assert int((~keep[n]).all(1).sum()) == weights[n].shape[0] // 2
                assert bool((keep[n].all(1) | ~keep[n].any(1)).all())  # whole rows only


def test_fmnist_dynamic_is_the_notebooks_network_and_four_trials():
    """ajlewis02/MLGroupProject fashion_mnist/*.ipynb: PyTorch's MNIST CNN without dropout, Adadelta 1.0,
    batch 64, one epoch; global thresholds over all four weights."""
    import torch
    from torch import nn

    from prune_lab.data.splits import DataInfo
    from prune_lab.errors import UserError
    from prune_lab.models.convnets import ConvNet

    jobs = sweep_jobs("experiment=fmnist_dynamic")
    assert {j[0] for j in jobs} == {"arm=fmnist_unpruned", "arm=fmnist_pruned", "arm=fmnist_lottery_ticket",
                                    "arm=fmnist_dynamic"} and len(jobs) == 12
    info = DataInfo("fashion_mnist", (1, 28, 28), 10)
    unpruned = full("fmnist_dynamic", "arm=fmnist_unpruned")
    model = unpruned.model(info)
    shapes = {n: tuple(p.shape) for n, p in model.named_parameters()}
    assert shapes["features.0.weight"] == (32, 1, 3, 3) and shapes["features.2.weight"] == (64, 32, 3, 3)
    assert shapes["classifier.1.weight"] == (128, 9216) and shapes["classifier.3.weight"] == (10, 128)
    assert sum(p.numel() for p in model.parameters()) == 1_199_882
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    t = unpruned.train
    assert (t.lr, t.batch_size, t.epochs) == (1.0, 64, 1)
    assert isinstance(t.optimizer(model.parameters(), lr=t.lr), torch.optim.Adadelta)
    pruned = full("fmnist_dynamic", "arm=fmnist_pruned").pruner
    assert (pruned.select.scope, pruned.target, pruned.finetune_epochs) == ("global", 0.3, 0)
    ticket = full("fmnist_dynamic", "arm=fmnist_lottery_ticket").pruner
    sizes = prunable_sizes(full("fmnist_dynamic", "arm=fmnist_lottery_ticket"), info)
    assert sum(sizes.values()) == 1_199_648
    plan = ticket.plan(sizes)  # one round straight to the notebook's 599,504 weights
    assert len(plan) == 1 and round(plan[0][0] * 1_199_648) == pytest.approx(599_504, abs=60)
    assert (ticket.select.scope, ticket.rewind, ticket.reinit) == ("global", "init", "original")
    dynamic = full("fmnist_dynamic", "arm=fmnist_dynamic").pruner
    assert dynamic.select.scope == "global" and dynamic.rate == pytest.approx(0.17, abs=1e-4)
    assert dynamic.event_steps(938) == [334, 667]  # after batch_index 333 and 666 of the notebook's epoch
    with pytest.raises(UserError, match="shrink to nothing"):
        ConvNet(DataInfo("tiny", (1, 4, 4), 10), channels=[32, 64, "M"], fc=[8], padding=0)


def test_lth_lenet_is_frankle_and_carbins_setup():
    spec = full("lth_lenet_mnist")
    t = spec.train
    assert (t.lr, t.batch_size) == (0.0012, 60)
    iterations = t.epochs * math.ceil((60_000 - spec.config["dataset"]["val_size"]) / t.batch_size)
    assert 50_000 <= iterations <= 51_000
    assert spec.choices["init"] == "xavier_normal" and spec.pruner.rewind == "init"
    rates = spec.pruner.rates_for(["net.1.weight", "net.3.weight", "net.5.weight"])
    assert rates == {"net.1.weight": 0.2, "net.3.weight": 0.2, "net.5.weight": 0.1}
    # the paper's controls ride along every round of the ticket (levels with `branch`), not as other runs
    assert spec.pruner.reinit == "original"
    assert spec.pruner.controls == ["randomly_reinitialize", "randomly_prune"]
    assert sorted(sweep_jobs("experiment=lth_lenet_mnist")) == [[f"seed={s}"] for s in range(5)]


def prunable_sizes(spec, info) -> dict[str, int]:
    model = spec.model(info)
    params = dict(model.named_parameters())
    return {n: params[n].numel() for n in spec.prunable.names(model)}


def test_lth_resnet18_prunes_about_80_percent_in_7_rounds_with_a_distillation_variant():
    from prune_lab.data.splits import DataInfo

    spec = full("lth_resnet18_cifar10")
    plan = spec.pruner.plan(prunable_sizes(spec, DataInfo("cifar10", (3, 32, 32), 10)))
    assert len(plan) == 7 and plan[-1][0] == pytest.approx(0.79)
    alphas = {float(j[0].split("=")[1]) for j in sweep_jobs("experiment=lth_resnet18_cifar10")}
    assert 0.0 in alphas and any(a > 0 for a in alphas)


def test_lth_gcn_reaches_98_percent_with_a_distillation_variant(data_dir: Path):
    from prune_lab.data.cora import Cora

    spec = full("lth_gcn_cora")
    info = Cora(data_dir=str(data_dir)).load().info
    plan = spec.pruner.plan(prunable_sizes(spec, info))
    assert plan[-1][0] == pytest.approx(0.98) and len(plan) == 18
    assert spec.train.batch_size >= 140  # full batch: all 140 training nodes in one step
    alphas = {float(j[0].split("=")[1]) for j in sweep_jobs("experiment=lth_gcn_cora")}
    assert 0.0 in alphas and any(a > 0 for a in alphas)


def test_reinit_comparison_and_init_robustness_sweep_what_the_studies_compared():
    reinit = sweep_jobs("experiment=reinit_comparison")
    assert {j[1] for j in reinit} == {"pruner.reinit=keep", "pruner.reinit=redraw_each_round",
                                      "pruner.reinit=original"}
    assert {j[0] for j in reinit} == {"arm=reinit_mlp_mnist", "arm=reinit_lightcnn_faces"}
    spec = full("reinit_comparison", "arm=reinit_lightcnn_faces", "faces_dir=/faces")
    assert (spec.pruner.rate, spec.pruner.select.scope) == (0.2, "layerwise")  # 20% per layer per round
    assert spec.config["dataset"]["grayscale"] is True and spec.config["dataset"]["root"] == "/faces"
    robust = sweep_jobs("experiment=init_robustness")
    assert {j[1].split("=")[1] for j in robust} == {"xavier_normal", "xavier_uniform", "kaiming_normal",
                                                     "kaiming_uniform", "sparsity_aware"}
    assert {j[2] for j in robust} == {"seed=0", "seed=1", "seed=2"} and len(robust) == 2 * 5 * 3
    conv6 = full("init_robustness", "arm=init_conv6_cifar10")
    assert conv6.choices["model"] == "conv6" and conv6.pruner.reinit == "original"


# --- end to end at smoke size ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def smoke_data(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real MNIST, Fashion-MNIST and Cora, CIFAR-10 files in torchvision's format (the real set is not here),
    and faces."""
    root = tmp_path_factory.mktemp("smoke_data")
    for name in ("MNIST", "FashionMNIST", "Cora"):
        (root / name).symlink_to(data_dir / name)
    write_cifar10_files(root, per_batch=30, n_test=30)
    rng = np.random.default_rng(0)
    for person in range(7):
        (root / "faces" / f"person{person}").mkdir(parents=True)
        for i in range(6):
            face = rng.integers(0, 256, (48, 48), dtype=np.uint8)
            Image.fromarray(face, mode="L").save(root / "faces" / f"person{person}" / f"{i}.png")
    return root


# Extra overrides a smoke run needs here: generated CIFAR files cannot pass torchvision's md5 check, and
# init_robustness's two networks run as two sweeps, since only the CIFAR one has that setting.
SMOKE = {
    "lth_resnet18_cifar10": [["dataset.verify_md5=false"]],
    "init_robustness": [["hydra.sweeper.params.arm=init_lenet_mnist"],
                        ["hydra.sweeper.params.arm=init_conv6_cifar10", "++dataset.verify_md5=false"]],
    "reinit_comparison": [["faces_dir={data}/faces"]],
}


# Minutes on a shared 2-core machine: the default run keeps the penguin study; `-m slow` runs them all.
SMOKE_PARAMS = [pytest.param(p, marks=[] if p == "penguins_dynamic" else [pytest.mark.slow]) for p in PRESETS]


@pytest.mark.parametrize("preset", SMOKE_PARAMS)
def test_preset_runs_end_to_end_at_smoke_size(preset: str, smoke_data: Path, tmp_path: Path):
    env = {"PRUNE_LAB_DATA_DIR": str(smoke_data), "PRUNE_LAB_CACHE_DIR": str(tmp_path / "cache")}
    expected = 0
    for extra in SMOKE.get(preset, [[]]):
        extra = [e.format(data=smoke_data) for e in extra]
        sweep_args = [e for e in extra if e.startswith("hydra.")]
        expected += len(sweep_jobs(f"experiment={preset}", "size=debug", *sweep_args))
        proc = run_cli(f"experiment={preset}", "size=debug", f"hydra.sweep.dir={tmp_path / 'sweep'}", *extra,
                       cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-3000:]
    found = [read_json(p) for p in results_below(tmp_path / "sweep")]
    assert len(found) == expected
    for record in found:
        assert record["status"] == "ok" and record["experiment"] == preset
        for level in record["levels"]:
            assert abs(level["sparsity"] - level["target_sparsity"]) < 0.02, level["name"]
            assert np.isfinite(level["test_loss"])
    assert any(r["levels"][-1]["sparsity"] > 0.2 for r in found), "the smoke size still prunes"
    names = [p.parent.name for p in results_below(tmp_path / "sweep")]
    assert not any("experiment=" in n or "size=" in n for n in names), names  # named by what varies
    if preset == "penguins_dynamic":  # the same command again resumes: every job is found complete
        again = run_cli(f"experiment={preset}", "size=debug", f"hydra.sweep.dir={tmp_path / 'sweep'}",
                        cwd=tmp_path, env=env)
        assert again.returncode == 0 and again.stdout.count("is already complete") == expected, again.stdout[-3000:]


def test_every_preset_names_its_sweep_folder_so_reruns_resume():
    for preset in PRESETS:
        cfg = OmegaConf.load(CONF / "experiment" / f"{preset}.yaml")
        assert "hydra" in cfg and cfg.hydra.sweep.dir == f"sweeps/{preset}"
        assert "experiment" in cfg.hydra.job.config.override_dirname.exclude_keys
    assert os.path.isfile(CONF / "size" / "debug.yaml") and os.path.isfile(CONF / "size" / "full.yaml")
