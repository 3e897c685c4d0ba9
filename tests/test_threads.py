"""torch's thread count follows what a run was given, so parallel runs do not fight over every core."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import TINY, read_json, run_cli

from prune_lab.errors import UserError
from prune_lab.threads import resolve_threads


def test_auto_follows_the_launcher_then_slurm_then_omp_then_the_free_cores(monkeypatch):
    monkeypatch.delenv("PRUNE_LAB_THREADS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(8)))
    monkeypatch.setattr("os.getloadavg", lambda: (0.2, 0.0, 0.0))
    assert resolve_threads("auto") == 8  # an idle machine: every usable core
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert resolve_threads("auto") == 2
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert resolve_threads("auto") == 3
    monkeypatch.setenv("PRUNE_LAB_THREADS", "1")
    assert resolve_threads("auto") == 1
    assert resolve_threads(2) == 2


@pytest.mark.parametrize("bad", [0, -1, "many", 1.5, True])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(UserError, match="threads="):
        resolve_threads(bad)


def test_a_run_records_the_threads_it_used(tmp_path: Path):
    proc = run_cli("hydra.run.dir=run", *TINY, cwd=tmp_path, env={"PRUNE_LAB_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr
    assert read_json(tmp_path / "run" / "results.json")["threads"] == 1
