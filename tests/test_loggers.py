"""logger=csv|tensorboard|mlflow|wandb, several at once: what each tracker holds, read back by its own reader."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path

import pytest
from conftest import read_json, results_below, run_cli
from tracker_readers import wandb_run

TINY = ("train.epochs=3", "train.finetune_epochs=2", "log_every=0")
TAGS = {"dataset": "penguins", "model": "penguin_mlp", "init": "default", "pruner": "magnitude"}


def needs(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        pytest.skip(f"{package} is not installed (pip install -c constraints.txt -e '.[{package}]')")


def epochs(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "epoch" in r]


@pytest.mark.slow  # an integration minute-saver: runs in CI and `make check`
def test_csv_and_tensorboard_at_once_hold_every_epoch_and_level(tmp_path: Path) -> None:
    needs("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams import plugin_data_pb2

    cache = f"cache_dir={tmp_path / 'cache'}"
    first = run_cli("hydra.run.dir=a", "logger=[csv,tensorboard]", cache, *TINY, cwd=tmp_path)
    # The second run takes its dense phase from the cache: its trackers still get those epochs.
    second = run_cli("hydra.run.dir=b", "logger=[csv,tensorboard]", cache, *TINY, cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr[-2000:] + second.stderr[-2000:]
    assert "served by the dense cache" in second.stdout
    for name in ("a", "b"):
        run = tmp_path / name
        res, history = read_json(run / "results.json"), epochs(run)
        with (run / "epochs.csv").open() as f:
            rows = list(csv.DictReader(f))
        assert [(r["phase"], int(r["epoch"]), float(r["train_loss"])) for r in rows] == [
            (r["phase"], r["epoch"], r["train_loss"]) for r in history]
        with (run / "levels.csv").open() as f:
            levels = list(csv.DictReader(f))
        assert [float(r["test_acc"]) for r in levels] == [lv["test_acc"] for lv in res["levels"]]

        acc = EventAccumulator(str(run / "tensorboard"))
        acc.Reload()
        for phase in ("dense", "finetune"):
            events = acc.Scalars(f"{phase}/train_loss")
            want = [r for r in history if r["phase"] == phase]
            assert [e.step for e in events] == [r["epoch"] for r in want]
            assert [e.value for e in events] == pytest.approx([r["train_loss"] for r in want])  # float32 there
        assert [e.value for e in acc.Scalars("level/sparsity")] == pytest.approx([0.0, 0.3])
        assert [e.value for e in acc.Scalars("level/test_acc")] == pytest.approx(
            [lv["test_acc"] for lv in res["levels"]])
        hparams = plugin_data_pb2.HParamsPluginData.FromString(
            acc.PluginTagToContent("hparams")["_hparams_/session_start_info"])
        values = {k: v.string_value or v.number_value for k, v in hparams.session_start_info.hparams.items()}
        assert values["train.lr"] == 0.01 and values["tag.pruner"] == "magnitude" and values["seed"] == 0


@pytest.mark.slow  # an integration minute-saver: runs in CI and `make check`
def test_an_mlflow_sweep_groups_its_runs_by_tag_in_a_local_store(tmp_path: Path) -> None:
    needs("mlflow")
    import mlflow

    proc = run_cli("-m", "hydra.sweep.dir=sweep", "logger=mlflow", "seed=0,1", "cache_dir=null", *TINY,
                   cwd=tmp_path, env={"MLFLOW_TRACKING_URI": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "mlflow.db").is_file()  # local by default: nothing is sent anywhere
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    sweep = "sweep"  # the sweep folder as typed under the working folder, where mlflow.db is
    runs = mlflow.search_runs(experiment_names=["prune_lab"], filter_string=f"tags.sweep = '{sweep}'")
    assert sorted(runs["tags.seed"]) == ["0", "1"] and set(runs["status"]) == {"FINISHED"}
    assert set(runs["tags.pruner"]) == {"magnitude"} and set(runs["params.train.lr"]) == {"0.01"}
    client = mlflow.tracking.MlflowClient()
    for path in results_below(tmp_path / "sweep"):
        res = read_json(path)
        row = runs[runs["tags.seed"] == str(res["seed"])].iloc[0]
        assert row["tags.mlflow.runName"] == path.parent.name
        assert row["metrics.level/test_acc"] == res["levels"][-1]["test_acc"]  # the latest step: the last level
        history = client.get_metric_history(row["run_id"], "dense/train_loss")
        assert [(m.step, m.value) for m in history] == [
            (r["epoch"], r["train_loss"]) for r in epochs(path.parent) if r["phase"] == "dense"]


@pytest.mark.slow  # an integration minute-saver: runs in CI and `make check`
def test_wandb_offline_runs_group_by_sweep_with_tags_config_and_history(tmp_path: Path) -> None:
    needs("wandb")
    proc = run_cli("-m", "hydra.sweep.dir=sweep", "logger=wandb", "seed=0,1", "cache_dir=null", *TINY,
                   cwd=tmp_path, env={"WANDB_MODE": "offline", "WANDB_API_KEY": ""})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in results_below(tmp_path / "sweep"):
        res, run = read_json(path), wandb_run(path.parent)
        assert run["group"] == "sweep" and run["name"] == path.parent.name  # runs group by their sweep
        assert set(run["tags"]) == {f"{k}={v}" for k, v in {**TAGS, "seed": res["seed"]}.items()}
        assert run["config"]["train"]["lr"] == 0.01 and run["config"]["seed"] == res["seed"]
        dense = [(h["dense/epoch"], h["dense/train_loss"]) for h in run["history"] if "dense/epoch" in h]
        assert dense == [(r["epoch"], r["train_loss"]) for r in epochs(path.parent) if r["phase"] == "dense"]
        assert [h["level/test_acc"] for h in run["history"] if "level/index" in h] == [
            lv["test_acc"] for lv in res["levels"]]
        assert run["summary"]["final/test_acc"] == res["levels"][-1]["test_acc"]


PROBE = """
import runpy, sys
sys.modules[{package!r}] = None  # Python's own way to make an import fail, as if the package were absent
sys.argv = ["prune_lab", *sys.argv[1:]]
runpy.run_module("prune_lab", run_name="__main__")
"""


@pytest.mark.parametrize("logger,package", [("tensorboard", "tensorboard"), ("mlflow", "mlflow"),
                                            ("wandb", "wandb")])
def test_a_missing_tracker_package_is_one_line_before_training(tmp_path: Path, logger: str, package: str) -> None:
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-c", PROBE.format(package=package), "hydra.run.dir=run",
                           f"logger={logger}", "cache_dir=null"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"prune_lab: error: logger={logger} needs the {package} package")
    assert f"pip install -e '.[{package}]'" in line
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
