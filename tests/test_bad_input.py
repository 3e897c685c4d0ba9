"""Bad input: one clear line before any training, a non-zero exit, and no results."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import results_below, run_cli

CASES = {
    "sparsity_above_one": (["sparsity=1.5"], "outside [0, 1)"),
    "negative_sparsity": (["sparsity=-0.1"], "outside [0, 1)"),
    "zero_lr": (["train.lr=0"], "train.lr=0 must be a positive number"),
    "negative_lr": (["train.lr=-0.01"], "must be a positive number"),
    "negative_epochs": (["train.epochs=-1"], "train.epochs=-1"),
    "non_integer_seed": (["seed=abc"], "seed='abc' must be an integer"),
    "float_seed": (["seed=1.5"], "must be an integer"),
    "conv_net_on_penguins": (["model=conv2"], "needs images"),
    "mnist_missing_offline": (["dataset=mnist", "dataset.data_dir=nodata"], "train-images-idx3-ubyte.gz"),
    "cifar_missing_offline": (["dataset=cifar10", "dataset.data_dir=nodata"], "data_batch_1"),
    "unknown_scope": (["pruner.criterion.scope=both"], "layerwise"),
    "unknown_option": (["init=nope"], "Could not find 'init/nope'"),
    "unknown_key": (["nonsense=1"], "Could not override 'nonsense'"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_before_training(tmp_path: Path, case: str):
    args, expected = CASES[case]
    proc = run_cli(*args, "hydra.run.dir=run", cwd=tmp_path, timeout=120)
    assert proc.returncode != 0
    assert expected in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not results_below(tmp_path)
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert not metrics.exists(), "no epoch may have been trained"


def test_missing_data_folder_names_the_folder_and_what_to_do(tmp_path: Path):
    proc = run_cli("dataset=mnist", f"dataset.data_dir={tmp_path / 'offline'}", "hydra.run.dir=run", cwd=tmp_path)
    line = proc.stderr.strip().splitlines()[-1]
    assert str(tmp_path / "offline" / "MNIST" / "raw") in line
    assert "dataset.download=true" in line and "PRUNE_LAB_DATA_DIR" in line
    assert (tmp_path / "run" / "error.json").exists()
