"""A run shows its progress while it runs: logging lines on stdout (a pipe, as under SLURM) and in the job's .log."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from prune_lab.progress import Progress, clock

CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")  # anything but \t and \n: \r, ESC (colour codes), ...
EPOCH_LINE = re.compile(r"\] - (dense|finetune) +(\d+)/(\d+)  train loss [\d.]+  (val acc [\d.]+  )?"
                        r"elapsed \d+:\d\d:\d\d  ETA \d+:\d\d:\d\d$")


def messages(text: str) -> list[str]:
    """The prune_lab progress lines of a console or log-file text, without Hydra's timestamp prefix."""
    return [line.split("] - ", 1)[1] for line in text.splitlines() if "][prune_lab][INFO] - " in line]


def test_progress_streams_to_a_pipe_before_the_run_ends_and_matches_the_log_file(tmp_path: Path) -> None:
    run = tmp_path / "run"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "prune_lab", f"hydra.run.dir={run}", "train.epochs=150",
                             "train.finetune_epochs=5", "log_every=1", "cache_dir=null"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if re.search(r"\] - dense +1/150 ", line):
            # The first epoch is reported while 149 are still to train: the run is alive, nothing is written.
            assert proc.poll() is None and not (run / "results.json").exists()
            break
    else:
        raise AssertionError("no progress line for epoch 1:\n" + "".join(seen) + proc.stderr.read())
    rest, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    stdout = "".join(seen) + rest
    assert not CONTROL.search(stdout), "control characters in piped output"

    lines = messages(stdout)
    epochs = [m for m in (EPOCH_LINE.search("] - " + m) for m in lines) if m]
    assert [(m[1], int(m[2])) for m in epochs] == [("dense", e) for e in range(1, 151)] + [
        ("finetune", e) for e in range(1, 6)]
    assert any(m.startswith("level dense: sparsity 0.000") for m in lines)
    assert any(m.startswith("level pruned: sparsity 0.300") for m in lines)
    log_files = list(run.glob("*.log"))
    assert len(log_files) == 1, log_files
    assert messages(log_files[0].read_text()) == lines  # the same lines, in the same order, in the run's log
    assert not CONTROL.search(log_files[0].read_text())


@pytest.mark.slow  # an integration minute-saver: runs in CI and `make check`
def test_log_every_auto_keeps_a_long_run_short_and_metrics_keep_every_epoch(tmp_path: Path) -> None:
    proc = run_cli("hydra.run.dir=run", "train.epochs=120", "train.finetune_epochs=7", "cache_dir=null",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    dense = [m for m in messages(proc.stdout) if m.startswith("dense ")]
    finetune = [m for m in messages(proc.stdout) if m.startswith("finetune ")]
    # auto: every ceil(120/20)=6th epoch, plus the first -> 21 lines; a 7-epoch phase shows every epoch.
    assert [int(m.split()[1].split("/")[0]) for m in dense] == [1, *range(6, 121, 6)]
    assert len(finetune) == 7
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len([r for r in records if "epoch" in r]) == 127
    quiet = run_cli("hydra.run.dir=quiet", "train.epochs=3", "train.finetune_epochs=2", "cache_dir=null",
                    "log_every=0", cwd=tmp_path)
    assert quiet.returncode == 0, quiet.stderr[-3000:]
    assert [m.split(":")[0] for m in messages(quiet.stdout)] == ["level dense", "level pruned"]


def test_a_phase_served_by_the_dense_cache_or_restored_says_so(tmp_path: Path) -> None:
    args = ("train.epochs=3", "train.finetune_epochs=2", f"cache_dir={tmp_path / 'cache'}")
    first = run_cli("hydra.run.dir=a", *args, cwd=tmp_path)
    second = run_cli("hydra.run.dir=b", *args, cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert not any("dense cache" in m for m in messages(first.stdout))
    hit = [m for m in messages(second.stdout) if "served by the dense cache" in m]
    assert len(hit) == 1 and hit[0].startswith("phase dense ")
    assert not any(m.startswith("dense ") for m in messages(second.stdout)), "a cache hit trains no dense epoch"


def test_a_bad_log_every_is_one_line_before_training(tmp_path: Path) -> None:
    proc = run_cli("hydra.run.dir=run", "log_every=often", "cache_dir=null", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "prune_lab: error: log_every='often' must be auto or a whole number of epochs >= 0 (0: no epoch lines), "
        "e.g. log_every=10"]
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_epoch_selection_and_clock() -> None:
    assert [e for e in range(1, 4001) if Progress("auto").due(e, 4000)] == [1, *range(200, 4001, 200)]
    assert [e for e in range(1, 11) if Progress(3).due(e, 10)] == [1, 3, 6, 9, 10]
    assert clock(3723.4) == "1:02:03" and clock(59.6) == "0:01:00"


def test_a_sweep_says_how_many_jobs_are_done_running_and_left(tmp_path: Path):
    proc = run_cli("-m", "seed=0,1,2", *TINY, "cache_dir=null", f"hydra.sweep.dir={tmp_path}/sweep", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout + proc.stderr
    for done, left in ((0, 2), (1, 1), (2, 0)):
        assert f"[sweep: {done} ended, 1 running, {left} left; 0 failed]" in out, out[-3000:]


def test_start_up_says_what_it_is_doing_before_the_first_epoch(tmp_path: Path) -> None:
    done = run_cli("hydra.run.dir=run", "train.epochs=2", "train.finetune_epochs=1", "cache_dir=null", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = messages(done.stdout)
    first_epoch = next(i for i, m in enumerate(lines) if m.startswith("dense 1/2"))
    assert lines[:first_epoch] == ["loading penguins...", lines[1]] and lines[1].startswith(
        "data: 199 train / 67 val / 67 test; model penguin_mlp: 195 parameters, init default, on cpu with ")


def test_the_eta_leaves_out_the_first_epochs_one_off_costs(monkeypatch, caplog) -> None:
    # first epoch 10 s (start-up: the first step imports torch._dynamo), then 1 s each: 7 epochs left -> 7 s
    import logging

    from prune_lab import progress as progress_module

    now = {"t": 0.0}
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now["t"])
    sink = progress_module.Progress("auto", live=False)
    caplog.set_level(logging.INFO, logger="prune_lab")
    for epoch, t in ((1, 10.0), (2, 11.0), (3, 12.0)):
        now["t"] = t
        sink({"phase": "dense", "epoch": epoch, "epochs": 10, "step": 4 * epoch, "train_loss": 0.5})
    assert caplog.messages[-1].endswith("ETA 0:00:07"), caplog.messages  # not 0:00:28 (12 s / 3 epochs x 7)
