"""Sweep folders -> one tidy DataFrame (one row per run x sparsity level), plus what could not be read.

A run folder is any folder holding `.hydra/`, `results.json`, `error.json`, `metrics.jsonl` or
`checkpoints/`; the walk stops descending at a run folder, skips dot-folders (`.submitit/`, `.hydra/`)
and so reads local and SLURM sweeps alike. Only `results.json` is parsed on the hot path (json, never
YAML): `overrides` names the swept keys, `config` gives their resolved values in runs that did not sweep
them, so several sweeps merge into one table.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

RESULTS, ERROR, METRICS = "results.json", "error.json", "metrics.jsonl"
RUN_MARKERS = frozenset((".hydra", RESULTS, ERROR, METRICS, "checkpoints"))
LAYER_FIELDS = ("numel", "nonzero", "sparsity")  # per layer, in results.json's `layers`
# Config groups: results.json names the chosen option at top level.
CHOICES = ("dataset", "model", "init", "pruner", "train", "experiment")
# Override keys that are not a condition to compare: the seed and the target are the statistics' axes,
# the rest are locations or machine settings that do not change the experiment.
NOT_CONDITIONS = ("seed", "sparsity", "device", "keep_checkpoints", "dataset.data_dir", "dataset.download")
# Targets of one-shot runs and IMP rounds computed as 1-(1-p)^k differ in the last bits across runs:
# aligning to 4 decimals puts them on one level (0.01% of the weights).
LEVEL_DECIMALS = 4


@dataclass
class Sweep:
    """What `load_sweep` found: `runs` (tidy table), `layers` (per-layer sparsity, long) and `problems`."""

    runs: pd.DataFrame
    layers: pd.DataFrame
    problems: pd.DataFrame
    swept: list[str] = field(default_factory=list)


def find_run_dirs(paths: Iterable[str | os.PathLike]) -> list[tuple[str, str]]:
    """(sweep root, run folder) for every run folder below `paths` (a path may itself be a run folder)."""
    found: list[tuple[str, str]] = []
    for root in map(os.fspath, paths):
        if not os.path.isdir(root):
            raise FileNotFoundError(
                f"{root} is not a folder; pass a sweep folder (hydra.sweep.dir) or a run folder"
            )
        stack = [root]
        while stack:
            folder = stack.pop()
            subfolders = []
            with os.scandir(folder) as it:
                for entry in it:
                    if entry.name in RUN_MARKERS:
                        found.append((root, folder))
                        break
                    if not entry.name.startswith(".") and entry.is_dir():
                        subfolders.append(entry.path)
                else:
                    stack += subfolders
    return sorted(found, key=lambda rf: rf[1])


SCALARS = (type(None), bool, int, float, str)


def _scalar(value: Any) -> bool:
    return type(value) in SCALARS or isinstance(value, SCALARS)


def _lookup(config: dict[str, Any], key: str) -> Any:
    node: Any = config
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _parse_value(text: str) -> Any:
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if _scalar(value) else text


def override_keys(overrides: Sequence[str]) -> dict[str, str]:
    """{"train.epochs": "5"} from ["train.epochs=5"]; Hydra's +/++ prefixes dropped, deletions (~key) skipped."""
    out = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if sep and not key.startswith("~"):
            out[key.lstrip("+").replace("/", ".")] = value
    return out


def _level_fields(level: dict[str, Any]) -> dict[str, Any]:
    """Scalar fields as they are, nested dicts of scalars flattened ("before_finetune.test_acc"); not `layers`."""
    out: dict[str, Any] = {}
    for key, value in level.items():
        if type(value) in SCALARS:
            out[key] = value
        elif key != "layers" and isinstance(value, dict):
            out.update({f"{key}.{k}": v for k, v in value.items() if type(v) in SCALARS})
    return out


def _target_level(level: dict[str, Any]) -> float:
    target = level.get("target_sparsity")
    if not isinstance(target, (int, float)) or isinstance(target, bool) or not math.isfinite(target):
        target = level.get(
            "sparsity", math.nan
        )  # a method that sets no target is aligned on what it measured
    return round(float(target), LEVEL_DECIMALS)


