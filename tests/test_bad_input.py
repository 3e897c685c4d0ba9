"""Bad input: one clear line before any training, a non-zero exit, and no results.

"One line" is checked for every case: stderr holds exactly one line, the `prune_lab: error:` line.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import pytest
from conftest import SHARED_DATA, results_below, run_cli, write_cifar10_files

CASES = {
    "sparsity_above_one": (["sparsity=1.5"], "outside [0, 1)"),
    "negative_sparsity": (["sparsity=-0.1"], "outside [0, 1)"),
    "zero_lr": (["train.lr=0"], "train.lr=0 must be a positive number"),
    "negative_lr": (["train.lr=-0.01"], "must be a positive number"),
    "negative_epochs": (["train.epochs=-1"], "train.epochs=-1"),
    "non_integer_seed": (["seed=abc"], "seed='abc' must be an integer"),
    "float_seed": (["seed=1.5"], "must be an integer"),
    "seed_beyond_the_rngs": (["seed=99999999999999999999"],
                             "seed=99999999999999999999 must be in [-9223372036854775808, 9223372036854775807]"),
    "keep_checkpoints_not_a_boolean": (["keep_checkpoints=maybe"], "keep_checkpoints='maybe' must be true or false"),
    "conv_net_on_penguins": (["model=conv2"], "needs images"),
    "mnist_missing_offline": (["dataset=mnist", "dataset.data_dir=nodata"], "train-images-idx3-ubyte.gz"),
    "cifar_missing_offline": (["dataset=cifar10", "dataset.data_dir=nodata"], "data_batch_1"),
    "unknown_scope": (["pruner.select.scope=both"], "layerwise"),
    "unknown_option": (["init=nope"], "init=nope is not an option of init: choose one of checkpoint, default,"),
    "pruner_typo": (["pruner=magnitud"], "did you mean magnitude"),
    "unknown_pruner": (["pruner=nonexistent"], "pruner=nonexistent is not an option of pruner"),
    "key_typo": (["train.lrr=0.1"], "train.lrr is not a setting: did you mean train.lr?"),
    "nested_key_typo": (["pruner.select.scop=global"], "did you mean pruner.select.scope?"),
    "group_typo": (["prunr=magnitude"], "prunr is not a setting: did you mean pruner"),
    "unknown_key": (["nonsense=1"], "nonsense is not a setting"),
    "added_top_level_key": (["+foo=1"], "+foo=1 adds a top-level setting that prune_lab does not read"),
    "added_top_level_typo": (["+seeds=1"], "Did you mean seed=1? The top-level settings are: cache_dir,"),
    "added_key_typo": (["+train.lrr=0.1"], "train.lrr is not a setting of prune_lab.training.TrainSettings (its "
                                           "settings: optimizer, lr,"),
    "added_key_of_a_score": (["+pruner.score.bogus=1"],
                             "pruner.score.bogus is not a setting of prune_lab.pruners.scores.Magnitude (it takes "
                             "no settings); drop the override"),
    "bad_override_syntax": (["seed=[1"], "cannot read the override 'seed=[1'"),
    "layer_collapse_certain": (["sparsity=0.999"], "layer collapse"),
    "unknown_measure": (["measure=fast"], "measure='fast' is not one of cheap, slim, latency"),
    "score_typo": (["pruner/score=magnitud"], "did you mean magnitude"),
    "score_that_needs_training_at_init": (["pruner=snip", "pruner/score=movement"],
                                          "pruner/score=movement accumulates its scores while the network trains"),
}


def assert_one_line(proc, expected: str) -> str:
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr  # one line, not Hydra's page or a traceback
    assert lines[0].startswith("prune_lab: error: ") and expected in lines[0], proc.stderr
    return lines[0]


@pytest.mark.parametrize("case", CASES)
def test_bad_input_is_refused_before_training(tmp_path: Path, case: str):
    args, expected = CASES[case]
    proc = run_cli(*args, "hydra.run.dir=run", cwd=tmp_path, timeout=120)
    line = assert_one_line(proc, expected)
    assert "+train.lrr" not in line  # never the advice that adds the typo'd key
    assert not results_below(tmp_path)
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert not metrics.exists(), "no epoch may have been trained"


def test_missing_data_folder_names_the_folder_and_what_to_do(tmp_path: Path):
    proc = run_cli("dataset=mnist", f"dataset.data_dir={tmp_path / 'offline'}", "hydra.run.dir=run", cwd=tmp_path)
    line = assert_one_line(proc, "dataset.download=true")
    assert str(tmp_path / "offline" / "MNIST" / "raw") in line
    assert "dataset.download=true" in line and "PRUNE_LAB_DATA_DIR" in line
    assert (tmp_path / "run" / "error.json").exists()


@pytest.mark.parametrize("where", ["hydra.run.dir", "hydra.sweep.dir", "cache_dir"])
def test_an_unwritable_folder_is_named_in_one_line_before_anything_runs(tmp_path: Path, where: str):
    (tmp_path / "a_file").write_text("not a folder")
    target = tmp_path / "a_file" / "sub"
    args = ["-m", f"hydra.sweep.dir={target}"] if where == "hydra.sweep.dir" else [f"{where}={target}"]
    if where == "cache_dir":
        args.append(f"hydra.run.dir={tmp_path / 'run'}")
    proc = run_cli(*args, cwd=tmp_path, timeout=120)
    line = assert_one_line(proc, str(tmp_path / "a_file"))
    assert where in line and ("not a folder" in line or "not a writable folder" in line)
    assert not results_below(tmp_path) and not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_truncated_unpacked_mnist_file_without_its_gz_names_the_file_and_the_fix(tmp_path: Path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for gz in (SHARED_DATA / "MNIST" / "raw").glob("*.gz"):
        with gzip.open(gz, "rb") as f:
            (raw / gz.stem).write_bytes(f.read())
    images = raw / "train-images-idx3-ubyte"
    images.write_bytes(images.read_bytes()[: 2 * 2**20])  # what a kill during the unpack left
    proc = run_cli("dataset=mnist", f"dataset.data_dir={tmp_path / 'data'}", "hydra.run.dir=run", cwd=tmp_path)
    line = assert_one_line(proc, str(images))
    assert "truncated (2097152 of 47040016 bytes)" in line and "train-images-idx3-ubyte.gz" in line


def test_a_truncated_cifar_batch_without_md5_checks_names_the_file(tmp_path: Path):
    folder = write_cifar10_files(tmp_path / "data", per_batch=20, n_test=20)
    batch = folder / "data_batch_3"
    batch.write_bytes(batch.read_bytes()[:1000])
    proc = run_cli("dataset=cifar10", f"dataset.data_dir={tmp_path / 'data'}", "dataset.verify_md5=false",
                   "model=conv2", "hydra.run.dir=run", cwd=tmp_path)
    line = assert_one_line(proc, str(batch))
    assert "cifar-10-python.tar.gz" in line


def test_a_typo_in_a_sweep_is_one_line_too(tmp_path: Path):
    proc = run_cli("-m", "train.lrr=0.1,0.2", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path, timeout=120)
    assert_one_line(proc, "did you mean train.lr?")


def test_adding_a_group_or_forcing_a_key_is_not_an_unread_setting() -> None:
    from omegaconf import OmegaConf

    from prune_lab.config import check_added_keys
    from prune_lab.errors import UserError

    cfg = OmegaConf.create({"seed": 0, "train": {"lr": 0.1}, "foo": 1})
    check_added_keys(["+experiment=x", "++seed=1", "+train.extra=1", "+pruner/score=snip", "+hydra.job.x=1",
                      "+init@init.base=xavier_normal", "seed=2", "~foo"], cfg, {"experiment": "x"})
    with pytest.raises(UserError, match=r"^\+foo=1 adds a top-level setting .* top-level settings are: seed, train$"):
        check_added_keys(["+foo=1"], cfg, {"experiment": "x"})
