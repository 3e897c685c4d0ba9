"""Launcher profiles (conf/hydra/launcher/*.yaml) without a cluster: what each sends to sbatch, command-line
overrides, and the local parallel launcher keeping every result when one job fails."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import ROOT, read_json, results_below, run_cli
from hydra import compose, initialize_config_dir
from hydra.core.plugins import Plugins
from hydra.plugins.launcher import Launcher
from hydra.utils import instantiate

import prune_lab.config  # noqa: F401  (registers the resolvers the configs use: the tests compose without the CLI)

PROFILES = sorted(p.stem for p in (ROOT / "conf" / "hydra" / "launcher").glob("*.yaml"))
SLURM_PROFILES = [p for p in PROFILES if p.startswith("slurm")]


def launcher(profile: str, tmp_path: Path, *overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={profile}", f"hydra.sweep.dir={tmp_path}", *overrides],
                      return_hydra_config=True)
    node = cfg.hydra.launcher
    node.submitit_folder = str(tmp_path / ".submitit" / "%j")  # resolved outside a Hydra run
    node.name = "prune_lab"
    return instantiate(node)


def sbatch_lines(profile: str, tmp_path: Path, *overrides: str) -> list[str]:
    executor, _ = launcher(profile, tmp_path, *overrides).executor()
    text = executor._executor._make_submission_file_text("python -m x", "uid")  # what sbatch would get
    return [line for line in text.splitlines() if line.startswith("#SBATCH")]


def test_every_profile_is_a_discovered_hydra_launcher() -> None:
    discovered = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
    assert {"slurm_cpu", "slurm_gpu", "local"} <= set(PROFILES)
    for profile in PROFILES:
        target = re.search(r"^_target_: (\S+)", (ROOT / "conf/hydra/launcher" / f"{profile}.yaml").read_text(), re.M)
        assert target and target.group(1) in discovered, profile


@pytest.mark.parametrize("profile", SLURM_PROFILES)
def test_slurm_profiles_request_requeue_a_capped_array_and_a_time_limit(profile: str, tmp_path: Path) -> None:
    lines = sbatch_lines(profile, tmp_path)
    assert "#SBATCH --requeue" in lines  # preemption / node failure put the job back in the queue
    assert any(re.fullmatch(r"#SBATCH --signal=USR2@\d+", line) for line in lines)  # time-out: requeue in time
    assert any(line.startswith("#SBATCH --time=") for line in lines)
    assert any(line.startswith("#SBATCH --partition=") for line in lines)
    assert launcher(profile, tmp_path).params["max_num_timeout"] > 0  # submitit requeues after a time-out


def test_gpu_profile_asks_for_one_gpu_by_gres_and_the_command_line_overrides_it(tmp_path: Path) -> None:
    lines = sbatch_lines("slurm_gpu", tmp_path)
    assert "#SBATCH --gres=gpu:1" in lines and "#SBATCH --partition=gpu" in lines
    lines = sbatch_lines("slurm_gpu", tmp_path, "hydra.launcher.gres=gpu:a100:2", "hydra.launcher.partition=big",
                         "hydra.launcher.timeout_min=30", "hydra.launcher.cpus_per_task=8", "hydra.launcher.mem_gb=40")
    for expected in ("--gres=gpu:a100:2", "--partition=big", "--time=30", "--cpus-per-task=8", "--mem=40GB"):
        assert f"#SBATCH {expected}" in lines, (expected, lines)
    assert "#SBATCH --gres=gpu:1" not in sbatch_lines("slurm_cpu", tmp_path)


@pytest.mark.slow  # an integration minute-saver: runs in CI and `make check`
@pytest.mark.parametrize("warm", [True, False])
def test_local_profile_keeps_every_result_when_one_job_fails(tmp_path: Path, warm: bool) -> None:
    sweep = tmp_path / "sweep"
    done = run_cli("-m", "hydra/launcher=local", "hydra.launcher.parallelism=2", "hydra.launcher.gpus_per_node=0",
                   f"hydra.launcher.warm={str(warm).lower()}",
                   f"hydra.sweep.dir={sweep}", "sparsity=0.5,1.5", "train.epochs=2", "train.finetune_epochs=1",
                   "device=cpu", cwd=tmp_path, env={"OMP_NUM_THREADS": "1",
                                                    "PRUNE_LAB_CACHE_DIR": str(tmp_path / "cache")})
    assert done.returncode == 2  # every failure is bad input: 2, as a single run (1 when a job crashed)
    report = done.stdout + done.stderr
    assert "1 of 2 sweep job(s) failed; the other 1 finished" in report, report[-3000:]
    assert "sweep: 2 ended, 0 running, 0 left; 1 failed" in report  # where the sweep stands, as jobs end
    # warm workers: the run's own console log in its folder; one process per job: submitit's .err of the job
    (err_log,) = set(re.findall(r"log: (\S+__main__\.out)" if warm else r"log: (\S+_log\.err)", report))
    assert "sparsity=1.5 is outside [0, 1)" in Path(err_log).read_text()
    assert re.search(r"run folder: \S+sparsity=1\.5", report)
    assert [read_json(p)["target_sparsity"] for p in results_below(sweep)] == [0.5]


def test_packing_auto_fills_each_task_and_keeps_the_array_within_array_parallelism(tmp_path: Path) -> None:
    slurm = launcher("slurm_cpu", tmp_path, "hydra.launcher.cpus_per_task=4", "hydra.launcher.array_parallelism=10")
    assert slurm._packed(8) == 4  # few runs: one per worker of a task (4 CPUs: 4 workers)
    assert slurm._packed(1000) == 100  # many: 10 tasks at once run them all
    assert launcher("slurm_cpu", tmp_path, "hydra.launcher.runs_per_task=7")._packed(1000) == 7
    assert launcher("slurm_gpu", tmp_path)._packed(1000) == 1  # the GPU profile does not pack unless asked
    lines = sbatch_lines("slurm_cpu", tmp_path, "hydra.launcher.runs_per_task=10")
    assert not any("runs_per_task" in line or "workers_per_task" in line for line in lines)  # ours, not sbatch's
