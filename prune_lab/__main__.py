"""`python -m prune_lab`: one pruning experiment composed by Hydra (add -m and comma lists to sweep).

Config groups: dataset, model, init, pruner, train (see conf/). Top-level keys: seed (int),
sparsity (float in [0, 1)), device (auto|cpu|cuda). Results go to the run folder Hydra prints;
`results.json` there is written last and marks the run complete, so rerunning into the same folder
skips finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from prune_lab.bookkeeping import experiment_config, flatten
from prune_lab.cache import DenseCache, load_once
from prune_lab.collapse import refuse_certain_collapse
from prune_lab.config import CONF_DIR, RunSpec, compose_run
from prune_lab.errors import DataAbsent, FolderTaken, UserError
from prune_lab.guard import WHERE, guarded
from prune_lab.job import Job
from prune_lab.loggers import Trackers
from prune_lab.objectives import build_objective
from prune_lab.progress import Fanout, Progress
from prune_lab.record import RESULTS, inspect
from prune_lab.results import (
    METRICS,
    MetricsLog,
    code_digest,
    now,
    read_results,
    versions,
    write_artifacts,
    write_error,
    write_results,
)
from prune_lab.seeding import generator, seed_everything
from prune_lab.storage import PhaseStore, atomic_write_bytes, clean_leftovers, remove_stale_temp_files, set_aside
from prune_lab.threads import apply_threads

# Where a run ran: its SLURM job (SLURM_RESTART_COUNT counts requeues) and the GPUs it was given.
RECORDED_ENV = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
                "SLURM_JOB_PARTITION", "SLURMD_NODENAME", "CUDA_VISIBLE_DEVICES")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={device} but torch sees no CUDA GPU here; use device=cpu or device=auto")
    return torch.device(device)


def differing_keys(a: dict[str, Any], b: dict[str, Any], most: int = 6) -> str:
    """"train.lr: 0.01 -> 0.002, seed: 0 -> 1": the experiment keys in which two resolved configs differ."""
    fa, fb = flatten(experiment_config(a)), flatten(experiment_config(b))
    keys = sorted(k for k in fa.keys() | fb.keys() if fa.get(k, "<absent>") != fb.get(k, "<absent>"))
    shown = ", ".join(f"{k}: {fa.get(k, '<absent>')} -> {fb.get(k, '<absent>')}" for k in keys[:most])
    return shown + (f" (+{len(keys) - most} more)" if len(keys) > most else "")


def build_job(spec: RunSpec, run_dir: Path, job_type: type[Job] = Job, *, device: torch.device | None = None,
              threads: int | None = None) -> Job:
    """seed -> data -> model -> init -> the job the pruner drives, its target checked before any training.

    `run` trains what this builds; tests and notebooks build the very same job with it."""
    device = resolve_device(spec.device) if device is None else device
    threads = apply_threads(spec.threads) if threads is None else threads  # parallel runs share the cores
    seed_everything(spec.seed)
    cache = DenseCache.open(spec.cache_dir, spec.config, device, threads)  # an unwritable cache_dir stops us first
    started = time.perf_counter()
    # what start-up is doing, as it happens (a first epoch may be a minute away); log_every=0: no progress lines
    say = logging.getLogger("prune_lab").info if spec.config.get("log_every") != 0 else (lambda message: None)
    say(f"loading {spec.choices.get('dataset')}...")
    data = load_once(spec.dataset).to(device)  # a local sweep's jobs share one load of the same dataset
    model = spec.model(data.info)
    spec.init(model, generator(spec.seed, "init"))
    model = model.to(device)
    say(f"data: {len(data.train)} train / {len(data.val)} val / {len(data.test)} test; model "
        f"{spec.choices.get('model')}: {sum(p.numel() for p in model.parameters()):,} parameters, init "
        f"{spec.choices.get('init')}, on {device} with {threads} thread(s) ({time.perf_counter() - started:.1f} s)")
    prunable = spec.prunable.names(model)
    params = dict(model.named_parameters())
    shapes = {n: tuple(params[n].shape) for n in prunable}
    spec.pruner.check(shapes, data)  # unreachable target, unfit score
    refuse_certain_collapse(shapes, spec.pruner.target, spec.pruner.final_selection())
    store = PhaseStore(run_dir / "checkpoints", spec.config_hash, code_digest(spec.config))
    metrics = MetricsLog(run_dir / METRICS)
    return job_type(model, data, spec.train, prunable, spec.init, spec.seed, store, metrics, dense_cache=cache,
                    measure=spec.measure, tickets=run_dir / "tickets" if spec.keep_tickets else None)


def claim(spec: RunSpec, run_dir: Path) -> dict[str, Any] | None:
    """The complete record of this very run (skip it), or None once the folder is this run's to write.

    A folder holding another configuration's results or checkpoints is refused (FolderTaken) before anything is
    written into it; a results.json of this run that breaks the record contract (prune_lab.record) is moved
    aside with one line, and the run is done again."""
    done, problem = inspect(run_dir)
    if done is not None:
        if done.get("config_hash") != spec.config_hash:
            raise FolderTaken(
                f"{run_dir} holds results of another configuration "
                f"({differing_keys(done.get('config') or {}, spec.config)}); "
                "use a new folder (hydra.run.dir=... / hydra.sweep.dir=...) or delete it")
        recorded, code = (done.get("versions") or {}).get("code"), code_digest(spec.config)
        other = f"; it ran other code ({recorded}, this is {code}): delete it to rerun" if recorded != code else ""
        print(f"prune_lab: {run_dir} is already complete (config {spec.config_hash}{other}); skipping")
        clean_leftovers(run_dir, keep_checkpoints=spec.keep_checkpoints)  # of a kill during the last writes
        return done
    if problem is not None:
        try:
            recorded_hash = json.loads((run_dir / RESULTS).read_bytes()).get("config_hash")
        except (OSError, ValueError, AttributeError):
            recorded_hash = None
        if isinstance(recorded_hash, str) and recorded_hash != spec.config_hash:
            raise FolderTaken(f"{run_dir} holds results of another configuration (hash {recorded_hash}; its "
                              f"results.json is damaged: {problem}); use a new folder (hydra.run.dir=... / "
                              "hydra.sweep.dir=...) or delete it")
        aside = set_aside(run_dir / RESULTS)
        print(f"prune_lab: {run_dir / RESULTS} fails its check ({problem}); moved it to {aside.name} and "
              "running again", file=sys.stderr, flush=True)
    PhaseStore.check_owner(run_dir / "checkpoints", spec.config_hash)  # another config's checkpoints: refused
    return None


def run(spec: RunSpec, run_dir: Path, overrides: list[str],
        on_accept: Callable[[], None] | None = None) -> dict[str, Any]:
    """seed -> data -> model -> init -> (the pruner's schedule of train / prune / evaluate) -> results.

    `on_accept` is called once the folder is this run's (prune_lab.__main__.claim), before any training."""
    started, t0 = now(), time.perf_counter()
    done = claim(spec, run_dir)
    if done is not None:
        return done
    if on_accept is not None:
        on_accept()
    removed = remove_stale_temp_files(run_dir)  # of writes a kill cut short (never a live writer's), every run
    if removed:
        print(f"prune_lab: removed {len(removed)} stale temp file(s) of interrupted writes in {run_dir}", flush=True)
    progress = Progress(spec.config.get("log_every", "auto"))  # a bad value stops the run here
    device = resolve_device(spec.device)
    threads = apply_threads(spec.threads)
    job = build_job(spec, run_dir, device=device, threads=threads)
    trackers = Trackers.open(spec.config, run_dir, spec.choices)  # logger=...: a missing package stops here
    job.log = Fanout(job.log, progress, trackers)  # metrics.jsonl, a progress line (console, .log), trackers
    job.tick = progress.tick if progress.live else None  # a terminal: the live bar inside epochs

    try:
        spec.pruner.run(job)  # the method's own schedule: train, prune, evaluate, rewind... each level recorded
    except BaseException:
        trackers.fail()  # the tracker's run is marked failed, not left running
        raise
    finally:
        progress.close()

    if not job.levels:
        raise RuntimeError(f"pruner {type(spec.pruner).__name__} recorded no level; it must call job.evaluate")
    levels = [{"level_record": i, **lv.to_json()} for i, lv in enumerate(job.levels)]
    MetricsLog(run_dir / METRICS).finalize(job.history + levels)
    write_artifacts(run_dir, job.model, job.mask.state_dict(), job.levels[-1].layers)
    record = {
        "seed": spec.seed,
        **{group: spec.choices.get(group) for group in ("dataset", "model", "init", "pruner", "train")},
        "experiment": spec.choices.get("experiment"),
        "target_sparsity": spec.pruner.target,  # the pruner's own target: the one it pruned to
        "config_hash": spec.config_hash,
        "overrides": overrides,
        "config": spec.config,
        "device": str(device),
        "threads": threads,
        "versions": versions(spec.config),  # with the code digest: what a resume and the analysis compare
        "splits": {"train": len(job.data.train), "val": len(job.data.val), "test": len(job.data.test)},
        "started_at": started,
        "finished_at": now(),
        "wall_time_s": time.perf_counter() - t0,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,  # this process, so far
        "peak_cuda_mb": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "levels": [level.to_json() for level in job.levels],
        "environment": {k: os.environ[k] for k in RECORDED_ENV if k in os.environ},
        "resumed": job.resumed,  # phases this attempt restored ({"restored"}) or resumed ({"from_epoch"})
        "dense_cache": job.cached_phases,  # phases shared through the dense-training cache, and whether hit
    }
    path = write_results(run_dir, record)
    trackers.finish(record)
    if not spec.keep_checkpoints:
        job.store.clear()
    print(summary(record, path))
    return record


def summary(record: dict[str, Any], path: Path) -> str:
    lines = [f"prune_lab: {record['dataset']} / {record['model']} / init={record['init']} / "
             f"pruner={record['pruner']} / seed={record['seed']}"]
    for level in record["levels"]:
        lines.append(f"  {level['name']:<10} sparsity {level['sparsity']:.3f} (target {level['target_sparsity']:.3f})"
                     f"  test acc {level['test_acc']:.4f}  test loss {level['test_loss']:.4f}"
                     f"  ({level['epochs_trained']:g} epoch{'' if level['epochs_trained'] == 1 else 's'})")
        if level.get("collapsed_layers"):
            lines.append(f"    warning: layer collapse: no weight left in {', '.join(level['collapsed_layers'])}")
    lines.append(f"  results: {path}  ({record['wall_time_s']:.1f} s)")
    return "\n".join(lines)


def save_hydra_files(run_dir: Path, cfg: DictConfig) -> None:
    """`.hydra/config.yaml`, `hydra.yaml` and `overrides.yaml`, as Hydra's run_job writes them, once the run is
    accepted: conf/config.yaml sets hydra.output_subdir=null so that a refused run leaves another run's folder
    untouched. A user who names an output_subdir gets Hydra's own files there instead."""
    hydra_node = HydraConfig.instance().cfg
    if hydra_node.hydra.output_subdir is not None:
        return
    folder = run_dir / ".hydra"
    for name, node in (("config.yaml", cfg), ("hydra.yaml", hydra_node),
                       ("overrides.yaml", hydra_node.hydra.overrides.task)):
        atomic_write_bytes(folder / name, OmegaConf.to_yaml(node).encode())


def say(line: str) -> None:
    """A run's one line about its failure: on stderr, unless a launcher runs this job in its own process and
    console (one_process), which prints the failure itself (WHERE["said"] hands it the line); then only into the
    run's .log file."""
    if WHERE.get("reporter") != "launcher":
        print(line, file=sys.stderr, flush=True)
        return
    WHERE["said"] = line
    record = logging.LogRecord("prune_lab", logging.ERROR, __file__, 0, line, None, None)
    for handler in logging.getLogger().handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(record)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> float:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    WHERE["run_dir"] = str(run_dir)
    skip_absent = False
    try:
        spec = compose_run(cfg, dict(hydra_cfg.runtime.choices), overrides)
        skip_absent = spec.skip_absent_data
        objective = build_objective(spec.config)  # a bad objective stops here, before training
        # what a Hydra sweeper (Optuna...) optimises
        return objective(run(spec, run_dir, overrides, on_accept=lambda: save_hydra_files(run_dir, cfg)))
    except UserError as e:
        # skip_absent_data (size=debug): a run whose dataset is absent is skipped, not failed (error.json says so)
        skip = isinstance(e, DataAbsent) and skip_absent
        if not isinstance(e, FolderTaken) and read_results(run_dir) is None:  # never into another run's folder
            write_error(run_dir, {"error": str(e), "kind": getattr(e, "kind", "config"), "overrides": overrides,
                                  **({"status": "skipped"} if skip else {})})
        if skip:
            say(f"prune_lab: skipped, its data is absent (skip_absent_data=true, as size=debug sets): {e}")
            return float("nan")
        say(f"prune_lab: error: {e}")
        sys.exit(2)
    except Exception as e:
        write_error(run_dir, {"error": f"{type(e).__name__}: {e}", "kind": getattr(e, "kind", "crash"),
                              "overrides": overrides, "traceback": traceback.format_exc()})
        raise


def main() -> None:
    guarded(hydra_main)  # unwritable folders, Hydra's errors and Ctrl-C as one line (prune_lab.guard)


if __name__ == "__main__":
    main()
