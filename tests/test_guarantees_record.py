"""The record contract (prune_lab/record.py), in process: every rule a results.json must meet, one case each.

A hand-written record that holds (`RECORD`) is broken one field at a time; each break must be refused with its
own reason, and every boundary (the sparsity tolerance, an empty validation split, schema 1) is tried on both
sides. Fast, no torch: `make mutation` runs these per mutant (docs/contributing.md, "Mutation testing").
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
from pathlib import Path
from typing import Any

import pytest

from prune_lab import record as contract
from prune_lab.record import (
    ARTIFACTS,
    TOLERANCE,
    artifact_problem,
    artifacts,
    check_record,
    complete,
    inspect,
    level_problem,
    sha256_file,
    tolerance,
)

LEVEL: dict[str, Any] = {
    "name": "pruned", "target_sparsity": 0.5, "sparsity": 0.5, "epochs_trained": 3,
    "params_total": 120, "params_nonzero": 70, "prunable_total": 100, "prunable_nonzero": 50,
    "test_acc": 0.9, "test_loss": 0.3, "val_acc": 0.8, "val_loss": 0.4, "layers": {"a.weight": 0.5, "b.weight": 0.5},
}
RECORD: dict[str, Any] = {
    "schema_version": 2, "status": "ok", "seed": 0, "config_hash": "0123456789abcdef", "config": {"seed": 0},
    "overrides": ["seed=0"], "target_sparsity": 0.5, "levels": [LEVEL], "versions": {"prune_lab": "0.1.0"},
    "artifacts": {}, "splits": {"train": 10, "val": 5, "test": 5},
}


def rec(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(RECORD)
    out.update(changes)
    return out


def lvl(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(LEVEL)
    out.update(changes)
    return out


def without(d: dict[str, Any], key: str) -> dict[str, Any]:
    out = copy.deepcopy(d)
    del out[key]
    return out


def test_the_hand_written_record_holds() -> None:
    assert check_record(rec()) is None
    assert level_problem(lvl(), 0, RECORD["splits"]) is None
    assert level_problem(lvl(), 0, None) is None  # schema 1: no split sizes


# --- the record's top level ----------------------------------------------------------------------------------

@pytest.mark.parametrize(("value", "reason"), [
    ([], "results.json holds a list, not an object"),
    ("ok", "results.json holds a str, not an object"),
    (None, "results.json holds a NoneType, not an object"),
])
def test_a_record_that_is_not_an_object(value: Any, reason: str) -> None:
    assert check_record(value) == reason


@pytest.mark.parametrize("status", ["failed", None, "OK"])
def test_only_status_ok_is_complete(status: Any) -> None:
    assert check_record(rec(status=status)) == f"results.json has status {status!r}"
    assert check_record(without(RECORD, "status")) == "results.json has status None"


@pytest.mark.parametrize(("key", "value", "shown", "types"), [
    ("seed", "0", "'0'", "int"),
    ("seed", True, "'True'", "int"),  # a bool is not an int here
    ("seed", 1.0, "'1.0'", "int"),
    ("config_hash", 5, "'5'", "str"),
    ("config", "oops", "'oops'", "dict"),
    ("overrides", "seed=0", "'seed=0'", "list"),
    ("target_sparsity", "0.5", "'0.5'", "int/float"),
    ("target_sparsity", False, "'False'", "int/float"),
    ("levels", {}, "'{}'", "list"),
    ("versions", [], "'[]'", "dict"),
    ("artifacts", None, "'None'", "dict"),
    ("splits", [], "'[]'", "dict"),
])
def test_each_top_level_field_has_its_type(key: str, value: Any, shown: str, types: str) -> None:
    assert check_record(rec(**{key: value})) == f"results.json has {key}={shown}, not of type {types}"


def test_a_missing_field_is_a_wrong_type() -> None:
    assert check_record(without(RECORD, "config")) == "results.json has config='None', not of type dict"


def test_a_long_value_is_cut_in_the_reason() -> None:
    reason = check_record(rec(config="x" * 100))
    assert reason == f"results.json has config={'x' * 60!r}, not of type dict"


@pytest.mark.parametrize("version", ["2", 2.0, True, None, [2]])
def test_a_schema_version_that_is_not_an_int_is_a_broken_field_not_a_crash(version: Any) -> None:
    reason = check_record(rec(schema_version=version))
    assert reason == f"results.json has schema_version={str(version)[:60]!r}, not of type int"


def test_schema_1_needs_no_artifacts_or_splits_schema_2_does() -> None:
    old = without(without(rec(schema_version=1), "artifacts"), "splits")
    assert check_record(old) is None
    assert check_record(without(old, "schema_version")) == \
        "results.json has schema_version='None', not of type int"  # every schema writes its version
    assert check_record(rec(schema_version=2, artifacts=None)) is not None
    assert check_record(without(rec(schema_version=3), "splits")) == \
        "results.json has splits='None', not of type dict"


def test_a_record_needs_a_level_and_string_overrides() -> None:
    assert check_record(rec(levels=[])) == "results.json has no level"
    assert check_record(rec(overrides=["seed=0", 3])) == "results.json has overrides that are not strings"
    assert check_record(rec(overrides=[])) is None


def test_every_level_is_checked_not_only_the_first() -> None:
    assert check_record(rec(levels=[lvl(), lvl(), lvl(test_acc=math.inf)])).startswith("level 2 (pruned) has test_acc")
    assert check_record(rec(levels=[lvl(name="dense"), lvl(name="x", test_loss=None)])).startswith("level 1 (x)")


def test_the_split_sizes_reach_the_level_check() -> None:
    empty_val = rec(splits={"train": 10, "val": 0, "test": 5}, levels=[lvl(val_acc=math.nan, val_loss=math.nan)])
    assert check_record(empty_val) is None
    assert check_record(rec(levels=[lvl(val_acc=math.nan)])) is not None


# --- one level -----------------------------------------------------------------------------------------------

def test_a_level_that_is_not_an_object() -> None:
    assert level_problem([1], 3, None) == "level 3 is not an object"


def test_a_level_is_named_by_its_index_and_name_where_it_has_one() -> None:
    assert level_problem(lvl(sparsity=None), 2, None) == "level 2 (pruned) has sparsity=None, not a finite number"
    assert level_problem(without(lvl(sparsity="a"), "name"), 2, None) == \
        "level 2 has sparsity='a', not a finite number"
    assert level_problem(lvl(name=7, sparsity="a"), 4, None) == "level 4 has sparsity='a', not a finite number"


@pytest.mark.parametrize("key", ["target_sparsity", "sparsity", "epochs_trained"])
@pytest.mark.parametrize("value", [None, "1", math.nan, math.inf, -math.inf, True])
def test_a_level_s_numbers_are_finite_numbers(key: str, value: Any) -> None:
    assert level_problem(lvl(**{key: value}), 0, None) == f"level 0 (pruned) has {key}={value!r}, not a finite number"


@pytest.mark.parametrize("key", ["params_total", "params_nonzero", "prunable_total", "prunable_nonzero"])
@pytest.mark.parametrize("value", [None, 1.0, -1, True, "5"])
def test_a_level_s_counts_are_non_negative_ints(key: str, value: Any) -> None:
    assert level_problem(lvl(**{key: value}), 0, None) == f"level 0 (pruned) has {key}={value!r}, not a count"


def test_a_count_of_zero_is_a_count() -> None:
    assert level_problem(lvl(params_nonzero=0), 0, None) is None


@pytest.mark.parametrize("key", ["test_acc", "test_loss"])
@pytest.mark.parametrize("value", [math.nan, math.inf, None, "0.9", False])
def test_test_metrics_are_finite(key: str, value: Any) -> None:
    assert level_problem(lvl(**{key: value}), 0, {"val": 0}) == (
        f"level 0 (pruned) has {key}={value!r}: a non-finite test metric (training diverged, or the test split "
        "is empty)")


@pytest.mark.parametrize("key", ["val_acc", "val_loss"])
def test_validation_metrics_are_finite_unless_the_validation_split_is_empty(key: str) -> None:
    reason = f"level 0 (pruned) has {key}=nan: a non-finite validation metric on a non-empty split"
    assert level_problem(lvl(**{key: math.nan}), 0, {"val": 5}) == reason
    assert level_problem(lvl(**{key: math.nan}), 0, None) == reason  # schema 1: sizes unknown, so not empty
    assert level_problem(lvl(**{key: math.nan}), 0, {}) == reason
    assert level_problem(lvl(**{key: math.nan}), 0, {"val": 0}) is None  # an empty split: NaN is its value
    for other in (math.inf, None, "x"):  # an empty split still holds a number: NaN, nothing else
        assert level_problem(lvl(**{key: other}), 0, {"val": 0}) is not None
    assert level_problem(lvl(**{key: 0.5}), 0, {"val": 0}) is None


@pytest.mark.parametrize(("total", "nonzero"), [(0, 0), (10, 11)])
def test_the_prunable_counts_hold_together(total: int, nonzero: int) -> None:
    assert level_problem(lvl(prunable_total=total, prunable_nonzero=nonzero), 1, None) == \
        f"level 1 (pruned) counts {nonzero} nonzero of {total} prunable weights"


def test_all_prunable_weights_nonzero_is_a_level_at_sparsity_0() -> None:
    dense = lvl(prunable_nonzero=100, sparsity=0.0, target_sparsity=0.0)
    assert level_problem(dense, 0, None) is None


def test_the_recorded_sparsity_is_the_one_the_counts_give() -> None:
    assert level_problem(lvl(sparsity=0.5 + 2e-9), 0, None) == \
        "level 0 (pruned) records sparsity 0.500000002, but its counts give 0.5"
    assert level_problem(lvl(sparsity=0.5 + 5e-10, target_sparsity=0.5), 0, None) is None  # float noise


def test_a_level_far_from_its_target_must_be_marked_off_target() -> None:
    far = lvl(prunable_nonzero=40, sparsity=0.6, target_sparsity=0.5)
    assert level_problem(far, 0, None) == \
        "level 0 (pruned) is at measured sparsity 0.6000, not its target 0.5000, and is not marked off_target"
    assert level_problem({**far, "off_target": True}, 0, None) is None
    assert level_problem({**far, "off_target": 1}, 0, None) is not None  # the mark is the boolean true
    assert level_problem({**far, "off_target": False}, 0, None) is not None
    below = lvl(prunable_nonzero=60, sparsity=0.4, target_sparsity=0.5)
    assert level_problem(below, 0, None) is not None  # either side of the target


def test_the_tolerance_is_half_a_point_or_half_a_weight_per_layer() -> None:
    assert TOLERANCE == 0.005
    assert tolerance(100_000, 3) == pytest.approx(0.005 + 1e-9, abs=1e-15)
    assert tolerance(100, 3) == pytest.approx(3 / 200 + 1e-9, abs=1e-15)  # tiny nets: each layer rounds
    assert tolerance(1000, 10) == pytest.approx(0.005 + 1e-9, abs=1e-15)  # the two rules meet
    assert tolerance(999, 10) > 0.005 + 1e-9
    assert tolerance(0, 1) == pytest.approx(0.5 + 1e-9)  # no weights: no division by zero
    assert tolerance(1, 1) == pytest.approx(0.5 + 1e-9)


def test_the_tolerance_counts_the_level_s_layers() -> None:
    # 1000 prunable weights: one layer 0.5% (5 weights), four layers half a weight each: 0.2% -> 0.5% still;
    # 40 layers: 2%
    base = dict(prunable_total=1000, target_sparsity=0.5)
    near = lvl(**base, prunable_nonzero=489, sparsity=0.511)  # 1.1 points off
    assert level_problem(near, 0, None) is not None
    many = {f"l{i}.weight": 0.5 for i in range(40)}
    assert level_problem({**near, "layers": many}, 0, None) is None
    assert level_problem({**near, "layers": {}}, 0, None) is not None  # no layers listed: one
    assert level_problem({**near, "layers": ["a"] * 40}, 0, None) is not None  # not a mapping: one
    at_edge = lvl(**base, prunable_nonzero=495, sparsity=0.505)
    assert level_problem(at_edge, 0, None) is None  # exactly half a point: at its target
    past_edge = lvl(**base, prunable_nonzero=494, sparsity=0.506)
    assert level_problem({**past_edge, "layers": {"a": 0.5}}, 0, None) is not None


# --- artifacts -----------------------------------------------------------------------------------------------

def write_artifacts(folder: Path) -> dict[str, Any]:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.pt").write_bytes(b"weights" * 1000)
    (folder / "masks.json").write_text('{"a.weight": [1, 0]}')
    return artifacts(folder)


def test_artifacts_are_the_sha256_and_size_of_each_file_that_exists(tmp_path: Path) -> None:
    assert ARTIFACTS == ("model.pt", "masks.json")
    found = write_artifacts(tmp_path)
    data = b"weights" * 1000
    assert found["model.pt"] == {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    assert found["masks.json"]["bytes"] == len('{"a.weight": [1, 0]}')
    (tmp_path / "masks.json").unlink()
    assert set(artifacts(tmp_path)) == {"model.pt"}
    (tmp_path / "other.pt").write_bytes(b"x")
    assert set(artifacts(tmp_path)) == {"model.pt"}


def test_sha256_file_reads_files_larger_than_its_block(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # 2.3 MB: three blocks of 1 MiB
    (tmp_path / "big").write_bytes(data)
    assert sha256_file(tmp_path / "big") == hashlib.sha256(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert sha256_file(tmp_path / "empty") == hashlib.sha256(b"").hexdigest()


def test_an_artifact_must_match_its_checksum(tmp_path: Path) -> None:
    sums = write_artifacts(tmp_path)
    record = rec(artifacts=sums)
    assert artifact_problem(tmp_path, record) is None
    (tmp_path / "masks.json").write_text('{"a.weight": [0, 1]}')  # same size, other bytes
    assert artifact_problem(tmp_path, record) == \
        "masks.json does not match the checksum in results.json (damaged or replaced)"
    write_artifacts(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"weights" * 1000 + b"!")  # another size
    assert artifact_problem(tmp_path, record) == \
        "model.pt does not match the checksum in results.json (damaged or replaced)"


def test_a_size_that_matches_with_another_hash_or_the_hash_with_another_size_fails(tmp_path: Path) -> None:
    sums = write_artifacts(tmp_path)
    wrong_size = {"model.pt": {**sums["model.pt"], "bytes": sums["model.pt"]["bytes"] + 1}}
    assert artifact_problem(tmp_path, rec(artifacts=wrong_size)) is not None
    wrong_hash = {"model.pt": {**sums["model.pt"], "sha256": "0" * 64}}
    assert artifact_problem(tmp_path, rec(artifacts=wrong_hash)) is not None
    assert artifact_problem(tmp_path, rec(artifacts={"model.pt": {}})) is not None


def test_a_missing_artifact_and_an_unknown_one(tmp_path: Path) -> None:
    sums = write_artifacts(tmp_path)
    (tmp_path / "model.pt").unlink()
    reason = artifact_problem(tmp_path, rec(artifacts=sums))
    assert reason.startswith("model.pt is missing or unreadable (") and "No such file" in reason
    assert artifact_problem(tmp_path, rec(artifacts={"evil.py": sums["masks.json"]})) == \
        "results.json lists an unknown artifact 'evil.py'"
    assert artifact_problem(tmp_path, rec(artifacts={"masks.json": "abc"})) == \
        "results.json lists an unknown artifact 'masks.json'"


def test_schema_1_records_no_artifacts(tmp_path: Path) -> None:
    assert artifact_problem(tmp_path, without(RECORD, "artifacts")) is None
    assert artifact_problem(tmp_path, rec(artifacts=None)) is None


# --- reading a run folder ------------------------------------------------------------------------------------

def finished(folder: Path, **changes: Any) -> dict[str, Any]:
    record = rec(artifacts=write_artifacts(folder), **changes)
    (folder / "results.json").write_text(json.dumps(record))
    return record


def test_inspect_a_complete_run(tmp_path: Path) -> None:
    record = finished(tmp_path)
    assert inspect(tmp_path) == (record, None)
    assert complete(tmp_path, RECORD["config_hash"]) == record
    assert complete(tmp_path, "fedcba9876543210") is None  # another configuration's


def test_inspect_no_results_json(tmp_path: Path) -> None:
    assert inspect(tmp_path) == (None, None)
    assert inspect(tmp_path / "absent") == (None, None)
    assert complete(tmp_path, RECORD["config_hash"]) is None


def test_inspect_an_unreadable_or_invalid_results_json(tmp_path: Path) -> None:
    (tmp_path / "results.json").mkdir()
    record, reason = inspect(tmp_path)
    assert record is None and reason == "results.json is unreadable (Is a directory)"
    (tmp_path / "results.json").rmdir()
    (tmp_path / "results.json").write_text('{"status": "ok",')
    record, reason = inspect(tmp_path)
    assert record is None and reason.startswith("results.json is not valid JSON (")


def test_inspect_a_record_that_breaks_the_contract_or_its_artifacts(tmp_path: Path) -> None:
    finished(tmp_path, status="running")
    assert inspect(tmp_path) == (None, "results.json has status 'running'")
    assert complete(tmp_path, RECORD["config_hash"]) is None
    finished(tmp_path)
    (tmp_path / "model.pt").write_bytes(b"tampered")
    assert inspect(tmp_path)[1] == "model.pt does not match the checksum in results.json (damaged or replaced)"
    assert complete(tmp_path, RECORD["config_hash"]) is None
    record, reason = inspect(tmp_path, verify_artifacts=False)  # the analysis reading many runs fast
    assert reason is None and record["status"] == "ok"


def test_the_contract_is_pure_python() -> None:
    assert "torch" not in {name.split(".")[0] for name in vars(contract) if not name.startswith("_")}
    assert contract.RESULTS == "results.json" and contract.SCHEMA_VERSION == 2
