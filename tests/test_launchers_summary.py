"""What a sweep tells a newcomer in the terminal: a sweep-level ETA on each progress line, and at the end of
every sweep a short table (runs done / skipped as already complete / failed, the sweep folder, each failed run's
folder, the next command; each failure's one line printed once, as its job ends). Real local sweeps of
tiny penguin runs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from hydra_plugins.prune_lab_launchers._core import JobOutcome, Progress

WARM = ["hydra/launcher=local", "hydra.launcher.parallelism=2", "hydra.launcher.gpus_per_node=0"]
CLOCK = r"\d+:\d\d:\d\d"


def table(out: str) -> list[str]:
    """The summary's lines, without the logging prefix."""
    lines = [line.split("] ", 1)[-1] if "] " in line else line for line in out.splitlines()]
    start = max(i for i, line in enumerate(lines) if line.startswith("Sweep summary:"))
    rows = []
    for line in lines[start:]:
        if rows and not line.startswith("  "):
            break
        rows.append(line)
    return rows


def row(rows: list[str], name: str, value: str = r"\S.*") -> str:
    (found,) = [m[1] for r in rows if (m := re.fullmatch(rf"  {re.escape(name)} +({value})", r))]
    return found


def counts(rows: list[str]) -> tuple[str, str, str]:
    return tuple(row(rows, name, r"\d+") for name in ("runs done", "skipped (already complete)", "failed"))


def test_eta_is_unknown_until_a_run_ends_then_mean_time_times_runs_left_over_workers() -> None:
    progress = Progress(workers=2)
    assert progress.status(0, 2, 4).endswith("[sweep: 0 ended, 2 running, 4 left; 0 failed]  ETA ?")
    progress.end(JobOutcome(0, [], "0", status="skipped"))  # took no time: says nothing of the others
    assert progress.eta(5) == "?"
    for seconds in (10.0, 30.0):
        progress.end(JobOutcome(1, [], "1", status="completed", job_s=seconds))
    progress.end(JobOutcome(2, [], "2", status="failed", reason="x", job_s=20.0))
    assert progress.status(4, 2, 4) == "[sweep: 4 ended, 2 running, 4 left; 1 failed]  ETA 0:01:00"  # 20 s × 6 / 2
    assert progress.eta(0) == "0:00:00"


@pytest.mark.slow  # three real sweeps and an analysis: a minute or two on a busy machine
def test_a_local_sweep_shows_an_eta_and_ends_with_a_table_naming_failures_and_the_next_command(tmp_path: Path):
    sweep = tmp_path / "sweep"
    grid = ["-m", *WARM, f"hydra.sweep.dir={sweep}", *TINY, "device=cpu", "cache_dir=null", "seed=0,1",
            "sparsity=0.5,1.5"]
    first = run_cli(*grid, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})
    assert first.returncode == 2, first.stderr[-3000:]  # the two bad runs are bad input
    out = first.stdout + first.stderr
    ended = re.findall(r"#\d (?:done|FAILED) \(.*", out)
    assert len(ended) == 4 and all(re.search(rf"left; \d failed\]  ETA {CLOCK}$", line) for line in ended), ended
    rows = table(out)
    assert counts(rows) == ("2", "0", "2")
    assert row(rows, "sweep folder") == str(sweep)
    failed = [r.strip() for r in rows if r.startswith(f"    {sweep}/")]
    assert len(failed) == 2, rows
    for folder in failed:  # the failed run's folder (where its logs and error.json are)
        assert Path(folder).is_dir() and "sparsity=1.5" in Path(folder).name, folder
    # each failure's one line is printed once, as its job ends (not again in the table, nor by the run itself)
    errors = re.findall(r"sparsity=1\.5 is outside \[0, 1\)", out)
    assert len(errors) == 2, out[-3000:]
    command = row(rows, "next:")
    assert command == f"python -m multirun_analysis {sweep}"  # its report goes to {sweep}/analysis

    again = run_cli(*grid, cwd=tmp_path, env={"OMP_NUM_THREADS": "1"})  # the complete runs are skipped
    rows = table(again.stdout + again.stderr)
    assert counts(rows) == ("0", "2", "2")

    # The one-process launcher: "ETA ?" as the first run starts, a time once one has ended; the same table.
    one = tmp_path / "one"
    single = run_cli("-m", f"hydra.sweep.dir={one}", *TINY, "device=cpu", "cache_dir=null", "seed=0,1,2",
                     cwd=tmp_path)
    assert single.returncode == 0, single.stderr[-3000:]
    out = single.stdout + single.stderr
    assert "[sweep: 0 ended, 1 running, 2 left; 0 failed]  ETA ?" in out
    assert re.search(rf"\[sweep: 2 ended, 1 running, 0 left; 0 failed\]  ETA {CLOCK}", out), out[-3000:]
    rows = table(out)
    assert counts(rows) == ("3", "0", "0")
    assert not any("failed runs" in r for r in rows)
    analysis = run_cli(*shlex.split(row(rows, "next:"))[3:], cwd=tmp_path, module="multirun_analysis")
    assert analysis.returncode == 0, analysis.stderr[-3000:]  # the command it names works as printed
    assert (one / "analysis" / "report.md").is_file()
