"""prune_lab from Python: run from overrides, load a finished run; the docs' example (docs/python-api.md) runs as
written."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ROOT, read_json, run_cli

from prune_lab import load_run, run
from prune_lab.errors import UserError
from prune_lab.evaluation import evaluate

TINY = ("train.epochs=3", "train.finetune_epochs=2", "cache_dir=null", "log_every=0")


def docs_example(name: str) -> str:
    text = (ROOT / "docs" / "python-api.md").read_text()
    found = re.search(rf"<!-- example: {name} .*?-->\n```python\n(.*?)```", text, re.S)
    assert found, f"docs/python-api.md example {name} not found"
    return found.group(1)


def test_the_docs_python_example_runs_as_written(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", docs_example("python-api")], cwd=tmp_path, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = read_json(tmp_path / "runs" / "random50" / "results.json")
    assert res["pruner"] == "random" and res["target_sparsity"] == 0.5
    assert f"pruned {res['levels'][-1]['sparsity']} {res['levels'][-1]['test_acc']}" in proc.stdout
    assert re.search(r"^\d+ weights survive; 30 epochs trained$", proc.stdout, re.M), proc.stdout[-2000:]
    assert "][prune_lab][INFO] - level pruned" in proc.stdout  # progress shows in a script by default
    assert "level pruned" in (tmp_path / "runs" / "random50" / "run.log").read_text()


def test_python_and_command_line_runs_are_the_same_run(tmp_path: Path) -> None:
    result = run("pruner=random", "seed=3", *TINY, run_dir=tmp_path / "py")
    assert result.results["pruner"] == "random"
    cli = run_cli(f"hydra.run.dir={tmp_path / 'cli'}", "pruner=random", "seed=3", *TINY, cwd=tmp_path)
    assert cli.returncode == 0, cli.stderr[-2000:]
    from_cli = read_json(tmp_path / "cli" / "results.json")
    assert from_cli["config_hash"] == result.results["config_hash"]
    assert [lv["test_acc"] for lv in from_cli["levels"]] == [lv["test_acc"] for lv in result.levels]
    # The command line finds the Python run's folder complete.
    again = run_cli(f"hydra.run.dir={tmp_path / 'py'}", "pruner=random", "seed=3", *TINY, cwd=tmp_path)
    assert again.returncode == 0 and "already complete" in again.stdout


def test_a_loaded_run_gives_back_its_masks_and_a_model_that_scores_what_it_scored(tmp_path: Path) -> None:
    run("sparsity=0.5", *TINY, run_dir=tmp_path / "r")
    loaded = load_run(tmp_path / "r")
    last = loaded.levels[-1]
    kept = sum(int(m.sum()) for m in loaded.masks.values())
    assert kept == last["prunable_nonzero"] and last["sparsity"] == 0.5
    model = loaded.model()
    for name, keep in loaded.masks.items():
        assert torch.count_nonzero(dict(model.named_parameters())[name][~keep]) == 0
    from hydra.utils import instantiate

    data = instantiate(loaded.config["dataset"]).load()
    assert evaluate(model, data.test).acc == last["test_acc"]  # the same network, not a rebuilt look-alike
    epochs = [r for r in loaded.metrics() if "epoch" in r]
    assert [(r["phase"], r["epoch"]) for r in epochs] == [("dense", 1), ("dense", 2), ("dense", 3),
                                                          ("finetune", 1), ("finetune", 2)]


def test_bad_input_and_unfinished_folders_raise_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"sparsity=1\.5"):
        run("sparsity=1.5", *TINY, run_dir=tmp_path / "bad")
    with pytest.raises(UserError, match="holds no finished run"):
        load_run(tmp_path / "bad")
    # typos: the command line's one line, not Hydra's exception and its advice to append with +
    with pytest.raises(UserError, match=r"pruner=magnitud is not an option of pruner: did you mean magnitude"):
        run("pruner=magnitud", *TINY, run_dir=tmp_path / "typo")
    with pytest.raises(UserError, match=r"train\.lrr is not a setting: did you mean train\.lr\?") as caught:
        run("train.lrr=0.1", *TINY, run_dir=tmp_path / "typo")
    assert "+train" not in str(caught.value)
