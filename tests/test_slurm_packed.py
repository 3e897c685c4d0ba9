"""Packed SLURM array tasks (hydra.launcher.runs_per_task=K) on the real single-node test cluster.

A task requeued mid-way (the time-limit warning SIGUSR2, or `scontrol requeue` as preemption does it) ends with
every run done exactly once and the results of the same sweep unpacked; a failing run inside a pack is
reported with its own log while the others complete; a relaunch trains nothing that is complete.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch
from conftest import computed, metrics, read_json, results_below, run_cli

pytestmark = pytest.mark.slurm

# Two CPUs per task: two warm workers of one thread each.
PACKED = ["hydra/launcher=slurm_cpu", "hydra.launcher.cpus_per_task=2", "hydra.launcher.mem_gb=1",
          "hydra.launcher.timeout_min=10", "device=cpu"]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    return {"OMP_NUM_THREADS": "1", "PRUNE_LAB_CACHE_DIR": str(tmp_path / "cache"), "PYTHONUNBUFFERED": "1"}


def snapshot(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {name: ((run_dir / name).stat().st_mtime_ns, (run_dir / name).read_bytes())
            for name in ("results.json", "metrics.jsonl", "model.pt")}


def launch(sweep: Path, tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "prune_lab", "-m", f"hydra.sweep.dir={sweep}", *args],
                            cwd=tmp_path, env={**os.environ, **env}, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.mark.parametrize("how", ["time_limit", "preemption"])
def test_a_packed_task_requeued_mid_way_finishes_every_run_once_with_the_unpacked_results(
        slurm_cluster: None, tmp_path: Path, env: dict[str, str], how: str) -> None:
    name = f"pack_{how}_{uuid.uuid4().hex[:6]}"
    epochs, finetune = 200, 10
    grid = ["seed=0,1,2,3", "sparsity=0.6", f"train.epochs={epochs}", f"train.finetune_epochs={finetune}",
            "train.batch_size=16", "train.checkpoint_every_s=0"]
    packed, unpacked = tmp_path / "packed", tmp_path / "unpacked"
    # The four runs in one task (two workers take two runs each, in turn); the reference has a task per run.
    proc = launch(packed, tmp_path, env, *PACKED, "hydra.launcher.runs_per_task=4", f"hydra.launcher.name={name}",
                  *grid)
    reference = launch(unpacked, tmp_path, {**env, "PRUNE_LAB_CACHE_DIR": str(tmp_path / "cache_ref")}, *PACKED,
                       "hydra.launcher.runs_per_task=1", "hydra.launcher.cpus_per_task=1",
                       f"hydra.launcher.name={name}_ref", *grid)
    # Mid-way: at least one run finished, and one not finished is early in its dense training (at most a third
    # of its epochs done, so that it cannot finish before the signal lands), with an epoch checkpoint.
    def early(run_dir: Path) -> bool:
        try:
            done = (run_dir / "metrics.jsonl").read_text().count('"phase": "dense"')
        except OSError:
            return False
        return 0 < done <= epochs // 3

    deadline = time.monotonic() + 400
    while True:
        finished = [p.parent for p in results_below(packed)]
        under_way = [p for p in packed.glob("*/checkpoints/dense.partial.pt")
                     if p.parent.parent not in finished and early(p.parent.parent)]
        if finished and under_way:
            break
        assert proc.poll() is None, proc.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "never a moment with a run finished and another under way"
        time.sleep(0.05)
    job_id = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout.strip()
    assert job_id, "the packed task is not in squeue"
    if how == "time_limit":  # SLURM's warning before the limit, as submitit's own tests send it
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=60)
    else:  # what preemption with requeue does: kill the task where it stands and put it back in the queue
        subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60)
    before = {run_dir: snapshot(run_dir) for run_dir in finished if (run_dir / "model.pt").exists()}

    out, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, out[-3000:]
    ref_out, _ = reference.communicate(timeout=600)
    assert reference.returncode == 0, ref_out[-3000:]
    assert "Submitted 4 run(s) as 1 packed task(s) of up to 4" in out, out[-3000:]

    runs = {p.parent.name: p.parent for p in results_below(packed)}
    refs = {p.parent.name: p.parent for p in results_below(unpacked)}
    assert sorted(runs) == sorted(refs) and len(runs) == 4
    for run_dir, files in before.items():  # finished before the requeue: skipped after it, not one byte rewritten
        assert snapshot(run_dir) == files
    restarted = []
    for key, run_dir in runs.items():
        record, ref = read_json(run_dir / "results.json"), read_json(refs[key] / "results.json")
        assert computed(record["levels"]) == computed(ref["levels"]), key  # the unpacked sweep's results
        ours, theirs = torch.load(run_dir / "model.pt"), torch.load(refs[key] / "model.pt")
        for tensor_name, tensor in theirs["state_dict"].items():
            assert torch.equal(tensor, ours["state_dict"][tensor_name]), (key, tensor_name)
        run_epochs, levels = metrics(run_dir / "metrics.jsonl")
        assert len(run_epochs) == len({(r["phase"], r["epoch"]) for r in run_epochs}) == epochs + finetune
        assert (run_epochs, levels) == metrics(refs[key] / "metrics.jsonl")  # every epoch once, as unpacked
        if record["environment"].get("SLURM_RESTART_COUNT") == "1":
            restarted.append(record)
    assert restarted and any(r["resumed"] for r in restarted), "no run resumed from a checkpoint after the requeue"
    task_log = "".join(p.read_text() for p in packed.glob(".submitit/*/*_log.*"))
    assert "restart 1" in task_log, task_log[-3000:]
    if how == "time_limit":
        assert "Caught signal SIGUSR2" in task_log and "(19 remaining timeouts)" in task_log, task_log[-3000:]
    skipped = "".join(p.read_text() for d in before for p in d.glob("*.out"))
    assert skipped.count("runs job #") == len(before) or not before  # each finished run started once, not twice


def test_a_failing_run_in_a_pack_is_reported_with_its_own_log_and_a_relaunch_trains_nothing_complete(
        slurm_cluster: None, tmp_path: Path, env: dict[str, str]) -> None:
    sweep = tmp_path / "sweep"
    args = ["-m", f"hydra.sweep.dir={sweep}", *PACKED, "hydra.launcher.runs_per_task=3", "train.epochs=3",
            "train.finetune_epochs=2", "sparsity=0.5,1.5,0.7"]
    done = run_cli(*args, cwd=tmp_path, env=env, timeout=400)
    assert done.returncode == 2, done.stderr[-3000:]  # the only failure is bad input: 2, as a single run
    report = done.stdout + done.stderr
    assert "Submitted 3 run(s) as 1 packed task(s) of up to 3" in report, report[-3000:]
    assert "1 of 3 sweep job(s) failed; the other 2 finished" in report, report[-3000:]
    (bad,) = sweep.glob("sparsity=1.5*")
    own_logs = re.findall(rf"log: ({re.escape(str(bad))}/\S+)", report)
    assert f"{bad}/__main__.out" in own_logs  # the run's own log, not only the task's
    assert "sparsity=1.5 is outside [0, 1)" in (bad / "__main__.out").read_text()
    assert read_json(bad / "error.json")["kind"] == "config" and not (bad / "results.json").exists()
    complete = {p.parent: snapshot(p.parent) for p in results_below(sweep)}
    assert sorted(read_json(d / "results.json")["target_sparsity"] for d in complete) == [0.5, 0.7]
    jobs = {read_json(run_dir / "results.json")["environment"]["SLURM_JOB_ID"] for run_dir in complete}
    assert len(jobs) == 1  # the others ran in the same task: one SLURM job for all three

    # Relaunch with one more value: the complete runs get no task and are not touched; the new one and the
    # bad one (still bad) go out packed together.
    again = run_cli(*args[:-1], "sparsity=0.5,1.5,0.7,0.8", cwd=tmp_path, env=env, timeout=400)
    assert again.returncode == 2, again.stderr[-3000:]
    report = again.stdout + again.stderr
    assert "Skipped 2 complete run(s)" in report and "Submitted 2 run(s) as 1 packed task(s)" in report, report
    for run_dir, files in complete.items():
        assert snapshot(run_dir) == files
        assert not (run_dir / "checkpoints").exists()
    assert len(results_below(sweep)) == 3
