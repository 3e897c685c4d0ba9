"""The dense-training cache: what the key covers, racing processes, corrupt entries, and what may be shared."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from prune_lab.cache import DenseCache, dense_basis
from prune_lab.data.splits import DataInfo, Splits, TensorSet
from prune_lab.job import Job
from prune_lab.masks import Mask
from prune_lab.models.mlp import MLP
from prune_lab.storage import PhaseStore
from prune_lab.training import TrainSettings
from tests.conftest import ROOT, TINY, read_json, results_below, run_cli

CONFIG = {"seed": 0, "sparsity": 0.5, "pruner": {"_target_": "prune_lab.pruners.schedules.OneShot"},
          "dataset": {"_target_": "prune_lab.data.torchvision_sets.MNIST", "data_dir": "/a", "download": False,
                      "val_size": 5000},
          "model": {"_target_": "prune_lab.models.mlp.MLP", "hidden": [300, 100]},
          "init": {"_target_": "prune_lab.init.PyTorchDefault"},
          "train": {"lr": 0.01, "epochs": 3, "finetune_epochs": 2, "batch_size": 64, "checkpoint_every_s": 10,
                    "optimizer": {"_target_": "torch.optim.Adam", "_partial_": True}}}


def key(config: dict, phase: str = "dense", epochs: int = 3, device: str = "cpu", threads: int = 1) -> str:
    cache = DenseCache.__new__(DenseCache)  # the key alone: no folder needed
    cache.folder, cache.basis = Path("/nonexistent"), dense_basis(config, device, threads)
    return cache.key(phase, epochs)


def changed(path: tuple[str, ...], value: object) -> dict:
    config = json.loads(json.dumps(CONFIG))
    node = config
    for k in path[:-1]:
        node = node[k]
    node[path[-1]] = value
    return config


@pytest.mark.parametrize("path,value", [(("seed",), 1), (("init", "_target_"), "prune_lab.init.InitScheme"),
                                        (("train", "lr"), 0.1),
                                        (("dataset", "val_size"), 100), (("model", "hidden"), [10])])
def test_key_changes_with_what_dense_training_depends_on(path: tuple[str, ...], value: object) -> None:
    assert key(changed(path, value)) != key(CONFIG)


@pytest.mark.parametrize("path,value", [(("sparsity",), 0.9), (("pruner", "_target_"), "x.Other"),
                                        (("dataset", "data_dir"), "/b"), (("train", "finetune_epochs"), 9),
                                        (("train", "checkpoint_every_s"), 0)])
def test_key_ignores_pruner_settings_and_locations(path: tuple[str, ...], value: object) -> None:
    assert key(changed(path, value)) == key(CONFIG)


def test_key_covers_phase_epochs_device_and_threads() -> None:
    base = key(CONFIG)
    assert len({base, key(CONFIG, phase="warmup"), key(CONFIG, epochs=4), key(CONFIG, device="cuda"),
                key(CONFIG, threads=2)}) == 5


def test_key_follows_the_one_bookkeeping_list(monkeypatch: pytest.MonkeyPatch) -> None:
    from prune_lab import bookkeeping

    lr = changed(("train", "lr"), 0.5)
    assert key(lr) != key(CONFIG)
    monkeypatch.setattr(bookkeeping, "BOOKKEEPING", (*bookkeeping.BOOKKEEPING, "train.lr"))
    assert key(lr) == key(CONFIG)


def test_key_covers_the_code_of_user_targets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model class outside prune_lab: editing its module (or a module beside it) gives a new key."""
    folder = tmp_path / "user"
    folder.mkdir()
    (folder / "mynet.py").write_text("import torch\nclass Net(torch.nn.Module):\n    act = torch.nn.ReLU\n")
    (folder / "helpers.py").write_text("SCALE = 1\n")
    monkeypatch.syspath_prepend(str(folder))
    import importlib

    importlib.import_module("mynet")
    config = changed(("model", "_target_"), "mynet.Net")
    before = key(config)
    (folder / "helpers.py").write_text("SCALE = 2\n")  # a neighbour the module may import
    assert key(config) != before
    (folder / "mynet.py").write_text("import torch\nclass Net(torch.nn.Module):\n    act = torch.nn.Tanh\n")
    changed_code = key(config)
    assert changed_code != before
    monkeypatch.delitem(sys.modules, "mynet")
    with pytest.raises(LookupError, match="mynet.Net"):  # code that cannot be located is never shared
        key(config)


RACER = textwrap.dedent("""
    import json, os, sys, time
    from pathlib import Path
    import torch
    from prune_lab.cache import DenseCache
    folder, log = Path(sys.argv[1]), Path(sys.argv[2])
    cache = DenseCache(folder, {"seed": 0, "model": "race"})
    def train():
        with log.open("a") as f:
            f.write(f"{os.getpid()}\\n")
        time.sleep(float(sys.argv[3]))
        return {"model": {"w": torch.arange(5.0) * 7}, "history": [{"epoch": 1}]}
    outcome = cache.fetch_or_train("dense", 3, train)
    print(json.dumps({"hit": outcome.hit, "w": outcome.state["model"]["w"].tolist(), "key": outcome.key}))
""")


def racer(folder: Path, log: Path, sleep_s: float) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", RACER, str(folder), str(log), str(sleep_s)], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_processes_racing_for_one_key_train_once(tmp_path: Path) -> None:
    log = tmp_path / "trained.log"
    procs = [racer(tmp_path / "cache", log, 2.0) for _ in range(2)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), [o[1] for o in outs]
    results = [json.loads(o[0].strip().splitlines()[-1]) for o in outs]
    assert len(log.read_text().splitlines()) == 1  # one trained...
    assert sorted(r["hit"] for r in results) == [False, True]  # ...the other waited and reused its entry
    assert results[0]["w"] == results[1]["w"] == [0.0, 7.0, 14.0, 21.0, 28.0]
    assert "waiting" in "".join(o[1] for o in outs)


