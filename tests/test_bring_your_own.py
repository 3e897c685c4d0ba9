"""Your own model through --config-dir, any torchvision architecture, and your own trained weights (init=checkpoint)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from conftest import read_json, run_cli, user_folder, write_cifar10_files


@pytest.mark.slow  # an integration minute-saver: runs in CI and `make check`
def test_a_user_model_through_config_dir_trains_prunes_and_its_code_keys_the_dense_cache(tmp_path: Path) -> None:
    user = user_folder(tmp_path / "my_project")
    env = {"PYTHONPATH": os.pathsep.join([str(user), os.environ.get("PYTHONPATH", "")])}
    args = ("model=tiny_net", "train.epochs=4", "train.finetune_epochs=2",
            f"cache_dir={tmp_path / 'cache'}", "sparsity=0.5")

    first = run_cli("--config-dir", "conf", "hydra.run.dir=runs/first", *args, cwd=user, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    res = read_json(user / "runs" / "first" / "results.json")
    assert res["model"] == "tiny_net" and res["config"]["model"]["_target_"] == "my_models.TinyNet"
    assert res["levels"][0]["params_total"] == 12 * 8 + 8 + 8 * 3 + 3  # penguins: 12 features, 3 species
    assert abs(res["levels"][-1]["sparsity"] - 0.5) < 0.02
    assert [c["hit"] for c in res["dense_cache"]] == [False]

    again = run_cli("--config-dir", "conf", "hydra.run.dir=runs/again", *args, cwd=user, env=env)
    assert again.returncode == 0, again.stderr[-3000:]
    assert [c["hit"] for c in read_json(user / "runs" / "again" / "results.json")["dense_cache"]] == [True]

    user_folder(user, act="Tanh")  # the user edits their model's code; the config is unchanged
    edited = run_cli("--config-dir", "conf", "hydra.run.dir=runs/edited", *args, cwd=user, env=env)
    assert edited.returncode == 0, edited.stderr[-3000:]
    after = read_json(user / "runs" / "edited" / "results.json")
    assert after["config_hash"] == res["config_hash"]
    assert [c["hit"] for c in after["dense_cache"]] == [False], "edited code must never reuse the old network"
    assert after["dense_cache"][0]["key"] != res["dense_cache"][0]["key"]
    assert "served by the dense cache" not in edited.stdout


def test_a_user_model_from_python_with_config_dir(tmp_path: Path, monkeypatch) -> None:
    from prune_lab import run

    user = user_folder(tmp_path / "my_project")
    monkeypatch.syspath_prepend(str(user))  # my_models importable, as PYTHONPATH makes it on the command line
    result = run("model=tiny_net", "train.epochs=2", "train.finetune_epochs=1", "cache_dir=null", "log_every=0",
                 run_dir=tmp_path / "run", config_dir=user / "conf")
    assert result.results["model"] == "tiny_net" and type(result.model()).__name__ == "TinyNet"


@pytest.mark.slow  # an integration minute-saver: runs in CI and `make check`
def test_torchvision_resnet18_prunes_cifar_files_and_init_checkpoint_reproduces_its_accuracy(tmp_path: Path) -> None:
    write_cifar10_files(tmp_path / "data", per_batch=16, n_test=24)
    data = ("dataset=cifar10", f"dataset.data_dir={tmp_path / 'data'}", "dataset.verify_md5=false",
            "dataset.val_size=16", "model=torchvision", "model.name=resnet18", "train.batch_size=32",
            "cache_dir=null", "log_every=0")
    dense = run_cli("hydra.run.dir=dense", *data, "pruner=none", "train.epochs=1", cwd=tmp_path)
    assert dense.returncode == 0, dense.stderr[-3000:]
    trained = read_json(tmp_path / "dense" / "results.json")["levels"][0]
    assert trained["params_total"] == 11_181_642  # torchvision's resnet18 with a 10-class head

    # A user's own weights file: the plain state_dict of the trained network.
    weights = tmp_path / "my_resnet18.pt"
    torch.save(torch.load(tmp_path / "dense" / "model.pt", weights_only=True)["state_dict"], weights)
    pruned = run_cli("hydra.run.dir=pruned", *data, "init=checkpoint", f"init.path={weights}", "train.epochs=0",
                     "train.finetune_epochs=1", "pruner=magnitude", "sparsity=0.5", cwd=tmp_path)
    assert pruned.returncode == 0, pruned.stderr[-3000:]
    res = read_json(tmp_path / "pruned" / "results.json")
    before, after = res["levels"]
    # The saved network, unchanged: its accuracy and loss before pruning are the ones it was saved with.
    assert (before["test_acc"], before["test_loss"]) == (trained["test_acc"], trained["test_loss"])
    assert abs(after["sparsity"] - 0.5) < 0.01 and after["params_total"] == 11_181_642
    assert len(res["config"]["init"]["sha256"]) == 16


def test_init_checkpoint_mistakes_are_one_line_before_training(tmp_path: Path) -> None:
    torch.save({"fc.weight": torch.zeros(3, 3)}, tmp_path / "other.pt")
    cases = {
        "init=checkpoint": "init=checkpoint needs the weights file: init.path=FILE",
        f"init.path={tmp_path / 'nowhere.pt'}": "no such file",
        f"init.path={tmp_path / 'other.pt'}": "does not match the model: missing ['net.1.bias', 'net.1.weight', "
                                               "'net.3.bias'], unexpected ['fc.weight']",
    }
    for override, message in cases.items():
        proc = run_cli("hydra.run.dir=run", "init=checkpoint", override, "cache_dir=null", cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith("prune_lab: error: ") and message in line, line
        assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_a_new_weights_file_at_the_same_path_is_a_new_configuration(tmp_path: Path) -> None:
    from prune_lab.api import compose
    from prune_lab.config import compose_run

    path = tmp_path / "net.pt"

    def config_hash() -> str:
        cfg, choices = compose("init=checkpoint", f"init.path={path}")
        return compose_run(cfg, choices).config_hash

    torch.save({"w": torch.zeros(2)}, path)
    first = config_hash()
    assert config_hash() == first  # the same file: the same run
    torch.save({"w": torch.ones(2)}, path)  # retrained, saved over the old file
    assert config_hash() != first
