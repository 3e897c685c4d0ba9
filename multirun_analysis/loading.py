"""Sweep folders -> one tidy DataFrame (one row per run x sparsity level), plus what could not be read.

A run folder is any folder holding `.hydra/`, `results.json`, `error.json`, `metrics.jsonl` or
`checkpoints/`; the walk stops descending at a run folder, skips dot-folders (`.submitit/`, `.hydra/`)
and so reads local and SLURM sweeps alike. Only `results.json` is parsed on the hot path (json, never
YAML).

Which runs share a curve comes from their configs, not from what was typed on the command line: two runs
belong to one condition when their resolved configs differ in nothing but the axes (seed, sparsity target)
and bookkeeping keys (`prune_lab.bookkeeping`, read at call time). The keys that differ between the loaded
runs become columns and the `condition` label, also when no sweep varied them on its command line (two
sweeps with different `train.lr` merged). A level's `branch` (an IMP control arm) is part of its curve.
"""

from __future__ import annotations

import hashlib
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

from prune_lab import bookkeeping
from prune_lab.record import artifact_problem, check_record

RESULTS, ERROR, METRICS = "results.json", "error.json", "metrics.jsonl"
RUN_MARKERS = frozenset((".hydra", RESULTS, ERROR, METRICS, "checkpoints"))
LAYER_FIELDS = ("numel", "nonzero", "sparsity")  # per layer, in results.json's `layers`
# Config groups: results.json names the chosen option at top level.
CHOICES = ("dataset", "model", "init", "pruner", "train", "experiment")
# A level without `branch` is the method's own; IMP control arms name theirs (randomly_reinitialize, ...).
MAIN_BRANCH = "main"
# Level fields that must be numbers: a run whose results.json holds anything else there is corrupt.
NUMERIC = ("target_sparsity", "sparsity", "epochs_trained")
NUMERIC_PREFIXES = ("params_", "prunable_", "flops_", "bytes_")
NUMERIC_SUFFIXES = ("_acc", "_loss")
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
            try:
                with os.scandir(folder) as it:
                    for entry in it:
                        if entry.name in RUN_MARKERS:
                            found.append((root, folder))
                            break
                        if not entry.name.startswith(".") and entry.is_dir():
                            subfolders.append(entry.path)
                    else:
                        stack += subfolders
            except OSError:  # unreadable, or removed while the walk ran: listed with its reason, never skipped
                found.append((root, folder))
    return sorted(found, key=lambda rf: rf[1])


SCALARS = (type(None), bool, int, float, str)


def _scalar(value: Any) -> bool:
    return type(value) in SCALARS or isinstance(value, SCALARS)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


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
            out[bookkeeping.normalize_key(key)] = value
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


def _not_a_number(fields: dict[str, Any]) -> str | None:
    """The first metric field that holds something other than a number (or null), as "name=value"."""
    for key, value in fields.items():
        numeric = key in NUMERIC or key.startswith(NUMERIC_PREFIXES) or key.endswith(NUMERIC_SUFFIXES)
        if numeric and value is not None and not _number(value):
            return f"{key}={value!r}"
    return None


def _target_level(level: dict[str, Any]) -> float:
    target = level.get("target_sparsity")
    if not _number(target) or not math.isfinite(target):
        target = level.get("sparsity", math.nan)  # a method that sets no target is aligned on what it measured
    return round(float(target), LEVEL_DECIMALS) if _number(target) else math.nan


