"""Sweep folders -> the tidy table (multirun_analysis/loading.py), in process, on hand-written run folders.

What the analysis promises its reader: every run folder is found (and only run folders), a run is read as
complete exactly when the record contract says so (prune_lab.record), anything else is a problem row with its
reason, runs share a curve exactly when their configs differ only in seed and target, and the curves, the
early-stopping epochs and the layer labels come from the files as written. Fast: `make mutation` runs these
per mutant (docs/contributing.md, "Mutation testing"); the real sweeps are in tests/test_analysis_*.py.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from multirun_analysis import loading
from multirun_analysis.loading import (
    LEVEL_DECIMALS,
    MAIN_BRANCH,
    RUN_MARKERS,
    condition_key,
    early_stopping,
    find_run_dirs,
    layer_labels,
    load_curves,
    load_runs,
    load_sweep,
    override_keys,
    read_curves,
    read_run,
    run_columns,
)
from prune_lab.record import artifacts

LAYERS = {"net.0.weight": {"numel": 40, "nonzero": 20, "sparsity": 0.5},
          "net.2.weight": {"numel": 60, "nonzero": 30, "sparsity": 0.5}}


def level(name: str, target: float, nonzero: int, **extra: Any) -> dict[str, Any]:
    return {"name": name, "target_sparsity": target, "sparsity": 1 - nonzero / 100, "epochs_trained": 3,
            "params_total": 110, "params_nonzero": nonzero + 10, "prunable_total": 100, "prunable_nonzero": nonzero,
            "test_acc": 0.9, "test_loss": 0.3, "val_acc": 0.8, "val_loss": 0.4, "layers": LAYERS, **extra}


def config(seed: int = 0, lr: Any = 0.01, **extra: Any) -> dict[str, Any]:
    return {"seed": seed, "sparsity": 0.5, "device": "cpu", "threads": 1, "cache_dir": None,
            "dataset": {"_target_": "prune_lab.data.Penguins"}, "model": {"_target_": "prune_lab.models.MLP"},
            "train": {"lr": lr, "epochs": 3, "finetune_epochs": 2}, "pruner": {"_target_": "x.OneShot"}, **extra}


def record(seed: int = 0, lr: Any = 0.01, levels: list[dict[str, Any]] | None = None, **top: Any) -> dict[str, Any]:
    return {
        "schema_version": 2, "status": "ok", "seed": seed, "config_hash": f"{seed:016x}",
        "config": config(seed, lr), "overrides": [f"seed={seed}"], "target_sparsity": 0.5,
        "dataset": "penguins", "model": "mlp", "init": "kaiming_normal", "pruner": "magnitude", "train": "adam",
        "experiment": None,
        "levels": levels if levels is not None else [level("dense", 0.0, 100), level("pruned", 0.5, 50)],
        "versions": {"prune_lab": "0.1.0", "torch": "2.14.1", "git_commit": "abc", "code": "digest1"},
        "artifacts": {}, "splits": {"train": 200, "val": 50, "test": 80}, "wall_time_s": 1.5, "peak_rss_mb": 300.0,
        **top,
    }


def write_run(folder: Path, rec: dict[str, Any], model: bool = True) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    if model:
        torch.save({"net.0.weight": torch.zeros(10, 4), "net.2.weight": torch.zeros(6, 10)}, folder / "model.pt")
        (folder / "masks.json").write_text("{}")
        rec = {**rec, "artifacts": artifacts(folder)}
    (folder / "results.json").write_text(json.dumps(rec))
    return folder


# --- finding run folders -------------------------------------------------------------------------------------

def test_every_marker_makes_a_run_folder_and_the_walk_stops_there(tmp_path: Path) -> None:
    assert {".hydra", "results.json", "error.json", "metrics.jsonl", "checkpoints"} == RUN_MARKERS
    for marker in sorted(RUN_MARKERS):
        run = tmp_path / f"run_{marker.strip('.')}"
        (run / marker).mkdir(parents=True) if marker in (".hydra", "checkpoints") else (
            run.mkdir(parents=True), (run / marker).write_text("{}"))
        (run / "inner" / "results.json").parent.mkdir(parents=True)
        (run / "inner" / "results.json").write_text("{}")  # below a run folder: not another run
    (tmp_path / "notes").mkdir()  # no marker: not a run
    (tmp_path / ".submitit" / "x").mkdir(parents=True)
    (tmp_path / ".submitit" / "x" / "results.json").write_text("{}")  # dot-folders are skipped
    (tmp_path / "a" / "b" / "deep").mkdir(parents=True)
    (tmp_path / "a" / "b" / "deep" / "error.json").write_text("{}")
    (tmp_path / "file.txt").write_text("x")
    found = find_run_dirs([tmp_path])
    assert [r for _, r in found] == sorted([str(tmp_path / f"run_{m.strip('.')}") for m in RUN_MARKERS]
                                           + [str(tmp_path / "a" / "b" / "deep")])
    assert {root for root, _ in found} == {str(tmp_path)}


def test_a_run_folder_passed_itself_and_several_paths(tmp_path: Path) -> None:
    a, b = write_run(tmp_path / "a", record(), model=False), write_run(tmp_path / "b", record(1), model=False)
    assert find_run_dirs([a]) == [(str(a), str(a))]
    assert find_run_dirs([str(b), a]) == [(str(a), str(a)), (str(b), str(b))]  # sorted by run folder


def test_a_path_that_is_not_a_folder_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError) as e:
        find_run_dirs([tmp_path / "nope"])
    assert str(e.value) == f"{tmp_path / 'nope'} is not a folder; pass a sweep folder (hydra.sweep.dir) or a run folder"
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileNotFoundError):
        find_run_dirs([tmp_path / "f"])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every folder")
def test_an_unreadable_folder_is_listed_not_skipped(tmp_path: Path) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0)
    try:
        assert find_run_dirs([tmp_path]) == [(str(tmp_path), str(locked))]
    finally:
        locked.chmod(0o755)


# --- small parsers -------------------------------------------------------------------------------------------

def test_override_keys() -> None:
    assert override_keys(["train.epochs=5", "+train.x=1", "++seed=2", "~pruner.score", "flag", "a=b=c"]) == \
        {"train.epochs": "5", "train.x": "1", "seed": "2", "a": "b=c"}
    assert override_keys([]) == {}


@pytest.mark.parametrize(("text", "value"), [("5", 5), ("0.01", 0.01), ("true", True), ("null", None),
                                             ("adam", "adam"), ("[1, 2]", "[1, 2]"), ('{"a": 1}', '{"a": 1}'),
                                             ('"q"', "q")])
def test_parse_value_keeps_scalars_and_text(text: str, value: Any) -> None:
    parsed = loading._parse_value(text)
    assert parsed == value and type(parsed) is type(value)


def test_scalar_cell_and_number() -> None:
    assert all(loading._scalar(v) for v in (None, True, 1, 1.5, "x"))
    assert not any(loading._scalar(v) for v in ([1], {"a": 1}, (1,)))
    assert loading._cell([2, 1]) == "[2, 1]" and loading._cell({"b": 1, "a": 2}) == '{"a": 2, "b": 1}'
    assert loading._cell(0.5) == 0.5 and loading._cell(None) is None
    assert loading._number(1) and loading._number(1.5) and not loading._number(True) and not loading._number("1")


def test_level_fields_flatten_one_level_of_scalars_and_leave_layers() -> None:
    fields = loading._level_fields({"a": 1, "s": "x", "n": None, "layers": {"l": 1}, "before": {"acc": 0.5, "d": {}},
                                    "list": [1], "t": (1,)})
    assert fields == {"a": 1, "s": "x", "n": None, "before.acc": 0.5}


@pytest.mark.parametrize(("fields", "bad"), [
    ({"sparsity": "0.5"}, "sparsity='0.5'"), ({"epochs_trained": True}, "epochs_trained=True"),
    ({"target_sparsity": "x"}, "target_sparsity='x'"), ({"params_total": "1"}, "params_total='1'"),
    ({"prunable_nonzero": [1]}, "prunable_nonzero=[1]"), ({"flops_dense": "a"}, "flops_dense='a'"),
    ({"bytes_sparse": "a"}, "bytes_sparse='a'"), ({"test_acc": "0.9"}, "test_acc='0.9'"),
    ({"before.val_loss": "x"}, "before.val_loss='x'"),
    ({"name": "dense", "branch": "x", "test_acc": None, "sparsity": 0.5}, None),
    ({"round": "r1", "rewind": "init"}, None),  # not metric fields
])
def test_not_a_number(fields: dict[str, Any], bad: str | None) -> None:
    assert loading._not_a_number(fields) == bad


def test_target_level_rounds_and_falls_back_to_the_measured_sparsity() -> None:
    assert LEVEL_DECIMALS == 4
    assert loading._target_level({"target_sparsity": 1 - 0.8 ** 3, "sparsity": 0.1}) == 0.488
    assert loading._target_level({"target_sparsity": 0.12345, "sparsity": 0.9}) == 0.1235  # noqa: rounding half
    assert loading._target_level({"target_sparsity": None, "sparsity": 0.33333}) == 0.3333
    assert loading._target_level({"target_sparsity": math.nan, "sparsity": 0.25}) == 0.25
    assert loading._target_level({"target_sparsity": math.inf, "sparsity": 0.25}) == 0.25
    assert loading._target_level({"target_sparsity": True, "sparsity": 0.25}) == 0.25
    assert math.isnan(loading._target_level({}))
    assert math.isnan(loading._target_level({"sparsity": "x"}))


def test_condition_key_ignores_seed_target_and_bookkeeping() -> None:
    key = condition_key(config())
    assert len(key) == 12 and int(key, 16) >= 0
    assert condition_key(config(seed=3)) == key
    assert condition_key({**config(), "sparsity": 0.9, "device": "cuda", "threads": 8}) == key
    assert condition_key(config(lr=0.1)) != key
    assert condition_key(config(extra_key=1)) != key


# --- one run folder ------------------------------------------------------------------------------------------

def test_a_complete_run_reads_as_rows_with_what_it_is_and_what_it_measured(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "sweep" / "seed=0", record())
    out = read_run(str(tmp_path / "sweep"), str(folder))
    assert set(out) == {"rows", "layers", "overrides", "settings", "config"} and out["config"] is True
    dense, pruned = out["rows"]
    assert dense["run"] == "seed=0" and dense["sweep"] == str(tmp_path / "sweep") and dense["run_dir"] == str(folder)
    assert (dense["dataset"], dense["model"], dense["init"], dense["pruner"], dense["train"], dense["experiment"]) \
        == ("penguins", "mlp", "kaiming_normal", "magnitude", "adam", None)
    assert dense["seed"] == 0 and dense["run_target_sparsity"] == 0.5 and dense["config_hash"] == f"{0:016x}"
    assert dense["condition_key"] == condition_key(config())
    assert (dense["git_commit"], dense["code"], dense["torch_version"]) == ("abc", "digest1", "2.14.1")
    assert dense["budget"] == "train.epochs=3, train.finetune_epochs=2"
    assert dense["test_size"] == 80 and dense["wall_time_s"] == 1.5 and dense["peak_rss_mb"] == 300.0
    assert (dense["level"], dense["level_name"], dense["branch"], dense["target_level"]) == (0, "dense", "main", 0.0)
    assert (pruned["level"], pruned["level_name"], pruned["target_level"], pruned["sparsity"]) == \
        (1, "pruned", 0.5, 0.5)
    assert pruned["test_acc"] == 0.9 and pruned["off_target"] is False and "name" not in pruned
    assert out["layers"][:2] == [(str(folder), 0, 0, "net.0.weight", 40, 20, 0.5),
                                 (str(folder), 0, 1, "net.2.weight", 60, 30, 0.5)]
    assert len(out["layers"]) == 4
    assert out["overrides"] == {"seed": "0"}
    assert out["settings"]["train.lr"] == 0.01 and "seed" not in out["settings"] and "device" not in out["settings"]


def test_the_run_name_is_its_path_below_the_sweep(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "s" / "a" / "b", record(), model=False)
    assert read_run(str(tmp_path / "s"), str(folder))["rows"][0]["run"] == os.path.join("a", "b")
    assert read_run(str(folder), str(folder))["rows"][0]["run"] == "b"  # the run folder itself
    other = write_run(tmp_path / "elsewhere", record(), model=False)
    assert read_run(str(tmp_path / "s"), str(other))["rows"][0]["run"] == os.path.relpath(other, tmp_path / "s")


def test_a_run_without_git_or_code_digest_names_its_version(tmp_path: Path) -> None:
    rec = record(versions={"prune_lab": "0.1.0"})
    row = read_run(str(tmp_path), str(write_run(tmp_path / "r", rec)))["rows"][0]
    assert row["code"] == "prune_lab 0.1.0" and row["git_commit"] is None and row["torch_version"] is None
    rec = record(versions={})
    assert read_run(str(tmp_path), str(write_run(tmp_path / "r", rec)))["rows"][0]["code"] is None


def test_choices_that_are_not_scalars_are_text_and_a_bad_target_is_none(tmp_path: Path) -> None:
    rec = record(init={"name": "x"}, target_sparsity=0.5)
    row = read_run(str(tmp_path), str(write_run(tmp_path / "r", rec)))["rows"][0]
    assert row["init"] == "{'name': 'x'}"


def test_a_control_branch_gets_the_dense_level_of_its_run(tmp_path: Path) -> None:
    levels = [level("dense", 0.0, 100), level("round-1", 0.5, 50),
              level("round-1", 0.5, 50, branch="randomly_reinitialize", test_acc=0.7),
              level("round-1", 0.5, 50, branch="randomly_prune", test_acc=0.6)]
    rows = read_run(str(tmp_path), str(write_run(tmp_path / "r", record(levels=levels))))["rows"]
    assert [(r["branch"], r["target_level"]) for r in rows] == [
        ("main", 0.0), ("main", 0.5), ("randomly_reinitialize", 0.5), ("randomly_prune", 0.5),
        ("randomly_prune", 0.0), ("randomly_reinitialize", 0.0)]
    assert rows[4]["level"] == 0 and rows[4]["test_acc"] == 0.9  # the dense level, copied
    assert MAIN_BRANCH == "main"


def test_a_level_marked_off_target_carries_the_mark(tmp_path: Path) -> None:
    levels = [level("dense", 0.0, 100), level("pruned", 0.5, 30, off_target=True)]
    rows = read_run(str(tmp_path), str(write_run(tmp_path / "r", record(levels=levels))))["rows"]
    assert [r["off_target"] for r in rows] == [False, True]


def test_layers_that_are_not_numbers_are_left_out(tmp_path: Path) -> None:
    odd = {"a": {"numel": 4, "nonzero": 2, "sparsity": 0.5}, "b": {"numel": "4", "nonzero": 2, "sparsity": 0.5},
           "c": 0.5, "d": {"numel": 4, "nonzero": True, "sparsity": 0.5}}
    levels = [level("dense", 0.0, 100, layers=odd)]
    out = read_run(str(tmp_path), str(write_run(tmp_path / "r", record(levels=levels))))
    assert [layer[3] for layer in out["layers"]] == ["a"]
    levels = [level("dense", 0.0, 100, layers=["a"])]  # not a mapping: no layer rows, the run still reads
    out = read_run(str(tmp_path), str(write_run(tmp_path / "r", record(levels=levels))))
    assert out["layers"] == [] and len(out["rows"]) == 1


def test_an_old_record_without_config_is_known_by_its_overrides(tmp_path: Path) -> None:
    rec = record(config={}, overrides=["seed=1", "train.lr=0.1", "sparsity=0.5", "device=cpu", "+x=[1]"])
    out = read_run(str(tmp_path), str(write_run(tmp_path / "r", rec)))
    assert out["config"] is False
    assert out["settings"] == {"train.lr": 0.1, "x": "[1]"}
    assert out["rows"][0]["condition_key"] == "overrides:" + json.dumps(out["settings"], sort_keys=True)


def problem(tmp_path: Path, folder: Path) -> dict[str, Any]:
    out = read_run(str(tmp_path), str(folder))
    assert set(out) == {"problem"}
    p = out["problem"]
    assert p["sweep"] == str(tmp_path) and p["run_dir"] == str(folder) and p["run"] == folder.name
    return p


def test_a_record_that_breaks_the_contract_is_corrupt_with_the_contract_s_reason(tmp_path: Path) -> None:
    p = problem(tmp_path, write_run(tmp_path / "r", record(status="running")))
    assert (p["status"], p["reason"]) == ("corrupt", "results.json has status 'running'")
    folder = write_run(tmp_path / "t", record())
    (folder / "model.pt").write_bytes(b"tampered")
    p = problem(tmp_path, folder)
    assert (p["status"], p["reason"]) == ("corrupt", "model.pt does not match the checksum in results.json "
                                                     "(damaged or replaced)")


def test_a_results_json_that_is_not_json_or_not_readable(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "results.json").write_text("{")
    p = problem(tmp_path, folder)
    assert p["status"] == "corrupt" and p["reason"].startswith("results.json is not valid JSON (")
    (folder / "results.json").unlink()
    (folder / "results.json").mkdir()
    p = problem(tmp_path, folder)
    assert p["status"] == "unreadable" and p["reason"].startswith("results.json: ")


def test_a_level_field_that_is_not_a_number_is_corrupt(tmp_path: Path) -> None:
    levels = [level("dense", 0.0, 100), level("pruned", 0.5, 50, flops_dense="many")]
    p = problem(tmp_path, write_run(tmp_path / "r", record(levels=levels)))
    assert (p["status"], p["reason"]) == ("corrupt", "level 1 of results.json has flops_dense='many', not a number")


def test_a_failed_run_names_its_kind_and_reason(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    (folder / "error.json").write_text(json.dumps({"kind": "config", "error": "sparsity=1.5 is outside [0, 1)"}))
    p = problem(tmp_path, folder)
    assert (p["status"], p["reason"]) == ("failed (config)", "sparsity=1.5 is outside [0, 1)")
    (folder / "error.json").write_text(json.dumps({}))
    assert (problem(tmp_path, folder)["status"], problem(tmp_path, folder)["reason"]) == ("failed (?)", "?")
    (folder / "error.json").write_text("{")
    p = problem(tmp_path, folder)
    assert p["status"] == "failed" and p["reason"].startswith("error.json unreadable (")


def test_a_run_with_neither_file_is_incomplete_with_its_last_write(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    (folder / ".hydra").mkdir(parents=True)
    (folder / "metrics.jsonl").write_text("")
    old = time.time() - 30 * 60
    for path in (folder, folder / ".hydra", folder / "metrics.jsonl"):
        os.utime(path, (old, old))
    p = problem(tmp_path, folder)
    assert (p["status"], p["reason"]) == (
        "incomplete", "no results.json or error.json: still running or interrupted (last write 30 min ago)")
    (folder / "error.json").write_text("[1]")  # not an object: not a failure record
    assert problem(tmp_path, folder)["status"] == "incomplete"
    (folder / "error.json").unlink()
    (folder / "new").write_text("x")  # the newest write counts
    assert problem(tmp_path, folder)["reason"].endswith("(last write 0 min ago)")


def test_a_folder_gone_while_reading_is_unreadable(tmp_path: Path) -> None:
    p = loading._why_no_results(tmp_path / "gone")
    assert p["status"] == "unreadable" and p["reason"].startswith("run folder: ")
    assert loading._mtime(tmp_path / "gone") == 0.0
    assert loading._mtime(tmp_path) == tmp_path.stat().st_mtime


# --- a sweep -------------------------------------------------------------------------------------------------

def test_runs_of_one_condition_share_a_curve_and_a_differing_key_labels_two(tmp_path: Path) -> None:
    for seed in (0, 1):
        write_run(tmp_path / f"lr=0.01,seed={seed}", record(seed, 0.01))
        write_run(tmp_path / f"lr=0.1,seed={seed}", record(seed, 0.1))
    sweep = load_sweep(tmp_path)
    runs = sweep.runs
    assert len(runs) == 8 and sweep.problems.empty
    assert sorted(runs["condition"].unique()) == ["train.lr=0.01", "train.lr=0.1"]
    assert runs.groupby("condition")["condition_key"].nunique().eq(1).all()
    assert runs["condition_key"].nunique() == 2
    assert runs.attrs["conditions"] == ["train.lr"] and "train.lr" in runs and sweep.swept == ["train.lr"]
    assert list(runs.columns[:3]) == ["sweep", "run", "run_dir"]
    assert sweep.layers[["run_dir", "level", "layer"]].drop_duplicates().shape[0] == 16
    assert {"condition", "seed", "branch", "target_level"} <= set(sweep.layers.columns)
    assert sweep.layers.attrs["conditions"] == ["train.lr"]
    assert list(sweep.problems.columns) == ["sweep", "run", "run_dir", "status", "reason"]


def test_one_condition_has_an_empty_label(tmp_path: Path) -> None:
    for seed in (0, 1):
        write_run(tmp_path / f"seed={seed}", record(seed))
    runs = load_runs(tmp_path)
    assert set(runs["condition"]) == {""} and runs.attrs["conditions"] == [] and runs.attrs["swept"] == []


def test_a_key_only_an_override_names_is_a_swept_column(tmp_path: Path) -> None:
    for seed in (0, 1):
        rec = record(seed, overrides=[f"seed={seed}", "logger.flush=10", "train=adam", "experiment=x"])
        write_run(tmp_path / f"seed={seed}", rec)
    runs = load_runs(tmp_path)
    assert runs.attrs["swept"] == ["logger.flush"] and set(runs["logger.flush"]) == {10}
    assert "logger.flush" in run_columns(runs)


def test_a_key_told_apart_by_its_choice_is_left_to_the_choice(tmp_path: Path) -> None:
    a, b = record(0), record(0, train="sgd")
    b["config"]["train"]["momentum"] = 0.9
    write_run(tmp_path / "adam", a)
    write_run(tmp_path / "sgd", b)
    runs = load_runs(tmp_path)
    assert runs.attrs["conditions"] == []  # train.momentum: said by train=adam / sgd
    c = record(1, lr=0.5)  # adam with another lr: a key of its own
    write_run(tmp_path / "adam2", c)
    assert load_runs(tmp_path).attrs["conditions"] == ["train.lr"]


def test_values_that_print_alike_are_told_apart(tmp_path: Path) -> None:
    write_run(tmp_path / "a", record(0, 0.01))
    write_run(tmp_path / "b", record(0, "0.01"))
    runs = load_runs(tmp_path)
    assert set(runs["train.lr"]) == {"0.01", '"0.01"'}  # JSON text: a number and a string differ
    assert runs.groupby("condition")["condition_key"].nunique().eq(1).all()


def test_two_configs_under_one_label_get_the_hash_appended(tmp_path: Path) -> None:
    a = record(0, config={}, overrides=["seed=0"])  # only overrides known: the same (empty) label
    b = record(0)
    write_run(tmp_path / "a", a)
    write_run(tmp_path / "b", b)
    runs = load_runs(tmp_path)
    assert runs["condition"].nunique() == 2
    assert all(c.startswith("#") and c[1:] == k for c, k in zip(runs["condition"], runs["condition_key"]))


def test_an_empty_sweep_has_the_columns_and_its_problems(tmp_path: Path) -> None:
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "error.json").write_text(json.dumps({"kind": "crash", "error": "boom"}))
    sweep = load_sweep(str(tmp_path))
    assert sweep.runs.empty and {"condition", "target_level", "test_acc", "branch"} <= set(sweep.runs.columns)
    assert sweep.problems[["status", "reason"]].values.tolist() == [["failed (crash)", "boom"]]
    assert sweep.layers.empty


def test_workers_read_the_same_table(tmp_path: Path) -> None:
    for seed in range(5):
        write_run(tmp_path / f"seed={seed}", record(seed), model=False)
    one, two = load_runs(tmp_path), load_runs(tmp_path, workers=2)
    pd.testing.assert_frame_equal(one, two)
    assert loading._read_all([("a", "b")], 4) == [read_run("a", "b")]  # too few for a pool


def test_run_columns_are_what_a_run_is() -> None:
    runs = pd.DataFrame(columns=["sweep", "run", "seed", "level", "test_acc", "train.lr", "condition"])
    runs.attrs["swept"] = ["train.lr"]
    assert run_columns(runs) == ["sweep", "run", "seed", "condition", "train.lr"]


# --- curves --------------------------------------------------------------------------------------------------

def test_curves_keep_epoch_lines_skip_events_and_report_damaged_lines(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "seed=0", record())
    lines = [{"phase": "dense", "epoch": 1, "step": 10, "train_loss": 1.0, "val_acc": 0.5},
             {"event": "pruned", "step": 10},  # an event: not a curve point, not a fault
             "not json",
             {"phase": "dense", "step": 3},
             {"phase": "dense", "epoch": 2, "val_acc": "oops"},
             {"phase": 3, "epoch": 2},
             {"phase": "dense", "epoch": "2"},
             {"epoch": 4, "val_acc": 0.1},  # an epoch without its phase: damaged, not an event
             {"phase": "dense", "epoch": 5, "val_acc": "a", "val_loss": "b"},
             {"phase": "dense", "epoch": 2, "step": 20, "train_loss": 0.5, "val_acc": 0.7, "lr": None}]
    (folder / "metrics.jsonl").write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines))
    write_run(tmp_path / "seed=1", record(1))  # no metrics.jsonl: no curve, no problem
    curves, problems = read_curves(load_runs(tmp_path))
    assert curves[["phase", "epoch", "val_acc"]].values.tolist() == [["dense", 1, 0.5], ["dense", 2, 0.7]]
    assert curves["train_loss"].tolist() == [1.0, 0.5] and curves["step"].tolist() == [10, 20]  # every field
    assert set(curves["seed"]) == {0} and "condition" in curves and curves.attrs["swept"] == []
    (p,) = problems.to_dict("records")
    assert p["status"] == "damaged metrics.jsonl" and p["run"] == "seed=0" and p["run_dir"] == str(folder)
    assert p["reason"] == "7 line(s) skipped: line 3 (not JSON); line 4 (no phase or epoch); line 5 (val_acc='oops')"
    assert p["sweep"] == str(tmp_path)
    _, problems = read_curves(load_runs(tmp_path / "seed=1"))
    assert problems.empty and list(problems.columns) == ["sweep", "run", "run_dir", "status", "reason"]
    pd.testing.assert_frame_equal(load_curves(load_runs(tmp_path)), curves)


def test_a_phase_that_is_not_text_or_an_epoch_that_is_not_a_number(tmp_path: Path) -> None:
    folder = write_run(tmp_path / "r", record())
    (folder / "metrics.jsonl").write_text(json.dumps({"phase": 3, "epoch": 1}) + "\n"
                                          + json.dumps({"phase": "dense", "epoch": "1"}) + "\n")
    _, problems = read_curves(load_runs(tmp_path))
    assert problems["reason"].tolist() == ["2 line(s) skipped: line 1 (phase=3); line 2 (epoch='1')"]
    (folder / "metrics.jsonl").write_text(json.dumps({"phase": "dense", "epoch": 1, "a": "x", "b": []}) + "\n")
    _, problems = read_curves(load_runs(tmp_path))
    assert problems["reason"].tolist() == ["1 line(s) skipped: line 1 (a='x', b=[])"]


def test_no_curves_is_an_empty_table_with_the_columns(tmp_path: Path) -> None:
    write_run(tmp_path / "r", record())
    curves, problems = read_curves(load_runs(tmp_path))
    assert curves.empty and {"run_dir", "phase", "epoch", "val_acc"} <= set(curves.columns) and problems.empty


def test_early_stopping_is_the_best_validation_epoch_of_the_phase_that_made_the_level() -> None:
    curves = pd.DataFrame({"run_dir": ["a"] * 6 + ["b"] * 2,
                           "phase": ["dense"] * 3 + ["finetune"] * 3 + ["dense"] * 2,
                           "epoch": [1, 2, 3, 1, 2, 3, 1, 2],
                           "val_acc": [0.5, 0.9, 0.9, 0.7, math.nan, 0.6, 0.8, 0.1]})
    got = early_stopping(curves).sort_values(["run_dir", "level_name"]).values.tolist()
    assert got == [["a", "dense", 2], ["a", "pruned", 1], ["b", "dense", 1]]  # a tie: the first epoch
    assert list(early_stopping(curves.iloc[:0]).columns) == ["run_dir", "level_name", "early_stop_epoch"]
    assert early_stopping(curves.drop(columns="val_acc")).empty


# --- layer labels --------------------------------------------------------------------------------------------

def test_layer_labels_from_the_model_s_shapes(tmp_path: Path) -> None:
    folder = tmp_path / "r"
    folder.mkdir()
    torch.save({"state_dict": {"net.0.weight": torch.zeros(12, 4), "conv.weight": torch.zeros(8, 3, 5, 5),
                               "c1.weight": torch.zeros(2, 3, 4)}}, folder / "model.pt")
    layers = pd.DataFrame({"run_dir": [str(folder)] * 5, "model": ["mlp"] * 5,
                           "layer": ["net.0.weight", "conv.weight", "c1.weight", "bias_free", "odd.weight"],
                           "numel": [48, 600, 24, 7, 99]})
    assert layer_labels(layers) == {"net.0.weight": "net.0 (Linear 4→12)", "conv.weight": "conv (Conv2d 3→8, 5×5)",
                                    "c1.weight": "c1 (Conv1d 3→2, 4)", "bias_free": "bias_free (7 weights)",
                                    "odd.weight": "odd (99 weights)"}


def test_layer_labels_fall_back_to_counts(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    torch.save({"net.0.weight": torch.zeros(12, 4)}, a / "model.pt")  # a plain state dict
    torch.save({"net.0.weight": torch.zeros(4, 12)}, b / "model.pt")  # another model, same name, another shape
    layers = pd.DataFrame({"run_dir": [str(a), str(b)], "model": ["m1", "m2"], "layer": ["net.0.weight"] * 2,
                           "numel": [48, 48]})
    assert layer_labels(layers) == {"net.0.weight": "net.0 (48 weights)"}
    assert layer_labels(layers.iloc[:1]) == {"net.0.weight": "net.0 (Linear 4→12)"}
    (a / "model.pt").write_bytes(b"not a model")
    assert layer_labels(layers.iloc[:1]) == {"net.0.weight": "net.0 (48 weights)"}
    wrong_count = layers.iloc[:1].assign(numel=50, run_dir=str(b))
    assert layer_labels(wrong_count) == {"net.0.weight": "net.0 (50 weights)"}  # the shape must give the count
    assert layer_labels(layers.drop(columns="model")) == {"net.0.weight": "net.0 (48 weights)"}


def test_record_helper_is_a_complete_run() -> None:
    from prune_lab.record import check_record

    assert check_record(copy.deepcopy(record())) is None


def test_curves_read_past_bad_bytes_and_past_runs_without_curves(tmp_path: Path) -> None:
    write_run(tmp_path / "a_no_curves", record(0))  # first in the walk: no metrics.jsonl, the next still read
    folder = write_run(tmp_path / "b", record(1))
    good = json.dumps({"phase": "dense", "epoch": 1, "val_acc": 0.5})
    (folder / "metrics.jsonl").write_bytes(b'{"phase": "\xff\xfe", \n' + good.encode() + b"\n")
    curves, problems = read_curves(load_runs(tmp_path))
    assert curves[["run_dir", "epoch", "val_acc"]].values.tolist() == [[str(folder), 1, 0.5]]
    assert problems["reason"].tolist() == ["1 line(s) skipped: line 1 (not JSON)"]


def test_early_stopping_ignores_gaps_in_other_columns() -> None:
    curves = pd.DataFrame({"run_dir": ["a"] * 3, "phase": ["dense"] * 3, "epoch": [1, 2, 3],
                           "val_acc": [0.5, 0.9, 0.7], "train_loss": [1.0, math.nan, 0.5]})
    assert early_stopping(curves).values.tolist() == [["a", "dense", 2]]


def test_layer_labels_of_conv3d_and_of_one_run_per_model(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    torch.save({"v.weight": torch.zeros(4, 2, 3, 3, 3), "w.weight": torch.zeros(5, 3)}, a / "model.pt")
    torch.save({"w.weight": torch.zeros(3, 5)}, b / "model.pt")  # same model name, another width
    layers = pd.DataFrame({"run_dir": [str(a), str(a), str(b)], "model": ["m"] * 3,
                           "layer": ["v.weight", "w.weight", "w.weight"], "numel": [216, 15, 15]})
    assert layer_labels(layers) == {"v.weight": "v (Conv3d 2→4, 3×3×3)", "w.weight": "w (Linear 3→5)"}


def test_layer_labels_read_on_past_an_unreadable_model_and_never_unpickle_code(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "model.pt").write_bytes(b"damaged")
    torch.save({"w.weight": torch.zeros(5, 3)}, b / "model.pt")
    layers = pd.DataFrame({"run_dir": [str(a), str(b)], "model": ["m1", "m2"], "layer": ["v.weight", "w.weight"],
                           "numel": [6, 15]})
    assert layer_labels(layers) == {"v.weight": "v (6 weights)", "w.weight": "w (Linear 3→5)"}
    torch.save({"w.weight": torch.zeros(5, 3), "hook": os.getcwd}, b / "model.pt")  # names a function
    assert layer_labels(layers.iloc[1:]) == {"w.weight": "w (15 weights)"}  # refused (weights_only), not run


def test_a_layer_named_by_two_models_takes_its_first_count(tmp_path: Path) -> None:
    layers = pd.DataFrame({"run_dir": [str(tmp_path / "x"), str(tmp_path / "y")], "model": ["m1", "m2"],
                           "layer": ["w.weight", "w.weight"], "numel": [15, 20]})
    assert layer_labels(layers) == {"w.weight": "w (15 weights)"}
