"""Trustworthy answers: every number a run reports is what it says it is.

Each test here pins one trap that once gave a silently wrong answer (docs/outputs.md, "What prune_lab guarantees"):
the recorded target, stale dense-cache entries for user code, machine settings in a run's identity, pruners
that missed their target, signed scores that overshoot, fine-tuning budgets that dwarf the dense one, types
accepted by accident, the Lottery Ticket controls, rounds that prune nothing, and the run folder's files.
"""

from __future__ import annotations

import copy
import functools
import math
import os
import stat
from pathlib import Path

import pytest
import torch
from conftest import TINY, job_from_config, read_json, results_below, run_cli
from hydra import compose, initialize_config_dir
from torch import nn

from prune_lab import bookkeeping
from prune_lab.config import compose_run, config_hash
from prune_lab.data.splits import DataInfo, Splits, TensorSet
from prune_lab.errors import UserError
from prune_lab.job import copy_state
from prune_lab.masks import Mask
from prune_lab.pruners.iterative import Iterative, layer_sparsity
from prune_lab.pruners.selection import prune_lowest
from prune_lab.training import TrainSettings, train

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
PENGUIN_SIZES = {"net.1.weight": 144, "net.3.weight": 36}  # the penguin MLP's prunable weights: 12x12, 3x12


def composed(*overrides: str, hydra: bool = False):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def spec_of(*overrides: str):
    return compose_run(composed(*overrides), {})


job_of = job_from_config  # the job `python -m prune_lab OVERRIDES` would drive (prune_lab.api.prepare)


# --- 1. one target ---------------------------------------------------------------------------------------
def test_a_study_arm_records_the_target_it_prunes_to():
    """init_robustness's arms once set pruner.sparsity=0.95 while results recorded sparsity=0.3."""
    for arm in ("init_lenet_mnist", "init_conv6_cifar10"):
        for size in ("full", "debug"):
            spec = spec_of("experiment=init_robustness", f"size={size}", f"arm={arm}")
            assert spec.pruner.target == spec.config["sparsity"] == spec.config["pruner"]["sparsity"]
    assert spec_of("experiment=init_robustness", "size=debug").pruner.target == 0.36


def test_a_pruner_target_that_disagrees_with_sparsity_is_refused():
    with pytest.raises(UserError, match="disagrees with sparsity=0.3"):
        spec_of("pruner=imp", "pruner.sparsity=0.9")


@pytest.mark.parametrize(("pruner", "target"), [("none", 0.0), ("gradual", 0.6), ("agp", 0.6), ("imp", 0.6)])
def test_results_record_the_pruners_own_target(tmp_path: Path, pruner: str, target: float):
    proc = run_cli(f"pruner={pruner}", "sparsity=0.6", "train.epochs=6", "cache_dir=null", "hydra.run.dir=run",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    record = read_json(tmp_path / "run" / "results.json")
    assert record["target_sparsity"] == target == record["levels"][-1]["target_sparsity"]
    assert record["levels"][-1]["sparsity"] == pytest.approx(target, abs=0.01)


# --- 2. the dense cache and user code --------------------------------------------------------------------
USER_MODEL = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, info):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(12, 16), nn.Linear(16, info.num_classes)

    def forward(self, x):
        return self.fc2(torch.{act}(self.fc1(x)))
