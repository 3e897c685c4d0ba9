"""A sweep reports each failure once (the line as its job ends; the summary names the folder; the last line
counts), and skip_absent_data (size=debug) skips a run whose data files are absent with one line instead.

The absent dataset is a real one: Cora, looked for in an empty $PRUNE_LAB_DATA_DIR (penguins needs no files).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_cli

LAUNCHERS = [pytest.param([], id="one_process"),
             pytest.param(["hydra/launcher=local", "hydra.launcher.parallelism=2"], id="warm",
                          marks=pytest.mark.slow)]  # warm workers: a minute
SWEEP = ["-m", "dataset=penguins,cora", "train.epochs=2", "device=cpu", "threads=1"]
REASON = "lacks ind.cora.x"  # in the reason of the cora job's failure


def sweep(tmp_path: Path, launcher: list[str], *extra: str):
    empty = tmp_path / "no_data"
    empty.mkdir(exist_ok=True)
    proc = run_cli(*SWEEP, *launcher, *extra, f"hydra.sweep.dir={tmp_path / 'sweep'}", f"cache_dir={tmp_path / 'c'}",
                   cwd=tmp_path, env={"PRUNE_LAB_DATA_DIR": str(empty)})
    return proc, proc.stdout + proc.stderr


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_a_failed_run_is_reported_once(tmp_path: Path, launcher: list[str]) -> None:
    proc, out = sweep(tmp_path, launcher)
    assert proc.returncode == 2, out[-3000:]  # every failure is bad input
    assert out.count(REASON) == 1, out[-4000:]
    cora = next((tmp_path / "sweep").glob("dataset=cora*"))
    assert f"    {cora}\n" in out  # the summary names the folder
    assert "1 of 2 sweep job(s) failed; the other 1 finished" in out and "Error executing job" not in out
    assert REASON in json.loads((cora / "error.json").read_text())["error"]
    assert (next((tmp_path / "sweep").glob("dataset=penguins*")) / "results.json").is_file()


@pytest.mark.parametrize("launcher", LAUNCHERS)
def test_skip_absent_data_skips_the_run_with_one_line(tmp_path: Path, launcher: list[str]) -> None:
    proc, out = sweep(tmp_path, launcher, "skip_absent_data=true")
    assert proc.returncode == 0, out[-3000:]
    assert out.count(REASON) == 1, out[-4000:]
    assert "skipped, its data is absent" in out and "skipped (data absent)        1" in out
    assert "FAILED" not in out and "sweep job(s) failed" not in out
    cora = next((tmp_path / "sweep").glob("dataset=cora*"))
    error = json.loads((cora / "error.json").read_text())
    assert error["status"] == "skipped" and error["kind"] == "data_absent" and not (cora / "results.json").exists()
    # the same sweep again: penguins is complete, cora still absent and still skipped (not "complete")
    again, out = sweep(tmp_path, launcher, "skip_absent_data=true")
    assert again.returncode == 0 and "skipped (already complete)   1" in out and out.count(REASON) == 1, out[-3000:]


def test_size_debug_sets_skip_absent_data_and_a_single_run_says_so(tmp_path: Path) -> None:
    proc = run_cli("experiment=init_robustness", "size=debug", "--cfg", "job", cwd=tmp_path)
    assert proc.returncode == 0 and "skip_absent_data: true" in proc.stdout, proc.stderr[-2000:]
    empty = tmp_path / "no_data"
    empty.mkdir()
    run = run_cli("dataset=cora", "skip_absent_data=true", f"hydra.run.dir={tmp_path / 'r'}", cwd=tmp_path,
                  env={"PRUNE_LAB_DATA_DIR": str(empty)})
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [line for line in (run.stdout + run.stderr).splitlines() if REASON in line]
    assert len(lines) == 1 and lines[0].startswith("prune_lab: skipped, its data is absent")
