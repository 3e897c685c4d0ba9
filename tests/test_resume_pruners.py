"""Every pruner survives kill -9: killed mid-training at a checkpoint and rerun, it ends exactly where an
uninterrupted run ends. Slow (three runs per pruner); the penguin case with fine-grained checks is in
test_resume_kill.py."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from conftest import ROOT, read_json
from test_resume_kill import computed, finish, start, wait_for_any

PRUNERS = sorted(p.stem for p in (ROOT / "conf" / "pruner").glob("*.yaml"))


@pytest.mark.slow
@pytest.mark.parametrize("pruner", PRUNERS)
def test_every_pruner_resumes_after_kill_9_to_the_uninterrupted_result(pruner: str, tmp_path: Path) -> None:
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    args = [f"pruner={pruner}"]  # with test_resume_kill.ARGS: penguins, 20 + 20 epochs, a checkpoint each
    ref_proc = start(reference, tmp_path / "cache_ref", *args)
    proc = start(killed, tmp_path / "cache_killed", *args)
    wait_for_any(killed / "checkpoints", "*.partial.pt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    finish(start(killed, tmp_path / "cache_killed", *args))
    finish(ref_proc)

    ref, res = read_json(reference / "results.json"), read_json(killed / "results.json")
    assert res["resumed"], "the rerun trained from scratch instead of resuming"
    assert computed(res["levels"]) == computed(ref["levels"])
    ref_model = torch.load(reference / "model.pt", weights_only=False)["state_dict"]
    res_model = torch.load(killed / "model.pt", weights_only=False)["state_dict"]
    for name, tensor in ref_model.items():
        assert torch.equal(tensor, res_model[name]), name
