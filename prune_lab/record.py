"""The record contract: what a run's `results.json` must be before it may say `status: ok`, checked in one place.

Every reader and the writer use `check_record` / `inspect`, so they never disagree about whether a run is
complete:
- the writer (`prune_lab.__main__.run`) checks the record before writing it; a record that fails is never
  written as ok (a non-finite metric fails the run as `diverged`, anything else as `invalid_record`);
- the skip check (`complete`, used by the run and by the launchers) calls a run complete only when its record
  passes and its artifacts (model.pt, masks.json) match the sha256 the record holds;
- `prune_lab.load_run` and `multirun_analysis` report a failing record as corrupt, with the same reason.

What a record must hold (schema 2): the types of its top-level fields; at least one level; in every level
finite test metrics (and finite validation metrics where the validation split is not empty), a measured
sparsity that is the prunable weights' zeros (`1 - prunable_nonzero / prunable_total`) and lies within
`tolerance` (half a percentage point) of the level's target, unless the level is marked `off_target`
(whole units could not land on it: the level says so, the run printed a line, the analysis carries the mark);
the artifacts' checksums.
Records of schema 1 (written before artifact checksums and code digests) are checked for what they hold.

Pure Python (json, hashlib): the analysis and the launchers import it without torch.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

RESULTS = "results.json"
SCHEMA_VERSION = 2
# The final network, written before results.json and checksummed in it (metrics.jsonl, per-epoch curves, is read
# line by line and its damaged lines reported by the analysis: it does not decide whether a run is complete).
ARTIFACTS = ("model.pt", "masks.json")
TEST_METRICS, VAL_METRICS = ("test_acc", "test_loss"), ("val_acc", "val_loss")
COUNTS = ("params_total", "params_nonzero", "prunable_total", "prunable_nonzero")
# top-level field -> the types it may hold (None: may be missing in schema 1)
FIELDS: dict[str, tuple[type, ...]] = {
    "schema_version": (int,), "status": (str,), "seed": (int,), "config_hash": (str,), "config": (dict,),
    "overrides": (list,), "target_sparsity": (int, float), "levels": (list,), "versions": (dict,),
}
FIELDS_V2: dict[str, tuple[type, ...]] = {"artifacts": (dict,), "splits": (dict,)}


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return _number(value) and math.isfinite(value)


TOLERANCE = 0.005  # a level within half a percentage point of its target is at its target (whole units, below)


def tolerance(prunable_total: int, layers: int) -> float:
    """How far a level's measured sparsity may lie from its target: half a percentage point (whole units of a
    real network land near, not on, most targets: LeNet-300-100 at 0.5 lands on 0.5011), or half a weight per
    layer where that is more (each layer rounds its count of pruned weights: tiny networks)."""
    return max(TOLERANCE, layers / (2 * max(prunable_total, 1))) + 1e-9


def level_problem(level: Any, i: int, splits: Mapping[str, Any] | None) -> str | None:
    """Why level `i` breaks the contract, or None. `splits`: the record's split sizes (None in schema 1)."""
    if not isinstance(level, dict):
        return f"level {i} is not an object"
    name = level.get("name")
    where = f"level {i} ({name})" if isinstance(name, str) else f"level {i}"
    for key in ("target_sparsity", "sparsity", "epochs_trained"):
        if not _finite(level.get(key)):
            return f"{where} has {key}={level.get(key)!r}, not a finite number"
    for key in COUNTS:
        if isinstance(level.get(key), bool) or not isinstance(level.get(key), int) or level[key] < 0:
            return f"{where} has {key}={level.get(key)!r}, not a count"
    for key in TEST_METRICS:
        if not _finite(level.get(key)):
            return (f"{where} has {key}={level.get(key)!r}: a non-finite test metric (training diverged, "
                    "or the test split is empty)")
    val_empty = splits is not None and splits.get("val") == 0
    for key in VAL_METRICS:
        value = level.get(key)
        if not (_finite(value) or (val_empty and _number(value) and math.isnan(value))):
            return f"{where} has {key}={value!r}: a non-finite validation metric on a non-empty split"
    total, nonzero = level["prunable_total"], level["prunable_nonzero"]
    if total == 0 or nonzero > total:
        return f"{where} counts {nonzero} nonzero of {total} prunable weights"
    if abs(level["sparsity"] - (1 - nonzero / total)) > 1e-9:
        return f"{where} records sparsity {level['sparsity']!r}, but its counts give {1 - nonzero / total!r}"
    layers = level.get("layers")
    n_layers = len(layers) if isinstance(layers, dict) and layers else 1
    off = abs(level["sparsity"] - level["target_sparsity"])
    if off > tolerance(total, n_layers) and level.get("off_target") is not True:
        return (f"{where} is at measured sparsity {level['sparsity']:.4f}, not its target "
                f"{level['target_sparsity']:.4f}, and is not marked off_target")
    return None


