"""The sweep on a real single-node SLURM cluster (slurm/start_local_cluster.sh, started by the tests).

Outside CI, without root or apt the tests skip and say why; in CI (CI=true) they fail instead.
Tiny penguin runs on the CPU, one thread each, so several jobs share the machine.
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
from conftest import ON_CPU, ROOT, computed, metrics, read_json, results_below, run_cli

pytestmark = pytest.mark.slurm

SUBMIT = ROOT / "slurm" / "submit_sweep.sh"
TINY = ["train.epochs=3", "train.finetune_epochs=2"]
TERMINAL = ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "OUT_OF_MEMORY", "NODE_FAIL", "PREEMPTED")


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """One torch thread per run; a dense-training cache of this test's own."""
    return {"OMP_NUM_THREADS": "1", "PRUNE_LAB_CACHE_DIR": str(tmp_path / "cache"), "PRUNE_LAB_PYTHON": sys.executable}


def sacct_state(job_id: str) -> str:
    out = subprocess.run(["sacct", "-n", "-X", "-P", "-j", job_id, "-o", "State"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0].split()[0] if out.stdout.strip() else "UNKNOWN"


def wait_for_job(job_id: str, timeout: float = 400) -> str:
    deadline = time.monotonic() + timeout
    while (state := sacct_state(job_id)) not in TERMINAL:
        assert time.monotonic() < deadline, f"job {job_id} still {state} after {timeout}s"
        time.sleep(2)
    return state


def snapshot(run_dir: Path) -> dict[str, tuple[int, bytes]]:
    return {name: ((run_dir / name).stat().st_mtime_ns, (run_dir / name).read_bytes())
            for name in ("results.json", "metrics.jsonl", "model.pt")}


def test_submitted_sweep_returns_all_results_and_a_relaunch_trains_only_new_runs(
        slurm_cluster: None, tmp_path: Path, env: dict[str, str]) -> None:
    sweep = tmp_path / "sweep"
    grid = ["init=xavier_normal,kaiming_uniform", *ON_CPU, *TINY]
    submitted = subprocess.run([str(SUBMIT), str(sweep), *grid, "seed=0,1"], cwd=tmp_path, capture_output=True,
                               text=True, timeout=60, env={**os.environ, **env})
    assert submitted.returncode == 0, submitted.stderr
    driver = (sweep / ".driver" / "jobid").read_text().strip()
    assert f"driver log   : {sweep}/.driver/driver-{driver}.log" in submitted.stdout
    assert wait_for_job(driver) == "COMPLETED", (sweep / ".driver" / f"driver-{driver}.log").read_text()[-3000:]

    first = {p.parent: read_json(p) for p in results_below(sweep)}
    assert sorted((r["init"], r["seed"]) for r in first.values()) == [
        ("kaiming_uniform", 0), ("kaiming_uniform", 1), ("xavier_normal", 0), ("xavier_normal", 1)]
    for run_dir, record in first.items():
        assert f"init={record['init']}" in run_dir.name and f"seed={record['seed']}" in run_dir.name
        assert record["environment"]["SLURM_JOB_ID"] and record["environment"]["SLURM_JOB_PARTITION"] == "cpu"
        assert [level["name"] for level in record["levels"]] == ["dense", "pruned"]
    before = {run_dir: snapshot(run_dir) for run_dir in first}

    # The same sweep with one more seed, into the same folder: only the two new runs train.
    again = run_cli("-m", f"hydra.sweep.dir={sweep}", *grid, "seed=0,1,2", cwd=tmp_path, env=env, timeout=400)
    assert again.returncode == 0, again.stderr[-3000:]
    after = {p.parent: read_json(p) for p in results_below(sweep)}
    new = sorted(set(after) - set(first))
    assert len(after) == 6 and {after[d]["seed"] for d in new} == {2}
    for run_dir in first:  # not one byte, not one timestamp changed; no checkpoint folder was even created
        assert snapshot(run_dir) == before[run_dir]
        assert not (run_dir / "checkpoints").exists()
    # The launcher saw their results and submitted no job for them: the new array has the two new runs only.
    assert "Skipped 4 complete run(s)" in again.stdout + again.stderr
    array = after[new[0]]["environment"]["SLURM_ARRAY_JOB_ID"]
    assert after[new[1]]["environment"]["SLURM_ARRAY_JOB_ID"] == array
    assert len(list(sweep.glob(f".submitit/{array}_*/{array}_*_0_log.out"))) == 2
    assert subprocess.run(["sacct", "-n", "-X", "-P", "-j", array, "-o", "JobID"], capture_output=True,
                          text=True).stdout.split() == [f"{array}_0", f"{array}_1"]

    # Had a job been started for a complete run, the run itself skips it too (proved here without the launcher).
    (old_run, record), *_ = first.items()
    rerun = run_cli(f"hydra.run.dir='{old_run}'", *record["overrides"], cwd=tmp_path, env=env)  # quoted: , and =
    assert rerun.returncode == 0 and f"{old_run} is already complete" in rerun.stdout
    assert snapshot(old_run) == before[old_run]


def test_a_failed_job_is_reported_with_its_log_and_the_others_keep_their_results(
        slurm_cluster: None, tmp_path: Path, env: dict[str, str]) -> None:
    sweep = tmp_path / "sweep"
    done = run_cli("-m", f"hydra.sweep.dir={sweep}", *ON_CPU, *TINY, "sparsity=0.5,1.5", cwd=tmp_path, env=env,
                   timeout=400)
    assert done.returncode != 0
    report = done.stdout + done.stderr
    assert "1 of 2 sweep job(s) failed; the other 1 finished" in report, report[-3000:]
    err_logs = re.findall(r"log: (\S+_log\.err)", report)
    assert err_logs, report[-3000:]
    assert "sparsity=1.5 is outside [0, 1)" in Path(err_logs[0]).read_text()
    assert [read_json(p)["target_sparsity"] for p in results_below(sweep)] == [0.5]
    failed = next(sweep.glob("*sparsity=1.5*"))
    assert read_json(failed / "error.json")["kind"] == "config" and not (failed / "results.json").exists()


def test_a_job_requeued_mid_training_resumes_and_matches_an_uninterrupted_run(
        slurm_cluster: None, tmp_path: Path, env: dict[str, str]) -> None:
    sweep, name = tmp_path / "sweep", f"requeue_{uuid.uuid4().hex[:8]}"
    # Long enough (seconds of dense training) that the requeue's SIGTERM + KillWait (2 s) lands mid-training
    # even on a quiet machine; 300 epochs once finished inside that window, and the job was never restarted.
    args = ["device=cpu", "seed=5", "sparsity=0.6", "train.epochs=1200", "train.finetune_epochs=30",
            "train.batch_size=16", "train.checkpoint_every_s=0"]
    launcher = subprocess.Popen(
        [sys.executable, "-m", "prune_lab", "-m", f"hydra.sweep.dir={sweep}", *ON_CPU[:-1],
         f"hydra.launcher.name={name}", *args], cwd=tmp_path, env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not list(sweep.glob("*/checkpoints/dense.partial.pt")):  # a few epochs into 1200
        assert launcher.poll() is None, launcher.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the job never wrote an epoch checkpoint"
        time.sleep(0.05)
    job_id = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout.strip()
    assert job_id, "the job is not in squeue"
    # What preemption with requeue does: kill the job where it stands and put it back in the queue.
    subprocess.run(["scontrol", "requeue", job_id], check=True, timeout=60)

    # The uninterrupted reference: the same run, locally, while the job waits to start again.
    reference = run_cli(f"hydra.run.dir={tmp_path / 'reference'}", *args, cwd=tmp_path,
                        env={**env, "PRUNE_LAB_CACHE_DIR": str(tmp_path / "cache_ref")})
    assert reference.returncode == 0, reference.stderr[-3000:]

    out, _ = launcher.communicate(timeout=400)
    assert launcher.returncode == 0, out[-3000:]
    (run_dir,) = [p.parent for p in results_below(sweep)]
    record = read_json(run_dir / "results.json")
    assert record["environment"]["SLURM_RESTART_COUNT"] == "1", record["environment"]
    assert record["resumed"] and record["resumed"][0]["phase"] == "dense", record["resumed"]
    ref_dir = tmp_path / "reference"
    assert computed(record["levels"]) == computed(read_json(ref_dir / "results.json")["levels"])
    ours, theirs = torch.load(run_dir / "model.pt"), torch.load(ref_dir / "model.pt")
    for key, tensor in theirs["state_dict"].items():
        assert torch.equal(tensor, ours["state_dict"][key]), key
    epochs, levels = metrics(run_dir / "metrics.jsonl")
    assert len(epochs) == len({(r["phase"], r["epoch"]) for r in epochs}) == 1230  # no epoch twice
    assert (epochs, levels) == metrics(ref_dir / "metrics.jsonl")


def test_a_gpu_profile_job_gets_a_gpu_by_gres_and_sees_cuda_visible_devices(
        slurm_cluster: None, tmp_path: Path, env: dict[str, str]) -> None:
    sweep = tmp_path / "sweep"
    done = run_cli("-m", f"hydra.sweep.dir={sweep}", "hydra/launcher=slurm_gpu", "hydra.launcher.cpus_per_task=1",
                   "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10", "device=cpu", *TINY, cwd=tmp_path,
                   env=env, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    (result,) = results_below(sweep)
    environment = read_json(result)["environment"]
    assert environment["SLURM_JOB_PARTITION"] == "gpu"
    assert environment["CUDA_VISIBLE_DEVICES"] == "0"  # set by SLURM from the fake GPU it allocated
    tres = subprocess.run(["sacct", "-n", "-X", "-P", "-j", environment["SLURM_JOB_ID"], "-o", "AllocTRES"],
                          capture_output=True, text=True).stdout
    assert "gres/gpu=1" in tres, tres
    (script,) = sweep.glob(".submitit/*/*submission.sh")
    assert "#SBATCH --gres=gpu:1" in script.read_text()


def test_a_job_at_its_time_limit_requeues_itself_and_resumes(
        slurm_cluster: None, tmp_path: Path, env: dict[str, str]) -> None:
    # SLURM warns a job signal_delay_s before its limit with SIGUSR2 (--signal); send that warning now, as
    # submitit's own tests do: submitit checkpoints the launcher's call and requeues the job (max_num_timeout).
    sweep, name = tmp_path / "sweep", f"timeout_{uuid.uuid4().hex[:8]}"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "prune_lab", "-m", f"hydra.sweep.dir={sweep}", *ON_CPU, f"hydra.launcher.name={name}",
         "train.epochs=300", "train.finetune_epochs=5", "train.batch_size=16", "train.checkpoint_every_s=0"],
        cwd=tmp_path, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 300
    while not list(sweep.glob("*/checkpoints/dense.partial.pt")):
        assert launcher.poll() is None, launcher.stdout.read()[-3000:]
        assert time.monotonic() < deadline, "the job never wrote an epoch checkpoint"
        time.sleep(0.05)
    job_id = subprocess.run(["squeue", "-h", "-n", name, "-o", "%i"], capture_output=True, text=True).stdout.strip()
    subprocess.run(["scancel", "--signal=USR2", job_id], check=True, timeout=60)

    out, _ = launcher.communicate(timeout=400)
    assert launcher.returncode == 0, out[-3000:]
    (result,) = results_below(sweep)
    record = read_json(result)
    assert record["environment"]["SLURM_RESTART_COUNT"] == "1"
    assert record["resumed"] and record["resumed"][0]["phase"] == "dense", record["resumed"]
    log = "".join(p.read_text() for p in sweep.glob(".submitit/*/*_0_log.*"))
    assert "Caught signal SIGUSR2" in log and "(19 remaining timeouts)" in log, log[-3000:]
    epochs, _ = metrics(result.parent / "metrics.jsonl")
    assert len(epochs) == len({(r["phase"], r["epoch"]) for r in epochs}) == 305