def test_a_killed_trainer_leaves_no_stale_lock(tmp_path: Path) -> None:
    log = tmp_path / "trained.log"
    first = racer(tmp_path / "cache", log, 60.0)
    deadline = time.monotonic() + 60
    while not (log.exists() and log.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(first.pid, signal.SIGKILL)  # dies holding the lock, mid-training, nothing stored
    first.communicate()
    second = racer(tmp_path / "cache", log, 0.0)
    out, err = second.communicate(timeout=120)
    assert second.returncode == 0, err
    assert json.loads(out.strip().splitlines()[-1])["hit"] is False
    assert len(log.read_text().splitlines()) == 2


def test_partial_or_corrupt_entries_are_never_used(tmp_path: Path) -> None:
    cache = DenseCache(tmp_path, {"seed": 0})
    calls = []

    def train() -> dict:
        calls.append(1)
        return {"model": {"w": torch.ones(3) * len(calls)}, "history": []}

    first = cache.fetch_or_train("dense", 1, train)
    data, manifest = tmp_path / f"{first.key}.pt", tmp_path / f"{first.key}.json"
    assert cache.load(first.key) is not None
    raw = bytearray(data.read_bytes())
    raw[len(raw) // 2] ^= 0xFF  # one flipped byte
    data.write_bytes(bytes(raw))
    assert cache.load(first.key) is None
    again = cache.fetch_or_train("dense", 1, train)
    assert not again.hit and len(calls) == 2 and torch.equal(again.state["model"]["w"], torch.ones(3) * 2)
    manifest.unlink()  # a data file without its completion marker: a writer that died between the two
    assert cache.load(first.key) is None


def test_unwritable_cache_dir_is_a_user_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    from prune_lab.errors import UserError

    with pytest.raises(UserError, match="cache_dir"):
        DenseCache(tmp_path / "file" / "sub", {})


def toy_job(tmp_path: Path, cache: DenseCache) -> Job:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 6, generator=g), torch.randint(0, 3, (64,), generator=g)
    data = Splits(DataInfo("toy", (6,), 3), TensorSet(x, y), TensorSet(x[:8], y[:8]), TensorSet(x[:8], y[:8]))
    torch.manual_seed(0)
    model = MLP(data.info, [5])
    settings = TrainSettings(optimizer=functools.partial(torch.optim.SGD), lr=0.1, batch_size=16)
    prunable = [n for n, _ in model.named_parameters() if n.endswith("weight")]
    return Job(model, data, settings, prunable, lambda m, g: None, 0, PhaseStore(tmp_path / "ckpt", "h"),
               dense_cache=cache)


def test_only_pure_dense_training_is_shared(tmp_path: Path) -> None:
    cache = DenseCache(tmp_path / "cache", {"seed": 0})
    job = toy_job(tmp_path / "a", cache)
    job.train("dense", 1)
    job.train("second", 1)  # not the first phase: weights are trained, not initial
    assert [c["phase"] for c in job.cached_phases] == ["dense"]

    masked = toy_job(tmp_path / "b", cache)
    masked.set_mask(Mask({n: torch.rand(t.shape) > 0.5 for n, t in masked.mask.tensors.items()}))
    masked.train("dense", 1)
    hooked = toy_job(tmp_path / "c", cache)
    hooked.train("dense", 1, on_step=lambda step, total, model: None)
    lossy = toy_job(tmp_path / "d", cache)
    lossy.train("dense", 1, loss_fn=lambda logits, y, x: torch.nn.functional.cross_entropy(logits, y) * 2)
    moved = toy_job(tmp_path / "e", cache)
    with torch.no_grad():
        next(moved.model.parameters()).add_(1.0)  # a pruner that touched the weights before training
    moved.train("dense", 1)
    assert [j.cached_phases for j in (masked, hooked, lossy, moved)] == [[], [], [], []]

    shared = toy_job(tmp_path / "f", cache)
    shared.train("dense", 1)
    assert shared.cached_phases[0]["hit"] is True
    fresh = toy_job(tmp_path / "g", None)
    fresh.train("dense", 1)
    for a, b in zip(shared.model.state_dict().values(), fresh.model.state_dict().values()):
        assert torch.equal(a, b)  # the cached outcome is exactly what training would have produced
    assert shared.history == fresh.history


def test_sweep_trains_dense_once_with_identical_results(tmp_path: Path) -> None:
    sweep = ["-m", "sparsity=0.3,0.6", "pruner=magnitude", "seed=0", *TINY]
    on = run_cli(*sweep, f"hydra.sweep.dir={tmp_path}/on", f"cache_dir={tmp_path}/cache", cwd=ROOT)
    off = run_cli(*sweep, f"hydra.sweep.dir={tmp_path}/off", "cache_dir=null", cwd=ROOT)
    assert on.returncode == 0 and off.returncode == 0, on.stderr + off.stderr
    runs_on = [read_json(p) for p in results_below(tmp_path / "on")]
    runs_off = [read_json(p) for p in results_below(tmp_path / "off")]
    assert sorted(c["hit"] for r in runs_on for c in r["dense_cache"]) == [False, True]
    assert all(r["dense_cache"] == [] for r in runs_off)
    assert len(list((tmp_path / "cache").glob("*.pt"))) == 1

    def levels(run: dict) -> list[dict]:  # latency is measured, not computed: it may differ
        return [{k: v for k, v in lv.items() if "latency" not in k} for lv in run["levels"]]

    assert [levels(r) for r in runs_on] == [levels(r) for r in runs_off]