def check_record(record: Any) -> str | None:
    """Why a results.json (parsed) breaks the contract, or None when it holds."""
    if not isinstance(record, dict):
        return f"results.json holds a {type(record).__name__}, not an object"
    if record.get("status") != "ok":
        return f"results.json has status {record.get('status')!r}"
    version = record.get("schema_version", 1)
    if isinstance(version, bool) or not isinstance(version, int):  # checked first: it picks the fields below
        return f"results.json has schema_version={str(version)[:60]!r}, not of type int"
    fields = {**FIELDS, **(FIELDS_V2 if version >= 2 else {})}
    for key, types in fields.items():
        value = record.get(key)
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
            return f"results.json has {key}={str(value)[:60]!r}, not of type {'/'.join(t.__name__ for t in types)}"
    if not record["levels"]:
        return "results.json has no level"
    if not all(isinstance(o, str) for o in record["overrides"]):
        return "results.json has overrides that are not strings"
    splits = record.get("splits")
    for i, level in enumerate(record["levels"]):
        problem = level_problem(level, i, splits)
        if problem:
            return problem
    return None


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def artifact_problem(run_dir: Path, record: Mapping[str, Any]) -> str | None:
    """Why the run's artifacts do not match the checksums its record holds, or None (schema 1: not recorded)."""
    for name, expected in (record.get("artifacts") or {}).items():
        if name not in ARTIFACTS or not isinstance(expected, dict):
            return f"results.json lists an unknown artifact {name!r}"
        path = run_dir / name
        try:
            size = os.stat(path).st_size
            if size != expected.get("bytes") or sha256_file(path) != expected.get("sha256"):
                return f"{name} does not match the checksum in results.json (damaged or replaced)"
        except OSError as e:
            return f"{name} is missing or unreadable ({e.strerror or e})"
    return None


def artifacts(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The checksums of a finished run's artifacts, for its record."""
    return {name: {"sha256": sha256_file(run_dir / name), "bytes": (run_dir / name).stat().st_size}
            for name in ARTIFACTS if (run_dir / name).exists()}


def inspect(run_dir: Path, verify_artifacts: bool = True) -> tuple[dict[str, Any] | None, str | None]:
    """(the record, None) for a complete run; (None, why) for a results.json that breaks the contract;
    (None, None) where there is no results.json."""
    try:
        text = (run_dir / RESULTS).read_bytes()
    except FileNotFoundError:
        return None, None
    except OSError as e:
        return None, f"results.json is unreadable ({e.strerror or e})"
    try:
        record = json.loads(text)
    except ValueError as e:
        return None, f"results.json is not valid JSON ({e})"
    problem = check_record(record) or (artifact_problem(run_dir, record) if verify_artifacts else None)
    return (None, problem) if problem else (record, None)


def complete(run_dir: Path, config_hash: str) -> dict[str, Any] | None:
    """The record of a complete run of config `config_hash` in `run_dir`, else None: the one skip check."""
    record, _ = inspect(run_dir)
    return record if record is not None and record.get("config_hash") == config_hash else None
