"""Fault injection: kill, corrupt and race on purpose, with real processes and real files.

Every case ends one of two ways: the run ends with results identical to an uninterrupted run after at most
one relaunch of the same command ("heals"), or the command stops with one line naming the file or folder
to fix and, once fixed, the relaunch ends with correct results ("one-line fix"). No case may lose work:
finished runs keep their results byte for byte.

Each case records its outcome; the session writes them as JSON (to $PRUNE_LAB_FAULT_REPORT when set), and
`docs/reliability_figure.py` draws docs/reliability.md's figure from that file.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import SHARED_DATA, computed, read_json, results_below, run_cli, write_cifar10_files

from prune_lab.data.torchvision_sets import idx_problem

pytestmark = [pytest.mark.faults, pytest.mark.slow]

EPOCHS = 15
PENGUINS = ["device=cpu", "threads=1", "seed=3", "sparsity=0.5", f"train.epochs={EPOCHS}",
            f"train.finetune_epochs={EPOCHS}", "train.batch_size=16", "train.checkpoint_every_s=0"]
MNIST_TINY = ["dataset=mnist", "dataset.train_subset=256", "model=lenet_300_100", "train.epochs=1",
              "train.finetune_epochs=1", "device=cpu", "threads=1", "cache_dir=null"]

OUTCOMES: list[dict] = []


def pytest_sessionfinish_write() -> None:
    target = os.environ.get("PRUNE_LAB_FAULT_REPORT")
    if target:
        Path(target).write_text(json.dumps(sorted(OUTCOMES, key=lambda o: o["case"]), indent=2) + "\n")


@pytest.fixture(scope="module", autouse=True)
def report():
    yield
    pytest_sessionfinish_write()


@pytest.fixture
def outcome(request):
    """Call with the case's outcome once every assertion passed; a case that fails is recorded as such."""
    recorded: list[dict] = []

    def record(kind: str, relaunches: int, fault: str) -> None:
        recorded.append({"case": request.node.name, "fault": fault, "outcome": kind, "relaunches": relaunches})

    yield record
    if recorded:
        OUTCOMES.extend(recorded)
    else:
        OUTCOMES.append({"case": request.node.name, "fault": "", "outcome": "failed", "relaunches": None})


def env(cache: Path | None = None) -> dict[str, str]:
    out = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0"}
    if cache is not None:
        out["PRUNE_LAB_CACHE_DIR"] = str(cache)
    return out


def start(*args: str, cwd: Path, cache: Path | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "prune_lab", *args], cwd=cwd, env=env(cache),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(folder: Path, pattern: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not list(folder.glob(pattern)):
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"the run ended before {folder / pattern} appeared:\n{out[-2000:]}{err[-2000:]}")
        assert time.monotonic() < deadline, f"{folder / pattern} did not appear within {timeout}s"
        time.sleep(0.005)


