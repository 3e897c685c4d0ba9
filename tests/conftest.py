"""Shared test helpers: run the real CLI in a subprocess, build a run's job in process (prune_lab.api.prepare),
start / kill / compare real runs, and real datasets copied from ../shared/data. Test modules import helpers
from here only, never from each other."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from prune_lab.api import prepare
from prune_lab.job import Job, copy_state
from prune_lab.masks import Mask

ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("PRUNE_LAB_SHARED_DATA", ROOT.parent / "shared" / "data"))
# Tiny budgets: the pipeline, not the accuracy, is under test.
TINY = ["train.epochs=3", "train.finetune_epochs=2"]


def run_cli(*args: str, cwd: Path, module: str = "prune_lab", timeout: float = 600,
            env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m prune_lab ARGS` in `cwd`, as a user would type it."""
    full_env = {**os.environ, "PYTHONUNBUFFERED": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run([sys.executable, "-m", module, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env=full_env)


# Penguins, a batch of 16 (14 steps an epoch) so most of the time is spent inside epochs; a checkpoint
# at every epoch end. One thread: the reference and the killed run must compute the same way.
EPOCHS = 20
ARGS = ["device=cpu", "seed=7", "sparsity=0.5", f"train.epochs={EPOCHS}", f"train.finetune_epochs={EPOCHS}",
        "train.batch_size=16", "train.checkpoint_every_s=0"]


def start(run_dir: Path, cache: Path, *overrides: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PRUNE_LAB_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "prune_lab", f"hydra.run.dir={run_dir}", *ARGS, *overrides],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def wait_for_any(folder: Path, pattern: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until a file matching `pattern` is in `folder` (polled every 10 ms; the run must still be going)."""
    deadline = time.monotonic() + timeout
    while not list(folder.glob(pattern)):
        assert proc.poll() is None, f"the run ended before {folder / pattern} appeared:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"{folder / pattern} did not appear within {timeout}s"
        time.sleep(0.01)


def killed_and_reference(tmp_path: Path, args: list[str], pattern: str = "*.partial.pt") -> tuple[Path, Path]:
    """(an uninterrupted run's folder, the folder of the same run killed with SIGKILL once a checkpoint matching
    `pattern` appears and then rerun to the end); both with conftest.ARGS, started together."""
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    ref_proc = start(reference, tmp_path / "cache_ref", *args)
    proc = start(killed, tmp_path / "cache_killed", *args)
    wait_for_any(killed / "checkpoints", pattern, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finish(start(killed, tmp_path / "cache_killed", *args))
    finish(ref_proc)
    return reference, killed


def computed(levels: list[dict]) -> list[dict]:
    """A run's levels without what is timed (latency_*_ms): everything computed must match bit for bit."""
    return [{k: v for k, v in level.items() if not k.endswith(("_ms", "_s"))} for level in levels]


def metrics(path: Path) -> tuple[list[dict], list[dict]]:
    """metrics.jsonl as (epoch records, level records without timings)."""
    records = [json.loads(line) for line in path.read_text().splitlines()]
    return [r for r in records if "epoch" in r], computed([r for r in records if "epoch" not in r])


class RecordingJob(Job):
    """A real Job that also keeps the weights and mask at the start and end of every phase."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.starts: dict[str, tuple[dict[str, torch.Tensor], Mask]] = {}
        self.ends: dict[str, tuple[dict[str, torch.Tensor], Mask]] = {}

    def train(self, phase, epochs, **kwargs):
        self.starts[phase] = (copy_state(self.model), self.mask)
        super().train(phase, epochs, **kwargs)
        self.ends[phase] = (copy_state(self.model), self.mask)


def job_from_config(folder: Path, *overrides: str) -> RecordingJob:
    """The job `python -m prune_lab OVERRIDES` would drive (prune_lab.api.prepare: same config, data, model,
    init, store), with its pruner as `job.pruner` and the dense cache off."""
    spec, job = prepare(*overrides, "cache_dir=null", run_dir=folder, job_type=RecordingJob)
    job.pruner = spec.pruner
    return job


# The SLURM tests' launcher settings: tiny penguin runs on the CPU, one thread each, so several jobs share the machine.
ON_CPU = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=1",
          "hydra.launcher.timeout_min=10", "device=cpu"]


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    """The real single-node test cluster (slurm/start_local_cluster.sh): started once per session.

    Outside CI, without root or apt the tests skip and say why; in CI (CI=true) they fail instead."""
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    give_up = pytest.fail if in_ci else pytest.skip
    if os.geteuid() != 0:
        give_up("the SLURM tests start a local cluster with slurm/start_local_cluster.sh, which needs root")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        give_up("the SLURM tests need Debian/Ubuntu (apt-get) to install a local cluster, or SLURM installed")
    try:
        done = subprocess.run([str(ROOT / "slurm" / "start_local_cluster.sh")], capture_output=True, text=True,
                              timeout=900)
    except subprocess.TimeoutExpired:
        give_up("slurm/start_local_cluster.sh did not finish within 15 minutes")
    if done.returncode != 0:
        give_up(f"slurm/start_local_cluster.sh could not start the cluster:\n{done.stderr[-3000:]}")


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def results_below(folder: Path) -> list[Path]:
    return sorted(folder.rglob("results.json"))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A writable copy of ../shared/data (torchvision unpacks the .gz files next to them)."""
    if not SHARED_DATA.is_dir():
        pytest.fail(f"real datasets expected in {SHARED_DATA} (set PRUNE_LAB_SHARED_DATA to their folder)")
    target = tmp_path_factory.mktemp("data")
    for name in ("MNIST", "FashionMNIST", "Cora"):
        if (SHARED_DATA / name).is_dir():
            shutil.copytree(SHARED_DATA / name, target / name)
    return target


def write_cifar10_files(root: Path, per_batch: int, n_test: int) -> Path:
    """Random images in CIFAR-10's python format (the real set is not on this machine) under root/cifar-10-batches-py.

    Rows are the R, G and B planes of a 32x32 image as uint8; keys are str, as Python 2 pickled them and
    torchvision reads them back with encoding="latin1". The files cannot pass torchvision's md5 check.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names, start=1):
        rng = np.random.default_rng(seed)
        n = n_test if name == "test_batch" else per_batch
        batch = {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
                 "labels": rng.integers(0, 10, n).tolist(), "batch_label": name}
        with (folder / name).open("wb") as f:
            pickle.dump(batch, f)
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    return folder


# A user's own model through --config-dir (a project nowhere near the repository).
USER_MODEL = '''
"""A user's own network, outside prune_lab: built from the data's shapes like prune_lab's models."""
import math

from torch import nn


class TinyNet(nn.Module):
    def __init__(self, info, hidden: int = 8):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(math.prod(info.input_shape), hidden), nn.{act}(),
                                 nn.Linear(hidden, info.num_classes))

    def forward(self, x):
        return self.net(x)
'''

USER_CONFIG = """# A two-layer net from my own package (my_models.py on PYTHONPATH).
_target_: my_models.TinyNet
_partial_: true  # the dataset supplies input size and class count
hidden: 8
"""


def user_folder(root: Path, act: str = "ReLU") -> Path:
    """root/conf/model/tiny_net.yaml and root/my_models.py: a user's project, nowhere near the repository."""
    (root / "conf" / "model").mkdir(parents=True, exist_ok=True)
    (root / "conf" / "model" / "tiny_net.yaml").write_text(USER_CONFIG)
    (root / "my_models.py").write_text(USER_MODEL.format(act=act))
    return root
