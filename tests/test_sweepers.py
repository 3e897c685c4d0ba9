"""The task function returns the configured objective, so Hydra's own sweepers optimise prune_lab runs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import yaml
from conftest import read_json, results_below, run_cli

from prune_lab.errors import UserError
from prune_lab.objectives import AreaUnderCurve, LastLevel


@pytest.mark.slow  # an integration minute-saver: runs in CI and `make check`
def test_an_optuna_sweep_of_four_trials_reports_the_best_trial(tmp_path: Path) -> None:
    pytest.importorskip("hydra_plugins.hydra_optuna_sweeper",
                        reason="hydra-optuna-sweeper is not installed: pip install -e '.[optuna]'")
    proc = run_cli("-m", "hparams_search=lr_at_sparsity", "hydra.sweeper.n_trials=4", "hydra.sweep.dir=sweep",
                   "sparsity=0.5", "train.epochs=4", "train.finetune_epochs=2", "cache_dir=null", "log_every=0",
                   cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    trials = [read_json(p) for p in results_below(tmp_path / "sweep")]
    assert len(trials) == 4 and len({t["config"]["train"]["lr"] for t in trials}) == 4
    assert all(1e-4 <= t["config"]["train"]["lr"] <= 0.1 and t["target_sparsity"] == 0.5 for t in trials)
    # Folders name the trial by what it changed, not by the search that launched it.
    assert all("hparams_search" not in p.parent.name for p in results_below(tmp_path / "sweep"))
    best = max(trials, key=lambda t: t["levels"][-1]["val_acc"])
    reported = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    assert reported["best_value"] == best["levels"][-1]["val_acc"]
    assert reported["best_params"]["train.lr"] == best["config"]["train"]["lr"]
    assert f"Best value: {best['levels'][-1]['val_acc']}" in proc.stdout + proc.stderr


RESULTS = {"levels": [{"sparsity": 0.0, "val_acc": 0.9, "name": "dense"},
                      {"sparsity": 0.5, "val_acc": 0.8, "name": "r1"},
                      {"sparsity": 0.75, "val_acc": 0.4, "name": "r2"}]}


def test_objectives_read_the_levels() -> None:
    assert LastLevel()(RESULTS) == 0.4
    # Trapezoids: 0.5 * (0.9+0.8)/2 + 0.25 * (0.8+0.4)/2 = 0.575, over a span of 0.75.
    assert math.isclose(AreaUnderCurve()(RESULTS), 0.575 / 0.75)
    assert AreaUnderCurve()({"levels": RESULTS["levels"][:1]}) == 0.9
    with pytest.raises(UserError, match="objective.metric='val_accuracy' is not a number.*val_acc"):
        LastLevel("val_accuracy")(RESULTS)


def test_a_bad_objective_stops_before_training(tmp_path: Path) -> None:
    proc = run_cli("hydra.run.dir=run", "objective._target_=prune_lab.objectives.Nowhere", "cache_dir=null",
                   cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "prune_lab: error: objective: cannot build prune_lab.objectives.Nowhere")
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