"""


@pytest.mark.slow  # an integration minute-saver: runs in CI and `make check`
def test_editing_a_user_models_code_invalidates_the_dense_cache(tmp_path: Path):
    """A model outside prune_lab (found through PYTHONPATH / --config-dir) was once reused stale from the cache."""
    code, conf = tmp_path / "code", tmp_path / "conf" / "model"
    code.mkdir()
    conf.mkdir(parents=True)
    (conf / "mine.yaml").write_text("_target_: usernet.Net\n_partial_: true\n")
    env = {"PYTHONPATH": f"{code}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    args = ["--config-dir", str(tmp_path / "conf"), "model=mine", "pruner=magnitude", "sparsity=0.5", *TINY,
            f"cache_dir={tmp_path}/cache"]
    outcomes = []
    for i, act in enumerate(("relu", "tanh", "tanh")):
        (code / "usernet.py").write_text(USER_MODEL.format(act=act))
        proc = run_cli(*args, f"hydra.run.dir=run{i}", cwd=tmp_path, env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        record = read_json(tmp_path / f"run{i}" / "results.json")
        outcomes.append(([c["hit"] for c in record["dense_cache"]], record["levels"][0]["test_loss"]))
    assert outcomes[0][0] == [False] and outcomes[1][0] == [False], "edited code must not hit the old entry"
    assert outcomes[2][0] == [True] and outcomes[2][1] == outcomes[1][1], "unchanged code shares as before"
    assert outcomes[0][1] != outcomes[1][1]


def test_the_cache_key_covers_prune_labs_own_source(monkeypatch: pytest.MonkeyPatch):
    from prune_lab import cache

    config = spec_of().config
    before = cache.dense_basis(config, "cpu", 1)
    monkeypatch.setattr(cache, "source_digest", lambda: "edited")
    assert cache.dense_basis(config, "cpu", 1) != before


# --- 4. bookkeeping: one list, four users ----------------------------------------------------------------
def test_the_one_bookkeeping_list_drives_the_hash_the_cache_key_the_folder_names_and_the_analysis(
        monkeypatch, tmp_path: Path):
    from multirun_analysis.loading import load_runs
    from prune_lab import cache

    a, b = spec_of("train.lr=0.01").config, spec_of("train.lr=0.002").config
    proc = run_cli("-m", "train.lr=0.01,0.002", *TINY, "cache_dir=null", f"hydra.sweep.dir={tmp_path}/sweep",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]

    def conditions() -> int:
        return load_runs(tmp_path / "sweep")["condition_key"].nunique()

    assert config_hash(a) != config_hash(b)
    assert cache.dense_basis(a, "cpu", 1) != cache.dense_basis(b, "cpu", 1)
    assert "train.lr" not in composed(hydra=True).hydra.job.config.override_dirname.exclude_keys
    assert conditions() == 2
    monkeypatch.setattr(bookkeeping, "BOOKKEEPING", (*bookkeeping.BOOKKEEPING, "train.lr"))
    assert config_hash(a) == config_hash(b)
    assert cache.dense_basis(a, "cpu", 1) == cache.dense_basis(b, "cpu", 1)
    assert conditions() == 1
    excludes = composed(hydra=True).hydra.job.config.override_dirname.exclude_keys
    assert "train.lr" in excludes
    assert {"experiment", "size", "train.lr"} <= set(
        composed("experiment=penguins_dynamic", hydra=True).hydra.job.config.override_dirname.exclude_keys)


def test_a_sweep_rerun_with_other_machine_settings_trains_nothing(tmp_path: Path):
    sweep = ["-m", "seed=0,1", "pruner=magnitude", *TINY, f"hydra.sweep.dir={tmp_path}/sweep"]
    first = run_cli(*sweep, f"cache_dir={tmp_path}/cache", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    before = {p: p.read_bytes() for p in results_below(tmp_path / "sweep")}
    assert len(before) == 2
    again = run_cli(*sweep, "threads=1", "device=cpu", "cache_dir=null", "keep_checkpoints=true",
                    "train.checkpoint_every_s=0", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert again.stdout.count("is already complete") == 2, again.stdout
    after = {p: p.read_bytes() for p in results_below(tmp_path / "sweep")}
    assert after == before, "no run trained again, no new folder appeared"


@pytest.mark.slow
def test_a_sweep_rerun_with_another_data_dir_trains_nothing(tmp_path: Path, data_dir: Path):
    import shutil

    other = tmp_path / "elsewhere"
    shutil.copytree(data_dir / "MNIST", other / "MNIST")
    sweep = ["-m", "seed=0", "dataset=mnist", "dataset.train_subset=256", "train.epochs=1",
             "train.finetune_epochs=1", "cache_dir=null", f"hydra.sweep.dir={tmp_path}/sweep"]
    first = run_cli(*sweep, f"dataset.data_dir={data_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    again = run_cli(*sweep, f"dataset.data_dir={other}", cwd=tmp_path)
    assert again.returncode == 0 and "is already complete" in again.stdout, again.stderr[-2000:]
    assert len(results_below(tmp_path / "sweep")) == 1


# --- 5. every pruner reaches its target or refuses before training -----------------------------------
def test_unit_pruning_reaches_the_target_of_all_weights_or_refuses(tmp_path: Path):
    """pruner=unit sparsity=0.8 once measured 0.667: the protected output layer did not count."""
    job = job_of(tmp_path, "pruner=unit", "sparsity=0.6", "train.epochs=2")
    job.pruner.run(job)
    assert abs(job.levels[-1].sparsity - 0.6) <= 12 / 180  # within one hidden unit (12 weights) of 180
    with pytest.raises(UserError, match=r"at most 0\.7333"):
        job_of(tmp_path / "b", "pruner=unit", "sparsity=0.8")


def test_a_level_that_misses_its_target_is_refused(tmp_path: Path):
    job = job_of(tmp_path, "pruner=none", "train.epochs=1")
    job.train("dense", 1)
    with pytest.raises(RuntimeError, match="missed its target"):
        job.evaluate("pruned", 0.5)  # nothing was pruned


# --- 6. ranking sees live weights only ---------------------------------------------------------------
@pytest.mark.parametrize("scope", ["layerwise", "global"])
def test_scores_below_minus_one_never_overshoot(scope: str):
    g = torch.Generator().manual_seed(0)
    scores = {"a": -5 - torch.rand(10, 10, generator=g), "b": -3 - torch.rand(4, 10, generator=g)}
    mask = Mask({n: torch.rand(s.shape, generator=g) > 0.3 for n, s in scores.items()})
    out = prune_lowest(scores, mask, 0.5, scope)
    for n, keep in out.tensors.items():
        assert torch.equal(keep & mask.tensors[n], keep), "a pruned weight came back"
    if scope == "layerwise":
        assert all(int((~k).sum()) == round(0.5 * k.numel()) for k in out.tensors.values())
    else:
        assert sum(int((~k).sum()) for k in out.tensors.values()) == round(0.5 * 140)


# --- 7. budgets ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("epochs", "finetune"), [(5, 3), (40, 20), (1, 1)])
def test_fine_tuning_follows_the_dense_budget(epochs: int, finetune: int):
    spec = spec_of(f"train.epochs={epochs}")
    assert spec.train.finetune_epochs == finetune == spec.pruner.finetune_epochs


def test_each_level_records_its_total_training_budget(tmp_path: Path):
    job = job_of(tmp_path, "pruner=magnitude", "train.epochs=4")
    job.pruner.run(job)
    assert [lv.extra["epochs_trained"] for lv in job.levels] == [4, 6]


# --- 8. types -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(("override", "key"), [
    ("train.batch_size=true", "train.batch_size"), ("train.lr=true", "train.lr"), ("train.epochs=2.5", "train.epochs"),
    ("train.eval_every=false", "train.eval_every"), ("train.amp=1", "train.amp"), ("sparsity=true", "sparsity"),
    ("sparsity=1.0", "sparsity"), ("train.lr=abc", "train.lr"),
])
def test_wrong_types_are_refused_with_the_key(override: str, key: str):
    with pytest.raises(UserError, match=key.replace(".", r"\.")):
        spec_of(override)


# --- 9. the Lottery Ticket controls -------------------------------------------------------------------
def test_controls_are_the_papers_and_leave_the_ticket_untouched(tmp_path: Path):
    controls = "pruner.controls=[randomly_reinitialize,randomly_prune]"
    job = job_of(tmp_path / "with", "pruner=imp", "sparsity=0.36", "train.epochs=3", controls)
    job.pruner.run(job)
    plain = job_of(tmp_path / "without", "pruner=imp", "sparsity=0.36", "train.epochs=3")
    plain.pruner.run(plain)
    tickets = [lv for lv in job.levels if "branch" not in lv.extra]
    assert [(lv.name, lv.test_acc) for lv in tickets] == [(lv.name, lv.test_acc) for lv in plain.levels]
    for r in (1, 2):
        ticket_start, ticket_mask = job.starts[f"round-{r}"]
        # randomly_reinitialize: the ticket's very mask, on a fresh draw of the init scheme
        start, mask = job.starts[f"randomly_reinitialize-{r}"]
        assert all(torch.equal(mask.tensors[n], k) for n, k in ticket_mask.tensors.items())
        fresh = job_of(tmp_path / f"ref{r}", "pruner=imp", "sparsity=0.36").model
        job.init(fresh, job.generator("reinit", "control", r))
        for n, value in copy_state(fresh).items():
            expected = value * mask.tensors[n] if n in mask.tensors else value
            assert torch.equal(start[n], expected), n
        assert not torch.equal(start["net.1.weight"], ticket_start["net.1.weight"])
        # randomly_prune: the ticket's per-layer counts at random places, from the ticket's rewind point
        start, mask = job.starts[f"randomly_prune-{r}"]
        for n, keep in ticket_mask.tensors.items():
            assert int(mask.tensors[n].sum()) == int(keep.sum())
        assert not torch.equal(mask.tensors["net.1.weight"], ticket_mask.tensors["net.1.weight"])
        for n, value in job.initial_state.items():
            expected = value * mask.tensors[n] if n in mask.tensors else value
            assert torch.equal(start[n], expected), n
    branches = [(lv.name, lv.extra["branch"], lv.target_sparsity) for lv in job.levels if "branch" in lv.extra]
    assert [b[1] for b in branches] == ["randomly_reinitialize", "randomly_prune"] * 2
    assert [b[2] for b in branches] == [tickets[1].target_sparsity] * 2 + [tickets[2].target_sparsity] * 2


def test_a_random_reinit_redraws_biases_too(tmp_path: Path):
    job = job_of(tmp_path, "init=xavier_normal", "init.zero_bias=false", "train.epochs=2")
    job.train("dense", 2)
    trained = copy_state(job.model)
    job.reinitialize("x")
    again = copy_state(job.model)
    fresh = job_of(tmp_path / "ref", "init=xavier_normal", "init.zero_bias=false").model
    job.init(fresh, job.generator("reinit", "x"))
    for name in ("net.1.bias", "net.3.bias"):
        assert not torch.equal(again[name], trained[name]), f"{name}: the trained bias carried over"
        assert torch.equal(again[name], fresh.state_dict()[name]), f"{name}: not a draw of the scheme"


# --- 10. no round prunes (almost) nothing ------------------------------------------------------------
def pruned_per_round(pruner: Iterative, sizes: dict[str, int]) -> list[int]:
    counts = [sum(round(per[n] * sizes[n]) for n in sizes) for _, per in pruner.plan(sizes)]
    return [b - a for a, b in zip([0, *counts[:-1]], counts)]


@pytest.mark.parametrize("sparsity", [0.671333, 1 - 0.8**5, 0.5, 0.36, 0.9, 0.95])
def test_no_round_prunes_fewer_weights_than_there_are_layers(sparsity: float):
    pruner = Iterative(sparsity=sparsity, epochs=1)
    assert min(pruned_per_round(pruner, PENGUIN_SIZES)) >= len(PENGUIN_SIZES)
    assert pruner.plan(PENGUIN_SIZES)[-1][0] == sparsity


def test_a_sliver_of_a_last_round_joins_the_round_before():
    """init_robustness at debug size once ran a third round that pruned 0.1% of LeNet's weights."""
    lenet = {"net.1.weight": 784 * 300, "net.3.weight": 300 * 100, "net.5.weight": 100 * 10}
    pruner = Iterative(sparsity=0.36, epochs=1, layer_rates={"net.5.weight": 0.1})
    plan = pruner.plan(lenet)
    assert len(plan) == 2 and plan[-1][0] == 0.36
    t = math.log(0.8 ** 2) / math.log(0.8)  # two full rounds of the 20% layers
    assert plan[0][1]["net.1.weight"] == pytest.approx(layer_sparsity(0.2, t / 2))


