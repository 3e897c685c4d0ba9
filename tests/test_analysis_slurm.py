"""multirun_analysis on a sweep that ran on the real single-node SLURM cluster (marker `slurm`).

The cluster fixture is conftest.py's (it starts slurm/start_local_cluster.sh, or skips outside CI).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import ON_CPU, run_cli

from multirun_analysis import load_sweep

pytestmark = pytest.mark.slurm


def test_a_slurm_sweep_with_failed_jobs_is_read_like_a_local_one(slurm_cluster, tmp_path: Path):
    sweep = tmp_path / "sweep"
    env = {"OMP_NUM_THREADS": "1", "PRUNE_LAB_CACHE_DIR": str(tmp_path / "cache")}
    done = run_cli("-m", f"hydra.sweep.dir={sweep}", *ON_CPU, "init=xavier_normal,kaiming_uniform", "seed=0,1",
                   "sparsity=0.5,1.5", "train.epochs=2", "train.finetune_epochs=1", cwd=tmp_path, env=env)
    assert done.returncode != 0 and "sparsity=1.5" in done.stderr + done.stdout  # the bad jobs fail on the cluster
    assert (sweep / ".submitit").is_dir()

    result = load_sweep(sweep)
    assert result.runs["run_dir"].nunique() == 4 and set(result.runs["target_level"]) == {0.0, 0.5}
    assert not result.runs["run_dir"].str.contains(".submitit", regex=False).any()
    assert len(result.problems) == 4 and (result.problems["status"] == "failed (config)").all()
    assert result.problems["reason"].str.contains("sparsity=1.5").all()

    out = tmp_path / "report"
    report = run_cli(str(sweep), "--out", str(out), module="multirun_analysis", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    assert "4 complete runs, 4 not complete" in report.stdout and (out / "figures" / "tradeoff.png").exists()