def read_run(root: str, run_dir: str) -> dict[str, Any]:
    """One run folder -> {"rows": [...], "layers": [...], "overrides": {...}} or {"problem": {...}}."""
    name = run_dir[len(root) :].lstrip(os.sep) if run_dir.startswith(root) else os.path.relpath(run_dir, root)
    base = {"sweep": root, "run": name or os.path.basename(run_dir), "run_dir": run_dir}
    try:
        with open(os.path.join(run_dir, RESULTS), "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return {"problem": {**base, **_why_no_results(Path(run_dir))}}
    except OSError as e:
        return {"problem": {**base, "status": "unreadable", "reason": f"results.json: {e}"}}
    try:
        record = json.loads(text)
    except ValueError as e:
        return {"problem": {**base, "status": "corrupt", "reason": f"results.json is not valid JSON ({e})"}}
    levels = record.get("levels") if isinstance(record, dict) else None
    if (
        not isinstance(record, dict)
        or record.get("status") != "ok"
        or not isinstance(levels, list)
        or not levels
    ):
        status = record.get("status") if isinstance(record, dict) else type(record).__name__
        return {
            "problem": {
                **base,
                "status": "corrupt",
                "reason": f"results.json has status {status!r} and {len(levels or [])} levels",
            }
        }
    run = {
        **base,
        **{k: record.get(k) for k in CHOICES},
        "seed": record.get("seed"),
        "run_target_sparsity": record.get("target_sparsity"),
        "config_hash": record.get("config_hash"),
        "wall_time_s": record.get("wall_time_s"),
        "peak_rss_mb": record.get("peak_rss_mb"),
    }
    rows, layer_rows = [], []
    for i, level in enumerate(levels):
        if not isinstance(level, dict):
            return {
                "problem": {
                    **base,
                    "status": "corrupt",
                    "reason": f"level {i} of results.json is not an object",
                }
            }
        fields = _level_fields(level)
        fields["level_name"] = fields.pop("name", None)
        rows.append({**run, "level": i, "target_level": _target_level(level), **fields})
        layers = level.get("layers")
        if isinstance(layers, dict):
            layer_rows += [
                (run_dir, i, j, layer, v.get("numel"), v.get("nonzero"), v.get("sparsity"))
                for j, (layer, v) in enumerate(layers.items())
                if isinstance(v, dict)
            ]
    return {
        "rows": rows,
        "layers": layer_rows,
        "overrides": override_keys(record.get("overrides") or []),
        "config": record.get("config") or {},
    }


def _why_no_results(run_dir: Path) -> dict[str, Any]:
    try:
        error = json.loads((run_dir / ERROR).read_bytes())
    except FileNotFoundError:
        error = None
    except (OSError, ValueError) as e:
        return {"status": "failed", "reason": f"error.json unreadable ({e})"}
    if isinstance(error, dict):
        return {"status": f"failed ({error.get('kind', '?')})", "reason": str(error.get("error", "?"))}
    latest = max((p.stat().st_mtime for p in [run_dir, *run_dir.iterdir()]), default=math.nan)
    age = time.time() - latest
    return {
        "status": "incomplete",
        "reason": f"no results.json or error.json: still running or interrupted (last write {age / 60:.0f} min ago)",
    }


def _read_chunk(items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [read_run(root, run_dir) for root, run_dir in items]


def _read_all(items: list[tuple[str, str]], workers: int) -> list[dict[str, Any]]:
    if workers <= 1 or len(items) < 2 * workers:
        return _read_chunk(items)
    size = math.ceil(len(items) / (workers * 4))  # a few chunks per worker: balanced, few round trips
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    with ProcessPoolExecutor(workers) as pool:
        return [out for chunk in pool.map(_read_chunk, chunks) for out in chunk]


def _condition_label(values: dict[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in values.items())


def load_sweep(paths: str | os.PathLike | Iterable[str | os.PathLike], workers: int = 1) -> Sweep:
    """Read every run below `paths` (sweep folders or run folders, merged).

    runs: one row per run x level. Columns: sweep, run, run_dir; dataset, model, init, pruner, train,
      experiment, seed; run_target_sparsity (the run's `sparsity`); one column per swept key (the union of
      the runs' override keys, resolved from `config` where a run did not override it) and `condition`
      (the swept keys whose values differ between runs, as "k=v,...", without seed, sparsity and
      locations: the label that keeps different settings apart);
      level, level_name, target_level (the level's target, rounded: the x to align on), the measured
      sparsity, test/val metrics, parameter counts and any other field a level carries (nested ones as
      "before_finetune.test_acc").
    layers: run_dir, level, layer_index, layer, numel, nonzero, sparsity (one row per run x level x layer).
    problems: sweep, run, run_dir, status (failed (config|crash), corrupt, incomplete), reason.
    workers: processes reading results.json. One is the default: shipping the parsed rows back from a pool
      costs about what parsing saves (benchmarks/bench_load_runs.py measures both).
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    outs = _read_all(find_run_dirs(paths), workers)
    problems = [o["problem"] for o in outs if "problem" in o]
    done = [o for o in outs if "rows" in o]
    swept = sorted({k for o in done for k in o["overrides"]} - set(CHOICES) - {"seed"})
    conditions = [k for k in swept if k not in NOT_CONDITIONS and not k.endswith(".sparsity")]
    per_run = []
    for o in done:
        values = {}
        for key in swept:
            value = _lookup(o["config"], key)
            if not _scalar(value) or value is None:
                value = _parse_value(o["overrides"][key]) if key in o["overrides"] else value
            values[key] = value if _scalar(value) else json.dumps(value)
        values.pop("sparsity", None)  # the same as run_target_sparsity
        per_run.append(values)
    # the label names what tells runs apart: keys with one value in every run, and keys a run lacks
    # (a pruner without that option), are left out of it
    varying = [k for k in conditions if len({repr(v[k]) for v in per_run}) > 1]
    rows, layers = [], []
    for o, values in zip(done, per_run):
        label = _condition_label({k: values[k] for k in varying if values[k] is not None})
        rows += [{**row, **values, "condition": label} for row in o["rows"]]
        layers += o["layers"]
    runs = pd.DataFrame(rows)
    if runs.empty:
        runs = pd.DataFrame(
            columns=[
                "sweep",
                "run",
                "run_dir",
                *CHOICES,
                "seed",
                "run_target_sparsity",
                "condition",
                "level",
                "level_name",
                "target_level",
                "sparsity",
                "test_acc",
            ]
        )
    layer_df = pd.DataFrame(layers, columns=["run_dir", "level", "layer_index", "layer", *LAYER_FIELDS])
    swept_cols = [k for k in swept if k != "sparsity"]
    runs.attrs["swept"] = swept_cols
    first = [c for c in (*run_columns(runs), "level", "level_name", "target_level", "sparsity") if c in runs]
    runs = runs[first + [c for c in runs.columns if c not in first]]  # what a run is, then what it measured
    runs.attrs["swept"] = swept_cols
    keys = [*run_columns(runs), "level", "level_name", "target_level"]
    layer_df = layer_df.merge(runs[keys], on=["run_dir", "level"], how="left")
    problem_df = pd.DataFrame(problems, columns=["sweep", "run", "run_dir", "status", "reason"])
    return Sweep(runs=runs, layers=layer_df, problems=problem_df, swept=swept_cols)


def load_runs(paths: str | os.PathLike | Iterable[str | os.PathLike], workers: int = 1) -> pd.DataFrame:
    """The tidy table of `load_sweep(paths).runs` (one row per run x level); see `load_sweep` for columns."""
    return load_sweep(paths, workers).runs


def run_columns(runs: pd.DataFrame) -> list[str]:
    """The columns of `runs` that describe the run, not one of its levels (same value on every level row)."""
    fixed = ["sweep", "run", "run_dir", *CHOICES, "seed", "run_target_sparsity", "config_hash", "condition"]
    swept = [c for c in runs.columns if c not in fixed and c in set(runs.attrs.get("swept", []))]
    return [c for c in fixed if c in runs.columns] + swept


def load_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """Per-epoch lines of the metrics.jsonl of every run in `runs`, with the run's columns.

    Columns: the run columns (init, seed, run_target_sparsity, condition...) and phase, epoch, step,
    train_loss, val_acc, val_loss. Read on demand for training curves, never by `load_runs`.
    """
    rows = []
    for run_dir in runs["run_dir"].drop_duplicates():
        try:
            lines = Path(run_dir, METRICS).read_text().splitlines()
        except OSError:
            continue
        for line in lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a line cut short by a run still writing
            if isinstance(record, dict) and "epoch" in record and "phase" in record:
                rows.append({"run_dir": run_dir, **{k: v for k, v in record.items() if _scalar(v)}})
    curves = pd.DataFrame(rows, columns=None if rows else ["run_dir", "phase", "epoch", "val_acc"])
    meta = runs[run_columns(runs)].drop_duplicates("run_dir")
    return curves.merge(meta, on="run_dir", how="left")
