"""The local launcher's warm workers (hydra/launcher=local), with real processes: the results of a fresh process,
each run's folder and log, one failure or one killed worker never stopping the others, and resume on relaunch."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import ROOT, computed, metrics, read_json, results_below, run_cli

pytestmark = pytest.mark.slow  # real sweeps of several runs: CI and `make check`

WARM = ["hydra/launcher=local", "hydra.launcher.parallelism=2", "hydra.launcher.gpus_per_node=0"]
SMALL = ["device=cpu", "train.epochs=8", "train.finetune_epochs=4", "train.batch_size=16", "cache_dir=null"]


def outcomes(sweep: Path) -> list[dict]:
    return [json.loads(line) for line in (sweep / ".workers" / "outcomes.jsonl").read_text().splitlines()]


def same_run(a: Path, b: Path) -> None:
    """Two run folders hold the same computed results: levels, every epoch of metrics.jsonl, final weights."""
    assert computed(read_json(a / "results.json")["levels"]) == computed(read_json(b / "results.json")["levels"])
    assert metrics(a / "metrics.jsonl") == metrics(b / "metrics.jsonl")
    ours, theirs = torch.load(a / "model.pt"), torch.load(b / "model.pt")
    assert ours["state_dict"].keys() == theirs["state_dict"].keys()
    for key, tensor in theirs["state_dict"].items():
        assert torch.equal(tensor, ours["state_dict"][key]), key


def test_warm_workers_give_a_fresh_processs_results_and_keep_each_runs_folder_and_log(tmp_path: Path) -> None:
    grid = [*SMALL, "seed=0,1", "sparsity=0.5,0.7", "pruner=magnitude"]
    warm = run_cli("-m", *WARM, f"hydra.sweep.dir={tmp_path / 'warm'}", *grid, cwd=tmp_path,
                   env={"OMP_NUM_THREADS": "1"})
    assert warm.returncode == 0, warm.stderr[-3000:]
    one = run_cli("-m", f"hydra.sweep.dir={tmp_path / 'one'}", "threads=1", *grid, cwd=tmp_path)
    assert one.returncode == 0, one.stderr[-3000:]
    report = warm.stdout + warm.stderr
    assert "Launching 4 jobs on 2 warm worker(s), 1 torch thread(s) each" in report
    assert "sweep: 4 ended, 0 running, 0 left; 0 failed" in report  # where the sweep stands, as jobs end

    # Two worker processes ran the four jobs: each imported once and ran jobs in turn.
    ran = outcomes(tmp_path / "warm")
    assert sorted(o["idx"] for o in ran) == [0, 1, 2, 3] and {o["status"] for o in ran} == {"completed"}
    assert len({o["worker_pid"] for o in ran}) == 2

    warm_runs = {p.parent.name: p.parent for p in results_below(tmp_path / "warm")}
    one_runs = {p.parent.name: p.parent for p in results_below(tmp_path / "one")}
    assert sorted(warm_runs) == sorted(one_runs) and len(warm_runs) == 4  # the same folders, named by overrides
    for name, run_dir in warm_runs.items():
        same_run(run_dir, one_runs[name])  # as the one-process launcher computes them
        assert read_json(run_dir / "results.json")["threads"] == 1
        assert (run_dir / ".hydra" / "config.yaml").is_file()  # as run_job writes them in every launcher
        assert "level pruned" in (run_dir / "__main__.log").read_text()  # the run's own Hydra log
        assert re.match(r"prune_lab: warm worker \d \(pid \d+\) runs job #\d", (run_dir / "__main__.out").read_text())

    # The second job of a worker (its state left by the first) against a fresh process of its own.
    second = next(o for o in ran if o["worker_pid"] == ran[0]["worker_pid"] and o["idx"] != ran[0]["idx"])
    record = read_json(Path(second["run_dir"]) / "results.json")
    fresh = run_cli(f"hydra.run.dir={tmp_path / 'fresh'}", "threads=1", *record["overrides"], cwd=tmp_path)
    assert fresh.returncode == 0, fresh.stderr[-3000:]
    same_run(Path(second["run_dir"]), tmp_path / "fresh")


def test_a_killed_worker_and_a_bad_run_fail_only_their_jobs_and_a_relaunch_resumes_and_skips(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    # One worker, the long run first: when its worker is killed, the three jobs still waiting need a new worker.
    grid = ["-m", "hydra/launcher=local", "hydra.launcher.parallelism=1", "hydra.launcher.gpus_per_node=0",
            f"hydra.sweep.dir={sweep}", "device=cpu", "cache_dir=null", "train.batch_size=16",
            "train.checkpoint_every_s=0", "train.finetune_epochs=5", "train.epochs=300,5", "sparsity=0.5,1.5"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "prune_lab", *grid], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 240
    while not list(sweep.glob("sparsity=0.5,*train.epochs=300*/checkpoints/dense.partial.pt")):  # a few epochs in
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the long run never wrote an epoch checkpoint"
        time.sleep(0.05)
    (long_run,) = sweep.glob("sparsity=0.5,*train.epochs=300*")
    pid = int(re.search(r"\(pid (\d+)\)", (long_run / "__main__.out").read_text()).group(1))
    os.kill(pid, signal.SIGKILL)  # its worker dies in the middle of the job (as out of memory would end it)
    out, _ = proc.communicate(timeout=300)

    assert proc.returncode == 1, out[-3000:]  # a crash among the failures: 1 (2 only when all are bad input)
    assert "3 of 4 sweep job(s) failed; the other 1 finished" in out, out[-3000:]
    assert re.search(rf"the warm worker running it \(pid {pid}\) died \(killed by signal 9\)", out), out[-3000:]
    (bad,) = sweep.glob("sparsity=1.5,*train.epochs=300*")
    assert f"log: {bad}/__main__.out" in out  # the bad run's own log, which says why
    assert "sparsity=1.5 is outside [0, 1)" in (bad / "__main__.out").read_text()
    (short,) = sweep.glob("sparsity=0.5,*train.epochs=5,*")
    assert [p.parent for p in results_below(sweep)] == [short]  # the jobs after the killed one all ran
    content = (short / "results.json").read_bytes()
    first = outcomes(sweep)
    assert sorted(o["idx"] for o in first) == [0, 1, 2, 3] and len({o["worker_pid"] for o in first}) == 2

    # The same command again: the complete run is skipped untouched, the killed one resumes from its checkpoint.
    again = run_cli(*grid, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert again.returncode == 2, again.stderr[-3000:]  # only the bad input is left: status 2, as a single run
    assert "2 of 4 sweep job(s) failed; the other 2 finished" in again.stdout + again.stderr
    assert (short / "results.json").read_bytes() == content
    record = read_json(long_run / "results.json")
    assert record["resumed"] and record["resumed"][0]["phase"] == "dense", record["resumed"]
    epochs, _ = metrics(long_run / "metrics.jsonl")
    assert len(epochs) == len({(r["phase"], r["epoch"]) for r in epochs}) == 305  # no epoch twice
    second = outcomes(sweep)[4:]
    assert {o["idx"]: o["status"] for o in second} == {0: "completed", 1: "failed", 2: "skipped", 3: "failed"}


def test_pool_size_auto_is_one_worker_per_usable_core_and_never_more_than_the_jobs() -> None:
    from hydra_plugins.prune_lab_launchers._warm import pool_size

    assert pool_size("auto", jobs=24, cores=2) == 2
    assert pool_size("auto", jobs=1, cores=8) == 1
    assert pool_size(3, jobs=24, cores=2) == 3  # asked for: oversubscribe on purpose
    with pytest.raises(ValueError):
        pool_size(0, jobs=4, cores=2)


def test_the_package_root_is_this_checkout() -> None:
    """prune_lab and the launchers are imported from this tree (PYTHONPATH), in subprocesses too."""
    code = "import prune_lab, hydra_plugins.prune_lab_launchers as l; print(prune_lab.__file__); print(l.__file__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert all(line.startswith(str(ROOT)) for line in out.split()), out


def test_ctrl_c_stops_every_worker_with_one_line_and_the_same_command_resumes(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    grid = ["-m", *WARM, f"hydra.sweep.dir={sweep}", "device=cpu", "cache_dir=null", "train.batch_size=16",
            "train.checkpoint_every_s=0", "train.epochs=300", "train.finetune_epochs=2", "seed=0,1"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "prune_lab", *grid], cwd=tmp_path, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + 240
    while len(list(sweep.glob("*/checkpoints/dense.partial.pt"))) < 2:  # both workers inside their runs
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the runs never wrote an epoch checkpoint"
        time.sleep(0.05)
    pids = [int(re.search(r"\(pid (\d+)\)", p.read_text()).group(1)) for p in sweep.glob("*/__main__.out")]
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in the terminal does: the whole process group
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out[-3000:]
    assert "prune_lab: interrupted; 0 finished run(s) kept in " in out and " Resume with: python -m prune_lab -m" in out
    for pid in pids:  # no worker goes on training after the launcher is gone
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    again = run_cli(*grid, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert again.returncode == 0, again.stderr[-3000:]
    for result in results_below(sweep):
        assert read_json(result)["resumed"], result
