"""The entry point end to end, as a user types it: the default run, sweeps, determinism, skipping finished runs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import TINY, read_json, results_below, run_cli

LEVEL_METRICS = ("sparsity", "test_acc", "test_loss", "val_acc", "val_loss", "params_nonzero")


def test_default_run_trains_prunes_and_records_what_it_measured(tmp_path: Path):
    proc = run_cli("hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "dense" in proc.stdout and "pruned" in proc.stdout and "results:" in proc.stdout
    run = tmp_path / "run"
    res = read_json(run / "results.json")
    assert res["status"] == "ok" and res["seed"] == 0
    assert (res["dataset"], res["model"], res["init"], res["pruner"]) == ("penguins", "penguin_mlp", "default",
                                                                           "magnitude")
    assert set(res["versions"]) >= {"python", "torch", "prune_lab", "git_commit"} and res["wall_time_s"] > 0
    dense, pruned = res["levels"]
    assert dense["sparsity"] == 0.0 and dense["target_sparsity"] == 0.0
    assert dense["params_total"] == 12 * 12 + 12 + 12 * 3 + 3 == pruned["params_total"]
    # Measured, per layer: 30% of each layer within one weight; biases are not prunable.
    for layer in pruned["layers"].values():
        assert abs(layer["numel"] - layer["nonzero"] - 0.3 * layer["numel"]) <= 1
    assert abs(pruned["sparsity"] - 0.3) < 0.02 and pruned["prunable_total"] == 12 * 12 + 12 * 3
    assert pruned["test_acc"] > 0.9, "penguins are easy: a broken pipeline shows here"
    # The saved model carries its masks, and the weights are zero exactly where the masks say.
    saved = torch.load(run / "model.pt", weights_only=True)
    for name, keep in saved["masks"].items():
        assert torch.count_nonzero(saved["state_dict"][name][~keep]) == 0
    assert set(read_json(run / "masks.json")) == set(saved["masks"])
    metric_lines = (run / "metrics.jsonl").read_text().splitlines()
    assert len(metric_lines) == 100 + 50 + 2  # dense epochs + fine-tune epochs + one line per level
    assert not (run / "checkpoints").exists() and not (run / "error.json").exists()


@pytest.mark.slow  # an integration minute-saver: runs in CI and `make check`
def test_canonical_init_by_seed_sweep(tmp_path: Path):
    proc = run_cli("-m", "hydra.sweep.dir=sweep", "init=xavier_normal,kaiming_uniform", "seed=0,1,2", *TINY,
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = [read_json(p) for p in results_below(tmp_path / "sweep")]
    assert sorted((r["init"], r["seed"]) for r in found) == sorted(
        (i, s) for i in ("xavier_normal", "kaiming_uniform") for s in (0, 1, 2))
    # Folders are named by overrides (stable when the sweep grows), not by job number.
    assert (tmp_path / "sweep" / "init=xavier_normal,seed=1,train.epochs=3,train.finetune_epochs=2").is_dir()
    assert len({r["levels"][0]["test_loss"] for r in found}) == 6, "every init x seed trains its own network"


def test_sparsity_sweep_and_range_seeds(tmp_path: Path):
    proc = run_cli("-m", "hydra.sweep.dir=sweep", "sparsity=0.5,0.9", "seed=range(2)", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    found = [read_json(p) for p in results_below(tmp_path / "sweep")]
    assert sorted((r["target_sparsity"], r["seed"]) for r in found) == [(0.5, 0), (0.5, 1), (0.9, 0), (0.9, 1)]
    for r in found:
        assert abs(r["levels"][-1]["sparsity"] - r["target_sparsity"]) < 0.02


def test_same_config_and_seed_twice_gives_identical_results(tmp_path: Path):
    args = ("pruner=random", "seed=7", "init=kaiming_normal", *TINY)
    first = run_cli("hydra.run.dir=a", *args, cwd=tmp_path)
    second = run_cli("hydra.run.dir=b", *args, cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    a, b = read_json(tmp_path / "a" / "results.json"), read_json(tmp_path / "b" / "results.json")
    assert a["config_hash"] == b["config_hash"]
    for la, lb in zip(a["levels"], b["levels"]):
        assert {k: la[k] for k in LEVEL_METRICS} == {k: lb[k] for k in LEVEL_METRICS}
        assert la["layers"] == lb["layers"]
    wa = torch.load(tmp_path / "a" / "model.pt", weights_only=True)["state_dict"]
    wb = torch.load(tmp_path / "b" / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_rerun_into_a_finished_folder_skips_and_keeps_the_results(tmp_path: Path):
    assert run_cli("hydra.run.dir=run", *TINY, cwd=tmp_path).returncode == 0
    before = (tmp_path / "run" / "results.json").read_bytes()
    again = run_cli("hydra.run.dir=run", *TINY, cwd=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout
    assert (tmp_path / "run" / "results.json").read_bytes() == before
    other = run_cli("hydra.run.dir=run", "seed=3", *TINY, cwd=tmp_path)
    assert other.returncode == 2 and "another configuration" in other.stderr
    assert (tmp_path / "run" / "results.json").read_bytes() == before


def test_help_lists_groups_and_options(tmp_path: Path):
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0
    for text in ("dataset:", "pruner:", "init:", "xavier_normal", "lenet_300_100", "sparsity"):
        assert text in proc.stdout
