"""Trust at the seams: the one record contract (prune_lab.record) that the writer, the skip check, load_run and the
analysis share, and what a run reads back (a code change, a damaged artifact, another configuration's folder).

Every case here was silently wrong before the contract; each runs the real CLI on penguins with tiny budgets."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from conftest import TINY, read_json, run_cli, user_folder

from prune_lab.api import load_run
from prune_lab.errors import FolderTaken, UserError
from prune_lab.record import check_record, inspect, tolerance
from prune_lab.storage import PhaseStore

FAST = [*TINY, "device=cpu", "cache_dir=null"]


def stderr_lines(done: subprocess.CompletedProcess[str]) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.strip()]


def finished(tmp_path: Path, name: str, *overrides: str) -> Path:
    folder = tmp_path / name
    tmp_path.mkdir(parents=True, exist_ok=True)
    done = run_cli(f"hydra.run.dir={folder}", *FAST, *overrides, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    return folder


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# --- 1. divergence -------------------------------------------------------------------------------------------

def test_a_diverging_run_stops_with_one_line_and_writes_no_results(tmp_path: Path):
    folder = tmp_path / "nan"
    done = run_cli(f"hydra.run.dir={folder}", *FAST, "train.lr=1e30", cwd=tmp_path)
    assert done.returncode == 2 and len(stderr_lines(done)) == 1, done.stderr
    line = stderr_lines(done)[0]
    assert line.startswith("prune_lab: error: training diverged: the loss is nan by step ") and "phase 'dense'" in line
    assert "lower train.lr (now 1e+30)" in line
    assert not (folder / "results.json").exists()
    assert read_json(folder / "error.json")["kind"] == "diverged"


@pytest.mark.parametrize("metric", ["test_acc", "val_loss"])
def test_the_contract_refuses_non_finite_metrics(tmp_path: Path, metric: str):
    record = read_json(finished(tmp_path, "ok") / "results.json")
    assert check_record(record) is None
    record["levels"][-1][metric] = float("nan")
    assert "non-finite" in check_record(record)


def test_the_contract_refuses_a_level_whose_measured_sparsity_misses_its_target(tmp_path: Path):
    record = read_json(finished(tmp_path, "ok") / "results.json")
    level = record["levels"][-1]
    level["prunable_nonzero"] = level["prunable_total"]  # NaN weights count as nonzero: measured 0.0 of 0.3
    level["sparsity"] = 0.0
    assert "not its target" in check_record(record)
    level["off_target"] = True  # a level that says so passes, and carries its mark
    assert check_record(record) is None
    level["sparsity"] = 0.5
    assert "its counts give" in check_record(record)


# --- 2. code change between a crash and the resume ------------------------------------------------------------

def test_phases_trained_with_other_code_are_never_resumed(tmp_path: Path):
    user = user_folder(tmp_path / "project")
    env = {"PYTHONPATH": os.pathsep.join([str(user), os.environ.get("PYTHONPATH", "")])}
    args = ("--config-dir", "conf", "hydra.run.dir=run", "model=tiny_net", *FAST, "keep_checkpoints=true")
    first = run_cli(*args, cwd=user, env=env)
    assert first.returncode == 0, first.stderr[-3000:]
    (user / "run" / "results.json").unlink()  # as if killed after its phases were stored
    same = run_cli(*args, cwd=user, env=env)  # same code: every phase is restored, none trained
    assert same.returncode == 0 and {"phase": "dense", "restored": True} in read_json(
        user / "run" / "results.json")["resumed"]
    (user / "run" / "results.json").unlink()
    user_folder(user, act="Tanh")  # the user edits their model
    edited = run_cli(*args, cwd=user, env=env)
    assert edited.returncode == 0, edited.stderr[-3000:]
    assert "the code changed since" in edited.stderr and "its phases train again with this code" in edited.stderr
    assert read_json(user / "run" / "results.json")["resumed"] == []  # every phase trained with the edited code
    assert len(list((user / "run").glob("checkpoints-old-code-*"))) == 1  # the old phases kept aside, not read


def test_a_phase_store_written_by_other_code_is_set_aside_not_read(tmp_path: Path):
    store = PhaseStore(tmp_path / "checkpoints", "hash", code="a")
    store.save("dense", "done", {"model": {}, "history": []})
    assert PhaseStore(tmp_path / "checkpoints", "hash", code="a").load("dense", "done") is not None
    assert PhaseStore(tmp_path / "checkpoints", "hash", code="b").load("dense", "done") is None
    assert [p.name.startswith("checkpoints-old-code-a-") for p in tmp_path.iterdir()].count(True) == 1
    with pytest.raises(FolderTaken, match="holds checkpoints of another configuration"):
        PhaseStore(tmp_path / "checkpoints", "other", code="b")


def test_a_complete_run_of_other_code_is_skipped_with_a_line_that_says_so(tmp_path: Path):
    folder = finished(tmp_path, "done")
    path = folder / "results.json"
    record = read_json(path)
    record["versions"]["code"] = "0" * 16
    path.write_text(json.dumps(record))
    again = run_cli(f"hydra.run.dir={folder}", *FAST, cwd=tmp_path)
    assert again.returncode == 0 and "is already complete" in again.stdout
    assert f"it ran other code ({'0' * 16}, this is " in again.stdout


# --- 5. a refused run leaves the other run's folder untouched -------------------------------------------------

def test_another_configuration_into_a_finished_folder_touches_nothing(tmp_path: Path):
    folder = finished(tmp_path, "done")
    before = snapshot(folder)
    assert ".hydra/config.yaml" in before and ".hydra/overrides.yaml" in before
    refused = run_cli(f"hydra.run.dir={folder}", *FAST, "seed=5", cwd=tmp_path)
    assert refused.returncode == 2 and len(stderr_lines(refused)) == 1, refused.stderr
    assert "holds results of another configuration (seed: 0 -> 5)" in refused.stderr
    assert snapshot(folder) == before  # .hydra/ included, and no error.json


def test_another_configuration_into_an_interrupted_folder_writes_no_error_there(tmp_path: Path):
    folder = finished(tmp_path, "live", "keep_checkpoints=true")
    (folder / "results.json").unlink()  # phases stored, no results: a run still going, or interrupted
    before = snapshot(folder)
    refused = run_cli(f"hydra.run.dir={folder}", *FAST, "seed=5", cwd=tmp_path)
    assert refused.returncode == 2 and "holds checkpoints of another configuration" in refused.stderr
    assert snapshot(folder) == before and not (folder / "error.json").exists()


# --- 6. damaged artifacts and records: the rerun, load_run and the analysis agree ------------------------------

def test_a_damaged_model_is_not_complete_to_any_reader_and_the_rerun_repairs_it(tmp_path: Path):
    from multirun_analysis.loading import load_sweep

    folder = finished(tmp_path / "sweep", "run")
    model = folder / "model.pt"
    model.write_bytes(model.read_bytes()[:-8] + b"garbage!")  # same size, other bytes
    assert inspect(folder)[1] == "model.pt does not match the checksum in results.json (damaged or replaced)"
    with pytest.raises(UserError, match="model.pt does not match the checksum"):
        load_run(folder)
    problems = load_sweep(tmp_path / "sweep").problems
    assert list(problems["status"]) == ["corrupt"] and "model.pt does not match" in problems["reason"].iloc[0]
    again = run_cli(f"hydra.run.dir={folder}", *FAST, cwd=tmp_path)
    assert again.returncode == 0 and "fails its check (model.pt does not match" in again.stderr
    assert "already complete" not in again.stdout
    assert inspect(folder)[1] is None and load_run(folder).model() is not None
    assert list(folder.glob("results.json.corrupt-*"))  # the bad record is kept aside, never read again


def test_a_record_with_wrong_types_and_the_right_hash_is_redone_not_skipped(tmp_path: Path):
    folder = finished(tmp_path, "run")
    record = read_json(folder / "results.json")
    record["levels"][0]["test_acc"] = "high"
    (folder / "results.json").write_text(json.dumps(record))
    assert "test_acc='high'" in inspect(folder)[1]
    again = run_cli(f"hydra.run.dir={folder}", *FAST, cwd=tmp_path)
    assert again.returncode == 0 and "already complete" not in again.stdout
    assert isinstance(read_json(folder / "results.json")["levels"][0]["test_acc"], float)


# --- 7. whole units between two reachable targets --------------------------------------------------------------

def test_layerwise_units_between_reachable_targets_are_refused_naming_the_nearest(tmp_path: Path):
    folder = tmp_path / "units"
    done = run_cli(f"hydra.run.dir={folder}", *FAST, "pruner=unit", "sparsity=0.7", cwd=tmp_path)
    assert done.returncode == 2 and len(stderr_lines(done)) == 1, done.stderr
    assert "the nearest reachable targets are sparsity=0.6667 and sparsity=0.7333" in done.stderr
    assert not (folder / "results.json").exists()
    ok = finished(tmp_path, "reachable", "pruner=unit", "sparsity=0.6667")
    assert read_json(ok / "results.json")["levels"][-1]["sparsity"] == pytest.approx(2 / 3)


def test_global_units_that_miss_their_target_are_marked_and_the_analysis_carries_the_mark(tmp_path: Path):
    from multirun_analysis.loading import load_sweep

    done = run_cli(f"hydra.run.dir={tmp_path / 'sweep' / 'g'}", *FAST, "pruner=unit", "pruner.select.scope=global",
                   "sparsity=0.7", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    level = read_json(tmp_path / "sweep" / "g" / "results.json")["levels"][-1]
    assert abs(level["sparsity"] - 0.7) > tolerance(level["prunable_total"], 2) and level["off_target"] is True
    assert "recorded with off_target=true" in done.stderr
    runs = load_sweep(tmp_path / "sweep").runs
    assert runs.set_index("level_name").loc["pruned", "off_target"] and not runs.set_index("level_name").loc[
        "dense", "off_target"]


# --- 9. a record someone hands you is data ---------------------------------------------------------------------

def test_load_run_never_imports_code_a_record_names(tmp_path: Path):
    folder = finished(tmp_path, "run")
    record = read_json(folder / "results.json")
    victim = tmp_path / "created_by_the_record"
    record["config"]["model"] = {"_target_": "builtins.open", "file": str(victim), "mode": "w"}
    (folder / "results.json").write_text(json.dumps(record))
    run = load_run(folder)
    with pytest.raises(UserError, match="names 'builtins.open', code load_run does not import"):
        run.model()
    assert not victim.exists()