def condition_key(config: dict[str, Any]) -> str:
    """12 hex digits naming a run's condition: a hash of its config minus bookkeeping, seed and target."""
    text = json.dumps(bookkeeping.condition_config(config), sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def read_run(root: str, run_dir: str) -> dict[str, Any]:
    """One run folder -> {"rows", "layers", "overrides", "settings"} or {"problem": {...}}.

    settings: the run's condition config, flattened to dotted keys ({"train.lr": 0.01, ...}).
    """
    name = run_dir[len(root) :].lstrip(os.sep) if run_dir.startswith(root) else os.path.relpath(run_dir, root)
    base = {"sweep": root, "run": name or os.path.basename(run_dir), "run_dir": run_dir}

    def problem(status: str, reason: str) -> dict[str, Any]:
        return {"problem": {**base, "status": status, "reason": reason}}

    try:
        with open(os.path.join(run_dir, RESULTS), "rb") as f:
            text = f.read()
    except FileNotFoundError:
        return {"problem": {**base, **_why_no_results(Path(run_dir))}}
    except OSError as e:
        return problem("unreadable", f"results.json: {e}")
    try:
        record = json.loads(text)
    except ValueError as e:
        return problem("corrupt", f"results.json is not valid JSON ({e})")
    # the one record contract (prune_lab.record): what the rerun calls complete is what this reads as complete
    bad = check_record(record) or artifact_problem(Path(run_dir), record)
    if bad:
        return problem("corrupt", bad)
    levels, seed, config = record["levels"], record["seed"], record["config"]
    overrides = record.get("overrides") if isinstance(record.get("overrides"), list) else []
    overrides = override_keys([o for o in overrides if isinstance(o, str)])
    settings = bookkeeping.flatten(bookkeeping.condition_config(config))
    if not config:  # an old or hand-made results.json: its overrides are all we know of its condition
        ignored = {*bookkeeping.BOOKKEEPING, *bookkeeping.AXES}
        settings = {k: _parse_value(v) for k, v in overrides.items() if k not in ignored}
    versions = record.get("versions") if isinstance(record.get("versions"), dict) else {}
    run = {
        **base,
        **{k: record.get(k) if _scalar(record.get(k)) else str(record.get(k)) for k in CHOICES},
        "seed": seed,
        "run_target_sparsity": record.get("target_sparsity") if _number(record.get("target_sparsity")) else None,
        "config_hash": record.get("config_hash"),
        "condition_key": condition_key(config) if config else "overrides:" + json.dumps(settings, sort_keys=True),
        "git_commit": versions.get("git_commit"),
        # the code digest (prune_lab's source and every _target_'s code; schema 2), else prune_lab's version:
        # what tells two runs' code apart when there is no git checkout (a pip install)
        "code": versions.get("code") or (f"prune_lab {versions['prune_lab']}" if versions.get("prune_lab") else None),
        "torch_version": versions.get("torch"),
        # the configured epochs ("train.epochs=5, train.finetune_epochs=2, ..."): a curve's runs must agree
        "budget": ", ".join(f"{k}={v}" for k, v in sorted(settings.items()) if k.endswith("epochs")),
        # examples in the test split (schema 2): an accuracy moves in steps of 1 / test_size
        "test_size": (record.get("splits") or {}).get("test"),
        "wall_time_s": record.get("wall_time_s"),
        "peak_rss_mb": record.get("peak_rss_mb"),
    }
    rows, layer_rows = [], []
    for i, level in enumerate(levels):
        fields = _level_fields(level)
        bad = _not_a_number(fields)
        if bad:
            return problem("corrupt", f"level {i} of results.json has {bad}, not a number")
        fields["off_target"] = level.get("off_target") is True  # whole units missed the target: the level says so
        fields["level_name"] = fields.pop("name", None)
        branch = fields.pop("branch", None)
        fields["branch"] = str(branch) if branch is not None else MAIN_BRANCH
        rows.append({**run, "level": i, "target_level": _target_level(level), **fields})
        layers = level.get("layers")
        if isinstance(layers, dict):
            layer_rows += [
                (run_dir, i, j, layer, v.get("numel"), v.get("nonzero"), v.get("sparsity"))
                for j, (layer, v) in enumerate(layers.items())
                if isinstance(v, dict) and all(_number(v.get(f)) for f in LAYER_FIELDS)
            ]
    # a control arm (branch) starts from the run's dense network: its curve gets the same dense level
    branches = {r["branch"] for r in rows} - {MAIN_BRANCH}
    dense = [r for r in rows if r["branch"] == MAIN_BRANCH and r["target_level"] == 0]
    rows += [{**r, "branch": b} for b in sorted(branches) for r in dense]
    return {"rows": rows, "layers": layer_rows, "overrides": overrides, "settings": settings, "config": bool(config)}


def _why_no_results(run_dir: Path) -> dict[str, Any]:
    try:
        error = json.loads((run_dir / ERROR).read_bytes())
    except FileNotFoundError:
        error = None
    except (OSError, ValueError) as e:
        return {"status": "failed", "reason": f"error.json unreadable ({e})"}
    if isinstance(error, dict):
        return {"status": f"failed ({error.get('kind', '?')})", "reason": str(error.get("error", "?"))}
    try:
        age = time.time() - max(map(_mtime, [run_dir, *run_dir.iterdir()]))
    except OSError as e:  # the folder went away (or became unreadable) while the sweep was read
        return {"status": "unreadable", "reason": f"run folder: {e.strerror or e}"}
    return {
        "status": "incomplete",
        "reason": f"no results.json or error.json: still running or interrupted (last write {age / 60:.0f} min ago)",
    }


def _mtime(path: Path) -> float:
    """A file's modification time; 0 for one a running job renamed or removed since the folder was listed."""
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_chunk(items: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [read_run(root, run_dir) for root, run_dir in items]


def _read_all(items: list[tuple[str, str]], workers: int) -> list[dict[str, Any]]:
    if workers <= 1 or len(items) < 2 * workers:
        return _read_chunk(items)
    size = math.ceil(len(items) / (workers * 4))  # a few chunks per worker: balanced, few round trips
    chunks = [items[i : i + size] for i in range(0, len(items), size)]
    with ProcessPoolExecutor(workers) as pool:
        return [out for chunk in pool.map(_read_chunk, chunks) for out in chunk]


def _cell(value: Any) -> Any:
    return value if _scalar(value) else json.dumps(value, sort_keys=True)


def _condition_keys(done: list[dict[str, Any]]) -> list[str]:
    """The setting keys that tell the loaded runs' conditions apart, less those a choice name already says.

    A key differs when two runs hold different values (or one lacks it). A key under a config group
    ("init.weight.mode") is left to the group's choice column ("init") when each choice value has one value
    of it; `train.lr` under one train choice ("adam") with two values stays a key of its own.
    """
    # a run without a config (an old results.json) knows only its overrides: it must not make every key of
    # the others look varied; its label may then equal another's, and _one_label_per_key tells them apart
    done = [o for o in done if o["config"]] or done
    keys = sorted({k for o in done for k in o["settings"]})
    out = []
    for key in keys:
        values = [repr(o["settings"].get(key, "<absent>")) for o in done]
        if len(set(values)) < 2:
            continue
        group = key.split(".")[0]
        if group in CHOICES:
            by_choice: dict[str, set[str]] = {}
            for o, v in zip(done, values):
                by_choice.setdefault(repr(o["rows"][0].get(group)), set()).add(v)
            if all(len(vs) == 1 for vs in by_choice.values()):
                continue
        out.append(key)
    return out


def load_sweep(paths: str | os.PathLike | Iterable[str | os.PathLike], workers: int = 1) -> Sweep:
    """Read every run below `paths` (sweep folders or run folders, merged).

    runs: one row per run x level. Columns: sweep, run, run_dir; dataset, model, init, pruner, train,
      experiment (the choice names), seed; run_target_sparsity (the pruner's target); one column per key
      that tells conditions apart (e.g. train.lr, whether or not a command line swept it) and per swept
      key (e.g. train.epochs); `condition` (those differing keys as "k=v,...", the label of a curve) and
      `condition_key` (a hash of the config minus bookkeeping, seed and target: runs with different keys
      are never averaged together); config_hash, git_commit, torch_version;
      level, level_name, branch ("main" unless the level is a control arm), target_level (the level's
      target, rounded: the x to align on), the measured sparsity, test/val metrics, parameter counts,
      epochs_trained where recorded and any other field a level carries (nested ones as
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
    ignored = {*CHOICES, *bookkeeping.BOOKKEEPING, *bookkeeping.AXES}
    swept = sorted({k for o in done for k in o["overrides"]} - ignored)
    varying = _condition_keys(done)
    columns = list(dict.fromkeys([*varying, *swept]))
    table = []
    for o in done:
        values = {}
        for key in columns:
            value = o["settings"].get(key)
            if value is None and key in o["overrides"]:  # a key only the command line names
                value = _parse_value(o["overrides"][key])
            values[key] = _cell(value)
        table.append(values)
    for key in columns:  # 0.01 in one run and "0.01" in another must not print alike: JSON text tells them apart
        if len({type(v) for v in (t[key] for t in table) if v is not None}) > 1:
            for t in table:
                t[key] = None if t[key] is None else json.dumps(t[key])
    rows, layers = [], []
    for o, values in zip(done, table):
        label = ",".join(f"{k}={values[k]}" for k in varying if values[k] is not None)
        rows += [{**row, **values, "condition": label} for row in o["rows"]]
        layers += o["layers"]
    runs = pd.DataFrame(rows)
    if runs.empty:
        runs = pd.DataFrame(
            columns=["sweep", "run", "run_dir", *CHOICES, "seed", "run_target_sparsity", "condition",
                     "condition_key", "level", "level_name", "branch", "target_level", "sparsity", "test_acc"]
        )
    else:
        runs = _one_label_per_key(runs)
    runs.attrs["swept"], runs.attrs["conditions"] = columns, varying
    first = [c for c in (*run_columns(runs), "level", "level_name", "branch", "target_level", "sparsity") if c in runs]
    runs = runs[first + [c for c in runs.columns if c not in first]]  # what a run is, then what it measured
    runs.attrs["swept"], runs.attrs["conditions"] = columns, varying
    layer_df = pd.DataFrame(layers, columns=["run_dir", "level", "layer_index", "layer", *LAYER_FIELDS])
    keys = [*run_columns(runs), "level", "level_name", "branch", "target_level"]
    layer_df = layer_df.merge(runs[keys].drop_duplicates(["run_dir", "level"]), on=["run_dir", "level"], how="left")
    layer_df.attrs = dict(runs.attrs)  # which settings tell curves apart (stats.curve_columns)
    problem_df = pd.DataFrame(problems, columns=["sweep", "run", "run_dir", "status", "reason"])
    return Sweep(runs=runs, layers=layer_df, problems=problem_df, swept=columns)


def _one_label_per_key(runs: pd.DataFrame) -> pd.DataFrame:
    """Guarantee that choices + condition name exactly one condition_key (a curve never pools two configs).

    The label lists every differing key, so this holds unless two values print alike (0.01 and "0.01"):
    then the label gets the key's hash appended.
    """
    names = [c for c in (*CHOICES, "condition") if c in runs]
    ambiguous = runs.groupby(names, dropna=False)["condition_key"].transform("nunique") > 1
    if ambiguous.any():
        runs = runs.copy()
        tagged = runs.loc[ambiguous, "condition"] + "#" + runs.loc[ambiguous, "condition_key"]
        runs.loc[ambiguous, "condition"] = tagged.str.lstrip(",")
    return runs


def load_runs(paths: str | os.PathLike | Iterable[str | os.PathLike], workers: int = 1) -> pd.DataFrame:
    """The tidy table of `load_sweep(paths).runs` (one row per run x level); see `load_sweep` for columns."""
    return load_sweep(paths, workers).runs


def run_columns(runs: pd.DataFrame) -> list[str]:
    """The columns of `runs` that describe the run, not one of its levels (same value on every level row)."""
    fixed = ["sweep", "run", "run_dir", *CHOICES, "seed", "run_target_sparsity", "config_hash", "condition",
             "condition_key", "code", "git_commit", "torch_version", "budget"]
    swept = [c for c in runs.columns if c not in fixed and c in set(runs.attrs.get("swept", []))]
    return [c for c in fixed if c in runs.columns] + swept


def read_curves(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(curves, problems): the per-epoch lines of every run's metrics.jsonl, and the lines skipped.

    curves: the run columns (init, seed, condition...) and phase, epoch, step, train_loss, val_acc,
      val_loss (and any other numeric field). A line that is not JSON, has no phase or epoch, or holds
      something other than a number in a numeric field ("val_acc": "oops") is skipped; problems has one
      row per run with skipped lines: sweep, run, run_dir, status ("damaged metrics.jsonl"), reason
      (how many lines, and the first one's number and fault).
    """
    rows, problems = [], []
    for run_dir in runs["run_dir"].drop_duplicates():
        try:
            lines = Path(run_dir, METRICS).read_text(errors="replace").splitlines()
        except OSError:
            continue
        skipped: list[str] = []
        for n, line in enumerate(lines, start=1):
            fault = None
            try:
                record = json.loads(line)
            except ValueError:
                record, fault = None, "not JSON"
            if fault is None and not (isinstance(record, dict) and "epoch" in record and "phase" in record):
                if isinstance(record, dict) and "phase" not in record and "epoch" not in record:
                    continue  # an event line (not an epoch): not for the curves
                fault = "no phase or epoch"
            if fault is None:
                values = {k: v for k, v in record.items() if k != "phase"}
                wrong = [f"{k}={v!r}" for k, v in values.items() if v is not None and not _number(v)]
                if not isinstance(record["phase"], str) or wrong or not _number(record["epoch"]):
                    fault = ", ".join(wrong) or f"phase={record['phase']!r}"
            if fault is not None:
                skipped.append(f"line {n} ({fault})")
                continue
            rows.append({"run_dir": run_dir, **record})
        if skipped:
            first = runs.loc[runs["run_dir"] == run_dir].iloc[0]
            problems.append({"sweep": first["sweep"], "run": first["run"], "run_dir": run_dir,
                             "status": "damaged metrics.jsonl",
                             "reason": f"{len(skipped)} line(s) skipped: {'; '.join(skipped[:3])}"})
    curves = pd.DataFrame(rows, columns=None if rows else ["run_dir", "phase", "epoch", "val_acc"])
    meta = runs[run_columns(runs)].drop_duplicates("run_dir")
    problem_df = pd.DataFrame(problems, columns=["sweep", "run", "run_dir", "status", "reason"])
    curves = curves.merge(meta, on="run_dir", how="left")
    curves.attrs = dict(runs.attrs)
    return curves, problem_df


def load_curves(runs: pd.DataFrame) -> pd.DataFrame:
    """The curves of `read_curves(runs)` (damaged lines skipped; `read_curves` also says which)."""
    return read_curves(runs)[0]


def early_stopping(curves: pd.DataFrame) -> pd.DataFrame:
    """run_dir, level_name, early_stop_epoch: the epoch of the best validation accuracy of the phase that
    made each level (the phase named like the level: dense, round-1, ...; a one-shot run's `finetune`
    made its `pruned` level). The first epoch wins a tie. The Lottery Ticket papers' early-stopping epoch."""
    if curves.empty or "val_acc" not in curves:
        return pd.DataFrame(columns=["run_dir", "level_name", "early_stop_epoch"])
    best = curves.dropna(subset=["val_acc"]).sort_values(["run_dir", "phase", "epoch"])
    best = best.loc[best.groupby(["run_dir", "phase"])["val_acc"].idxmax(), ["run_dir", "phase", "epoch"]]
    best["level_name"] = best["phase"].replace({"finetune": "pruned"})
    return best.rename(columns={"epoch": "early_stop_epoch"})[["run_dir", "level_name", "early_stop_epoch"]]


def layer_labels(layers: pd.DataFrame) -> dict[str, str]:
    """{"net.1.weight": "net.1 (Linear 4→12)", ...}: module path, type and shape of each pruned tensor.

    Shapes come from the model.pt of one run per model (its state_dict); the type is read from the weight's
    rank (2: Linear, 3-5: Conv1d-3d, the layer types prune_lab prunes). Without a readable model.pt (or
    torch) the label falls back to the weight count: "net.1 (144 weights)". A name used by two models with
    different shapes keeps the count too.
    """
    kinds = {2: "Linear", 3: "Conv1d", 4: "Conv2d", 5: "Conv3d"}
    shapes: dict[str, set[tuple[int, ...]]] = {}
    for run_dir in layers.drop_duplicates("model")["run_dir"] if "model" in layers else []:
        try:
            import torch  # only here: loading the table never needs it

            saved = torch.load(Path(run_dir, "model.pt"), map_location="cpu", weights_only=True)
            state = saved.get("state_dict", saved) if isinstance(saved, dict) else {}
            for name, tensor in state.items():
                if hasattr(tensor, "shape"):
                    shapes.setdefault(name, set()).add(tuple(tensor.shape))
        except Exception:  # noqa: BLE001 - any unreadable model.pt: fall back to counts, never fail the report
            continue
    out = {}
    for name, numel in layers.drop_duplicates("layer")[["layer", "numel"]].itertuples(index=False):
        module = name[: -len(".weight")] if name.endswith(".weight") else name
        found = shapes.get(name, set())
        shape = next(iter(found)) if len(found) == 1 else None
        if shape and len(shape) in kinds and math.prod(shape) == numel:
            size = f"{shape[1]}→{shape[0]}" + (f", {'×'.join(map(str, shape[2:]))}" if len(shape) > 2 else "")
            out[name] = f"{module} ({kinds[len(shape)]} {size})"
        else:
            out[name] = f"{module} ({numel} weights)"
    return out