# --- also part of trust ------------------------------------------------------------------------------
def test_another_config_in_the_folder_names_the_keys_and_leaves_no_error_json(tmp_path: Path):
    first = run_cli(*TINY, "cache_dir=null", "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-2000:]
    results = (tmp_path / "run" / "results.json").read_bytes()
    again = run_cli(*TINY, "cache_dir=null", "train.lr=0.002", "hydra.run.dir=run", cwd=tmp_path)
    assert again.returncode == 2
    assert "train.lr: 0.01 -> 0.002" in again.stderr, again.stderr
    assert not (tmp_path / "run" / "error.json").exists()
    assert (tmp_path / "run" / "results.json").read_bytes() == results


def test_a_run_folders_files_are_readable_by_the_group(tmp_path: Path):
    proc = run_cli(*TINY, "cache_dir=null", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    umask = os.umask(0)
    os.umask(umask)
    for name in ("results.json", "model.pt", "masks.json", "metrics.jsonl"):
        mode = stat.S_IMODE((tmp_path / "run" / name).stat().st_mode)
        assert mode == 0o666 & ~umask, (name, oct(mode))


def test_a_crash_leaves_an_error_json_and_no_results(tmp_path: Path):
    # LBFGS needs a closure: its first step raises inside training, a real crash (not a config error)
    proc = run_cli(*TINY, "cache_dir=null", "train.optimizer._target_=torch.optim.LBFGS", "~train.optimizer.fused",
                   "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode != 0
    error = read_json(tmp_path / "run" / "error.json")
    assert error["kind"] == "crash" and "closure" in error["traceback"]
    assert not (tmp_path / "run" / "results.json").exists()


# --- the surviving mutations ------------------------------------------------------------------------------
def test_the_score_before_fine_tuning_is_the_pruned_networks(tmp_path: Path):
    """A set_mask that forgot to apply the mask once reported the dense accuracy as 'before fine-tuning'."""
    job = job_of(tmp_path, "pruner=magnitude", "sparsity=0.95", "train.epochs=30", "train.finetune_epochs=0")
    job.pruner.run(job)
    dense, pruned = job.levels
    assert pruned.extra["before_finetune"]["test_acc"] == pruned.test_acc  # no fine-tuning: the same network
    assert pruned.sparsity == pytest.approx(0.95, abs=0.01)


class DropoutNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 32), nn.ReLU(), nn.Dropout(0.5), nn.Linear(32, 3))

    def forward(self, x):
        return self.net(x)


def toy_data() -> Splits:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 6, generator=g), torch.randint(0, 3, (96,), generator=g)
    return Splits(DataInfo("toy", (6,), 3), TensorSet(x, y), TensorSet(x[:16], y[:16]), TensorSet(x[:16], y[:16]))


