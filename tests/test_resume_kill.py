"""kill -9 of a local run mid-training, then the same command again: it resumes and ends exactly where an
uninterrupted run ends (levels, final weights, metrics), and nothing half-written is read as a result."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import torch
from conftest import ROOT, computed, metrics, read_json  # noqa: F401  (computed: test_resume_pruners)

from prune_lab.results import read_results

# Penguins, a batch of 16 (14 steps an epoch) so most of the time is spent inside epochs; a checkpoint
# at every epoch end. One thread: the reference and the killed run must compute the same way.
EPOCHS = 20
ARGS = ["device=cpu", "seed=7", "sparsity=0.5", f"train.epochs={EPOCHS}", f"train.finetune_epochs={EPOCHS}",
        "train.batch_size=16", "train.checkpoint_every_s=0"]


def start(run_dir: Path, cache: Path, *overrides: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1", "PRUNE_LAB_CACHE_DIR": str(cache)}
    return subprocess.Popen([sys.executable, "-m", "prune_lab", f"hydra.run.dir={run_dir}", *ARGS, *overrides],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc: subprocess.Popen[str]) -> str:
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out[-3000:]
    return out


def wait_for_any(folder: Path, pattern: str, proc: subprocess.Popen[str], timeout: float = 120) -> None:
    """Until a file matching `pattern` is in `folder` (polled every 10 ms; the run must still be going)."""
    deadline = time.monotonic() + timeout
    while not list(folder.glob(pattern)):
        assert proc.poll() is None, f"the run ended before {folder / pattern} appeared:\n{proc.stdout.read()[-3000:]}"
        assert time.monotonic() < deadline, f"{folder / pattern} did not appear within {timeout}s"
        time.sleep(0.01)


def test_kill_9_mid_training_then_rerun_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    ref_proc = start(reference, tmp_path / "cache_ref")  # runs alongside; separate dense caches, so the
    proc = start(killed, tmp_path / "cache_killed")      # killed run really trains (and resumes) its dense phase

    # Dense finished, fine-tuning under way with at least one epoch checkpoint: kill it without warning.
    wait_for_any(killed / "checkpoints", "finetune.partial.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not (killed / "results.json").exists()
    assert read_results(killed) is None  # whatever is in the folder, nothing reads as a finished run
    assert (killed / "checkpoints" / "dense.done.pt").exists()

    out = finish(start(killed, tmp_path / "cache_killed"))  # the same command again
    assert "phase finetune resumes from its checkpoint at epoch" in out, out[-3000:]
    finish(ref_proc)

    ref, res = read_json(reference / "results.json"), read_json(killed / "results.json")
    assert res["resumed"][0] == {"phase": "dense", "restored": True}
    assert res["resumed"][1]["phase"] == "finetune" and 1 <= res["resumed"][1]["from_epoch"] < EPOCHS
    assert ref["resumed"] == []
    assert computed(res["levels"]) == computed(ref["levels"])  # every accuracy, loss and sparsity, bit for bit
    assert res["config_hash"] == ref["config_hash"]

    ref_model = torch.load(reference / "model.pt", weights_only=False)
    res_model = torch.load(killed / "model.pt", weights_only=False)
    assert ref_model["state_dict"].keys() == res_model["state_dict"].keys()
    for name, tensor in ref_model["state_dict"].items():
        assert torch.equal(tensor, res_model["state_dict"][name]), name
    for name, keep in ref_model["masks"].items():
        assert torch.equal(keep, res_model["masks"][name]), name

    # The live log got the epochs between the last checkpoint and the kill twice; the final rewrite keeps one.
    epochs, levels = metrics(killed / "metrics.jsonl")
    assert len(epochs) == len({(r["phase"], r["epoch"]) for r in epochs}) == 2 * EPOCHS
    assert (epochs, levels) == metrics(reference / "metrics.jsonl")  # losses and accuracies of every epoch
    assert not list(killed.glob("checkpoints/*.pt"))  # cleared once results were written