def kill9(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


def levels(run_dir: Path) -> list[dict]:
    return computed(read_json(run_dir / "results.json")["levels"])


def same_model(a: Path, b: Path) -> None:
    ours, theirs = torch.load(a / "model.pt", weights_only=False), torch.load(b / "model.pt", weights_only=False)
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, tensor in theirs["state_dict"].items():
        assert torch.equal(tensor, ours["state_dict"][key]), key


def stderr_lines(proc: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in proc.stderr.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The penguin run, uninterrupted: what every healed run must match."""
    folder = tmp_path_factory.mktemp("reference")
    done = run_cli(f"hydra.run.dir={folder / 'run'}", *PENGUINS, "cache_dir=null", cwd=folder)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder / "run"


@pytest.fixture
def gz_only(tmp_path: Path) -> Path:
    """A data folder holding only MNIST's four .gz files (real data)."""
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in (SHARED_DATA / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(gz, raw / gz.name)
    return tmp_path / "data"


def unpacked_ok(data: Path) -> bool:
    files = list((data / "MNIST" / "raw").glob("*-ubyte"))
    return len(files) == 4 and all(idx_problem(f) is None for f in files)


# --- data preparation --------------------------------------------------------------------------------------

def test_three_runs_starting_together_on_gz_only_mnist_all_finish_identically(tmp_path: Path, gz_only: Path,
                                                                               outcome) -> None:
    procs = [start(f"hydra.run.dir={tmp_path / f'run{i}'}", *MNIST_TINY, f"dataset.data_dir={gz_only}",
                   cwd=tmp_path) for i in range(3)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert levels(tmp_path / "run0") == levels(tmp_path / "run1") == levels(tmp_path / "run2")
    assert unpacked_ok(gz_only)
    assert not list((gz_only / "MNIST" / "raw").glob(".*.tmp"))
    outcome("heals", 0, "3 runs unpack the same MNIST .gz files at once")


def test_kill_9_while_unpacking_then_the_relaunch_unpacks_and_finishes(tmp_path: Path, gz_only: Path,
                                                                         outcome) -> None:
    args = [f"hydra.run.dir={tmp_path / 'run'}", *MNIST_TINY, f"dataset.data_dir={gz_only}"]
    proc = start(*args, cwd=tmp_path)
    wait_for(gz_only / "MNIST" / "raw", ".train-images-idx3-ubyte.lock", proc)  # unpacking has begun
    kill9(proc)
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert unpacked_ok(gz_only) and (tmp_path / "run" / "results.json").exists()
    outcome("heals", 1, "kill -9 while unpacking MNIST")


def test_a_torn_unpacked_file_next_to_its_gz_is_named_discarded_and_rebuilt(tmp_path: Path, gz_only: Path,
                                                                             outcome) -> None:
    raw = gz_only / "MNIST" / "raw"
    with gzip.open(raw / "train-images-idx3-ubyte.gz", "rb") as f:
        (raw / "train-images-idx3-ubyte").write_bytes(f.read()[: 2 * 2**20])  # what torchvision's unpack left
    done = run_cli(f"hydra.run.dir={tmp_path / 'run'}", *MNIST_TINY, f"dataset.data_dir={gz_only}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{raw / 'train-images-idx3-ubyte'} is truncated (2097152 of 47040016 bytes); discarding it" in done.stderr
    assert unpacked_ok(gz_only)
    outcome("heals", 0, "truncated unpacked MNIST file (gz present)")


def test_a_torn_unpacked_file_without_its_gz_gets_one_line_and_the_fix_works(tmp_path: Path, gz_only: Path,
                                                                             outcome) -> None:
    raw = gz_only / "MNIST" / "raw"
    for gz in raw.glob("*.gz"):
        with gzip.open(gz, "rb") as f:
            (raw / gz.stem).write_bytes(f.read())
        gz.unlink()
    images = raw / "train-images-idx3-ubyte"
    good = images.read_bytes()
    images.write_bytes(good[:1000])
    args = [f"hydra.run.dir={tmp_path / 'run'}", *MNIST_TINY, f"dataset.data_dir={gz_only}"]
    done = run_cli(*args, cwd=tmp_path)
    (line,) = stderr_lines(done)
    assert done.returncode == 2 and str(images) in line and "train-images-idx3-ubyte.gz" in line
    images.write_bytes(good)  # the fix the line names
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    outcome("one-line fix", 1, "truncated unpacked MNIST file, no gz")


def test_a_truncated_cifar_batch_without_md5_checks_gets_one_line_and_the_fix_works(tmp_path: Path,
                                                                                  outcome) -> None:
    folder = write_cifar10_files(tmp_path / "data", per_batch=20, n_test=20)
    batch = folder / "data_batch_4"
    good = batch.read_bytes()
    batch.write_bytes(good[: len(good) // 3])
    args = [f"hydra.run.dir={tmp_path / 'run'}", "dataset=cifar10", f"dataset.data_dir={tmp_path / 'data'}",
            "dataset.verify_md5=false", "dataset.val_size=20", "model=conv2", "train.epochs=1",
            "train.finetune_epochs=1", "device=cpu",
            "threads=1", "cache_dir=null"]
    done = run_cli(*args, cwd=tmp_path)
    (line,) = stderr_lines(done)
    assert done.returncode == 2 and str(batch) in line
    batch.write_bytes(good)
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    outcome("one-line fix", 1, "truncated CIFAR-10 batch, md5 checks off")


# --- kills and interrupts during training ------------------------------------------------------------------

@pytest.mark.parametrize("when", ["dense.partial.pt", "finetune.partial.pt"])
def test_kill_9_mid_training_resumes_to_identical_results(tmp_path: Path, reference: Path, when: str,
                                                          outcome) -> None:
    args = [f"hydra.run.dir={tmp_path / 'run'}", *PENGUINS, "cache_dir=null"]
    proc = start(*args, cwd=tmp_path)
    wait_for(tmp_path / "run" / "checkpoints", when, proc)
    kill9(proc)
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert levels(tmp_path / "run") == levels(reference)
    same_model(tmp_path / "run", reference)
    outcome("heals", 1, f"kill -9 once {when} exists")


def test_ctrl_c_prints_one_line_with_the_resume_command_which_resumes(tmp_path: Path, reference: Path,
                                                                     outcome) -> None:
    args = [*PENGUINS, "cache_dir=null"]
    proc = start(*args, cwd=tmp_path)  # no run folder named: the line must name the one Hydra chose
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("outputs/*/*/checkpoints/dense.partial.pt")):
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.005)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-3000:]
    (line,) = [ln for ln in err.splitlines() if ln.strip()]
    assert line.startswith("prune_lab: interrupted;") and "Traceback" not in err
    command = line.split("Resume with: ", 1)[1]
    assert "hydra.run.dir=" in command
    again = subprocess.run(["bash", "-c", command.replace("python", sys.executable, 1)], cwd=tmp_path, env=env(),
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-3000:]
    (run_dir,) = [p.parent for p in results_below(tmp_path)]
    assert levels(run_dir) == levels(reference)
    outcome("heals", 1, "Ctrl-C mid-training")


# --- corrupt files -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["random bytes in dense.done.pt", "truncated finetune.partial.pt"])
def test_a_corrupt_checkpoint_is_named_set_aside_and_its_phase_retrained(tmp_path: Path, reference: Path,
                                                                         damage: str, outcome) -> None:
    run_dir = tmp_path / "run"
    args = [f"hydra.run.dir={run_dir}", *PENGUINS, "cache_dir=null"]
    proc = start(*args, cwd=tmp_path)
    wait_for(run_dir / "checkpoints", "finetune.partial.pt", proc)
    kill9(proc)
    if damage.startswith("random"):
        victim = run_dir / "checkpoints" / "dense.done.pt"
        victim.write_bytes(os.urandom(victim.stat().st_size))
    else:
        victim = run_dir / "checkpoints" / "finetune.partial.pt"
        victim.write_bytes(victim.read_bytes()[:300])
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    (line,) = [ln for ln in again.stderr.splitlines() if "does not load" in ln]
    assert f"checkpoint {victim} does not load" in line and "moved it to" in line
    assert levels(run_dir) == levels(reference)
    same_model(run_dir, reference)
    outcome("heals", 1, damage)


def test_a_corrupt_dense_cache_entry_is_retrained_not_used(tmp_path: Path, reference: Path, outcome) -> None:
    cache = tmp_path / "cache"
    first = run_cli(f"hydra.run.dir={tmp_path / 'a'}", *PENGUINS, f"cache_dir={cache}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    (entry,) = cache.glob("*.pt")
    entry.write_bytes(entry.read_bytes()[:-50] + os.urandom(50))
    second = run_cli(f"hydra.run.dir={tmp_path / 'b'}", *PENGUINS, f"cache_dir={cache}", cwd=tmp_path)
    assert second.returncode == 0, second.stderr[-3000:]
    assert "ignoring a corrupt dense-cache entry" in second.stderr
    assert levels(tmp_path / "b") == levels(reference)
    outcome("heals", 0, "corrupt dense-cache entry")


def test_leftovers_of_a_kill_during_the_final_writes_are_cleaned_on_relaunch(tmp_path: Path, outcome) -> None:
    run_dir = tmp_path / "run"
    args = [f"hydra.run.dir={run_dir}", *PENGUINS, "cache_dir=null"]
    proc = start(*args, cwd=tmp_path)
    wait_for(run_dir, "results.json", proc)
    kill9(proc)  # as results.json appears: maybe before the checkpoints were cleared
    (run_dir / ".masks.json.k2j3.tmp").write_text("{")  # what a kill inside atomic_write_json leaves
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    (run_dir / "checkpoints" / "dense.done.pt").write_bytes(b"stale")
    results = (run_dir / "results.json").read_bytes()
    again = run_cli(*args, cwd=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout, again.stderr[-3000:]
    assert not (run_dir / "checkpoints").exists() and not list(run_dir.glob(".*.tmp"))
    assert (run_dir / "results.json").read_bytes() == results  # nothing the user ran was touched
    outcome("heals", 1, "kill -9 during the final writes (stale .tmp, checkpoints/)")


# --- sweeps with failures ----------------------------------------------------------------------------------

@pytest.mark.parametrize("launcher", ["one_process", "local"])
def test_a_sweep_runs_every_job_reports_every_failure_and_the_relaunch_retries_only_those(
        tmp_path: Path, launcher: str, outcome) -> None:
    sweep = tmp_path / "sweep"
    grid = [f"hydra.sweep.dir={sweep}", *PENGUINS[:2], "train.epochs=3", "train.finetune_epochs=2", "seed=0,1,2,3",
            "cache_dir=null"]
    if launcher == "local":
        grid += ["hydra/launcher=local", "hydra.launcher.parallelism=2", "hydra.launcher.gpus_per_node=0"]
    def folder_of(seed: int) -> Path:  # named by the overrides that are not bookkeeping, sorted
        return sweep / f"seed={seed},train.epochs=3,train.finetune_epochs=2"

    for seed in (1, 3):  # a folder holding another configuration's results: the run refuses it
        folder = folder_of(seed)
        folder.mkdir(parents=True)
        (folder / "results.json").write_text(json.dumps({"status": "ok", "config_hash": "0123456789abcdef"}))
    done = run_cli("-m", *grid, cwd=tmp_path, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]  # every failure is bad input (a foreign folder)
    report = done.stdout + done.stderr
    assert "2 of 4 sweep job(s) failed; the other 2 finished" in report, report[-3000:]
    for seed in (1, 3):
        assert f"run folder: {folder_of(seed)}" in report, report[-3000:]
        # once, as its job ends: the refused run writes no error.json into a folder it does not own, so the
        # launcher has the run's own line (one_process: prune_lab's say() hands it over)
        assert report.count(f"{folder_of(seed)} holds results of another configuration") == 1, report[-3000:]
    assert "Traceback" not in done.stderr
    kept = {p: p.read_bytes() for p in results_below(sweep) if "seed=0" in str(p) or "seed=2" in str(p)}
    assert len(kept) == 2

    for seed in (1, 3):  # the fix the report names: delete the foreign folder
        shutil.rmtree(folder_of(seed))
    again = run_cli("-m", *grid, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(results_below(sweep)) == 4
    assert all(path.read_bytes() == data for path, data in kept.items())  # finished runs untouched
    outcome("one-line fix", 1, f"2 of 4 jobs fail ({launcher} launcher)")


# --- unwritable places -------------------------------------------------------------------------------------

@pytest.mark.parametrize("where", ["hydra.run.dir", "cache_dir"])
def test_an_unwritable_folder_is_one_line_and_pointing_elsewhere_works(tmp_path: Path, where: str,
                                                                       outcome) -> None:
    (tmp_path / "file").write_text("")
    bad = [f"{where}={tmp_path / 'file' / 'x'}"]
    good = [f"{where}={tmp_path / 'elsewhere'}"]
    rest = [*PENGUINS[:2], "train.epochs=2", "train.finetune_epochs=1"]
    if where == "cache_dir":
        rest.append(f"hydra.run.dir={tmp_path / 'run'}")
    done = run_cli(*bad, *rest, cwd=tmp_path)
    (line,) = stderr_lines(done)
    assert done.returncode == 2 and str(tmp_path / "file") in line
    again = run_cli(*good, *rest, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    outcome("one-line fix", 1, f"{where} under a file")


# --- the same on the real SLURM test cluster ---------------------------------------------------------------

@pytest.mark.slurm
@pytest.mark.usefixtures("slurm_cluster")
def test_a_slurm_sweep_reports_every_failed_job_and_the_relaunch_retries_only_those(tmp_path: Path,
                                                                                   outcome) -> None:
    sweep = tmp_path / "sweep"
    grid = [f"hydra.sweep.dir={sweep}", "hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=1",
            "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10", *PENGUINS[:2], "train.epochs=3",
            "train.finetune_epochs=2", "seed=0,1,2", "cache_dir=null"]

    def folder_of(seed: int) -> Path:
        return sweep / f"seed={seed},train.epochs=3,train.finetune_epochs=2"

    for seed in (0, 2):
        folder_of(seed).mkdir(parents=True)
        (folder_of(seed) / "results.json").write_text(json.dumps({"status": "ok", "config_hash": "0123456789abcdef"}))
    done = run_cli("-m", *grid, cwd=tmp_path, timeout=600)
    assert done.returncode == 2, done.stderr[-3000:]  # every failure is bad input (a foreign folder)
    report = done.stdout + done.stderr
    assert "2 of 3 sweep job(s) failed; the other 1 finished" in report, report[-3000:]
    for seed in (0, 2):
        assert f"run folder: {folder_of(seed)}" in report and f"{folder_of(seed)} holds results of another" in report
    assert len(set(re.findall(r"log: \S+_log\.err", report))) == 2  # each failed job names its own log
    kept = folder_of(1) / "results.json"
    before = kept.read_bytes()
    for seed in (0, 2):
        shutil.rmtree(folder_of(seed))
    again = run_cli("-m", *grid, cwd=tmp_path, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "Skipped 1 complete run(s)" in again.stdout + again.stderr
    assert len(results_below(sweep)) == 3 and kept.read_bytes() == before
    outcome("one-line fix", 1, "2 of 3 jobs fail (SLURM launcher)")


@pytest.fixture
def read_only(tmp_path: Path):
    """A read-only bind mount of tmp_path/src at tmp_path/ro (a read-only mount as on a cluster; needs root)."""
    src, mnt = tmp_path / "src", tmp_path / "ro"
    src.mkdir()
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True).returncode:
        pytest.skip("a read-only bind mount needs root and mount permission")
    try:
        subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], check=True, capture_output=True)
        yield src, mnt
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)


def test_a_read_only_data_folder_with_only_gz_files_gets_one_line_and_the_fix_works(tmp_path: Path, read_only,
                                                                                   outcome) -> None:
    src, mnt = read_only
    (src / "MNIST" / "raw").mkdir(parents=True)
    for gz in (SHARED_DATA / "MNIST" / "raw").glob("*.gz"):
        shutil.copy(gz, src / "MNIST" / "raw" / gz.name)
    args = [f"hydra.run.dir={tmp_path / 'run'}", *MNIST_TINY]
    done = run_cli(*args, f"dataset.data_dir={mnt}", cwd=tmp_path)
    (line,) = stderr_lines(done)
    assert done.returncode == 2 and "cannot unpack" in line and "dataset.data_dir" in line
    shutil.copytree(mnt, tmp_path / "writable")  # the fix the line names
    again = run_cli(*args, f"dataset.data_dir={tmp_path / 'writable'}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    outcome("one-line fix", 1, "read-only data folder holding only .gz files")


@pytest.mark.parametrize("where", ["hydra.run.dir", "hydra.sweep.dir", "cache_dir"])
def test_a_read_only_mount_as_output_folder_is_one_line(tmp_path: Path, read_only, where: str, outcome) -> None:
    _, mnt = read_only
    rest = [*PENGUINS[:2], "train.epochs=2", "train.finetune_epochs=1"]
    if where == "cache_dir":
        rest.append(f"hydra.run.dir={tmp_path / 'run'}")
    if where == "hydra.sweep.dir":
        rest.append("-m")
    done = run_cli(f"{where}={mnt / 'out'}", *rest, cwd=tmp_path)
    (line,) = stderr_lines(done)
    assert done.returncode == 2 and str(mnt) in line and where in line
    assert not results_below(tmp_path)
    again = run_cli(f"{where}={tmp_path / 'out'}", *rest, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    outcome("one-line fix", 1, f"{where} on a read-only mount")