def test_a_resumed_run_with_dropout_draws_what_an_uninterrupted_one_does():
    """Dropout and shuffling draw from per-epoch seeds: a resumed phase repeats the uninterrupted one exactly,
    and every epoch sees its own order."""
    data = toy_data()
    settings = TrainSettings(optimizer=functools.partial(torch.optim.Adam), lr=0.01, batch_size=16,
                             checkpoint_every_s=0)
    seen: list[torch.Tensor] = []

    def loss(logits, y, x):
        seen.append(y.clone())
        return nn.functional.cross_entropy(logits, y)

    def fresh() -> tuple[nn.Module, Mask]:
        torch.manual_seed(0)
        model = DropoutNet()
        return model, Mask.ones(model, ["net.0.weight", "net.3.weight"])

    model, mask = fresh()
    checkpoints = []
    # deep copies: a phase store writes each checkpoint to disk at once, the live tensors move on
    train(model, mask, data, settings, 4, seed=3, phase="p", loss_fn=loss,
          save=lambda state: checkpoints.append(copy.deepcopy(state)))
    uninterrupted = copy_state(model)
    epoch1, epoch2 = torch.cat(seen[:6]), torch.cat(seen[6:12])
    assert not torch.equal(epoch1, epoch2), "each epoch shuffles anew"
    at_two = next(c for c in checkpoints if c["epoch"] == 2)
    model, mask = fresh()
    torch.manual_seed(12345)  # a new process: the global stream is anywhere
    train(model, mask, data, settings, 4, seed=3, phase="p", resume=at_two)
    assert all(torch.equal(v, uninterrupted[k]) for k, v in copy_state(model).items())


def test_pruner_yaml_files_all_declare_their_target():
    """Every pruner option composes and states the one target it records."""
    for path in sorted((CONF / "pruner").glob("*.yaml")):
        spec = spec_of(f"pruner={path.stem}", "sparsity=0.4")
        assert spec.pruner.target == (0.0 if path.stem == "none" else 0.4), path.stem


@pytest.fixture(autouse=True)
def _no_user_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.setenv("PRUNE_LAB_CACHE_DIR", str(tmp_path / "default-cache"))

