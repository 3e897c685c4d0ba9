"""Every option of pruner/select (conf/pruner/select/*.yaml) composes with a schedule from the command line and
reaches its target: the measured sparsity in results.json. Choosing an option by group or by its keys is the
same experiment (one config hash)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, run_cli

from prune_lab.api import compose
from prune_lab.config import compose_run
from prune_lab.record import tolerance

OPTIONS = sorted(p.stem for p in (ROOT / "conf" / "pruner" / "select").glob("*.yaml"))
# The penguin MLP's 180 prunable weights: [12, 12] and [3, 12]. Whole units (the output layer kept) land on
# multiples of 12/180, so units gets 0.4 (6 of the 12 hidden units); every other option takes 0.5 (2:4 for nm).
TARGET = {"units": 0.4}
FAST = ["threads=1", "device=cpu", "cache_dir=null", "train.epochs=3", "train.finetune_epochs=2", "seed=0"]


@pytest.mark.parametrize("option", OPTIONS)
def test_each_selection_reaches_its_target_from_the_command_line(option: str, tmp_path: Path) -> None:
    target = TARGET.get(option, 0.5)
    proc = run_cli("pruner=magnitude", f"pruner/select={option}", f"sparsity={target}", *FAST,
                   f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "run" / "results.json").read_text())
    chosen = yaml.safe_load((ROOT / "conf" / "pruner" / "select" / f"{option}.yaml").read_text())
    assert results["config"]["pruner"]["select"] == chosen  # the option's YAML, whole
    pruned = results["levels"][-1]
    assert pruned["target_sparsity"] == target
    assert abs(pruned["sparsity"] - target) <= tolerance(pruned["prunable_total"], len(pruned["layers"]))
    assert not pruned.get("off_target")


def test_global_by_group_or_by_key_is_one_experiment() -> None:
    by_group = compose_run(*compose("pruner=magnitude", "pruner/select=global")).config_hash
    by_key = compose_run(*compose("pruner=magnitude", "pruner.select.scope=global")).config_hash
    assert by_group == by_key


def test_nm_under_imp_is_refused_before_training_with_one_line_saying_what_to_set(tmp_path: Path) -> None:
    proc = run_cli("pruner=imp", "pruner/select=nm", "sparsity=0.5", *FAST, f"hydra.run.dir={tmp_path / 'run'}",
                   cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "set pruner.rate=0.5" in proc.stderr, proc.stderr
    assert not (tmp_path / "run" / "results.json").exists()
    assert "epoch" not in proc.stdout  # nothing trained
