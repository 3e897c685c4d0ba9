"""`python -m prune_lab`: one pruning experiment composed by Hydra (add -m and comma lists to sweep).

Config groups: dataset, model, init, pruner, train (see conf/). Top-level keys: seed (int),
sparsity (float in [0, 1)), device (auto|cpu|cuda). Results go to the run folder Hydra prints;
`results.json` there is written last and marks the run complete, so rerunning into the same folder
skips finished runs and resumes interrupted ones.
"""

from __future__ import annotations

import os
import resource
import sys
import time
import traceback
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from prune_lab.cache import DenseCache, load_once
from prune_lab.collapse import refuse_certain_collapse
from prune_lab.config import RunSpec, compose_run
from prune_lab.errors import UserError
from prune_lab.guard import WHERE, guarded
from prune_lab.job import Job
from prune_lab.results import (
    METRICS,
    MetricsLog,
    now,
    read_results,
    versions,
    write_artifacts,
    write_error,
    write_results,
)
from prune_lab.seeding import generator, seed_everything
from prune_lab.storage import PhaseStore, clean_leftovers
from prune_lab.threads import apply_threads

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")

# Where a run ran: its SLURM job (SLURM_RESTART_COUNT counts requeues) and the GPUs it was given.
RECORDED_ENV = ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_RESTART_COUNT",
                "SLURM_JOB_PARTITION", "SLURMD_NODENAME", "CUDA_VISIBLE_DEVICES")


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise UserError(f"device={device} but torch sees no CUDA GPU here; use device=cpu or device=auto")
    return torch.device(device)


def run(spec: RunSpec, run_dir: Path, overrides: list[str]) -> dict[str, Any]:
    """seed -> data -> model -> init -> (the pruner's schedule of train / prune / evaluate) -> results."""
    started, t0 = now(), time.perf_counter()
    done = read_results(run_dir)
    if done is not None:
        if done.get("config_hash") == spec.config_hash:
            print(f"prune_lab: {run_dir} is already complete (config {spec.config_hash}); skipping")
            clean_leftovers(run_dir, keep_checkpoints=spec.keep_checkpoints)  # of a kill during the last writes
            return done
        raise UserError(
            f"{run_dir} holds results of another configuration (hash {done.get('config_hash')}, this run "
            f"{spec.config_hash}); use a new folder (hydra.run.dir=... / hydra.sweep.dir=...) or delete it"
        )
    device = resolve_device(spec.device)
    threads = apply_threads(spec.threads)  # parallel runs must not each claim every core
    seed_everything(spec.seed)
    cache = DenseCache.open(spec.cache_dir, spec.config, device)  # an unwritable cache_dir stops us before the data
    data = load_once(spec.dataset).to(device)  # a local sweep's jobs share one load of the same dataset
    model = spec.model(data.info)
    spec.init(model, generator(spec.seed, "init"))
    model = model.to(device)
    prunable = spec.prunable.names(model)
    sizes = {name: p.numel() for name, p in model.named_parameters() if name in prunable}
    refuse_certain_collapse(sizes, spec.config.get("pruner") or {})
    store = PhaseStore(run_dir / "checkpoints", spec.config_hash)
    metrics = MetricsLog(run_dir / METRICS)
    job = Job(model, data, spec.train, prunable, spec.init, spec.seed, store, metrics, dense_cache=cache)

    spec.pruner.run(job)  # the method's own schedule: train, prune, evaluate, rewind... each level recorded

    if not job.levels:
        raise RuntimeError(f"pruner {type(spec.pruner).__name__} recorded no level; it must call job.evaluate")
    metrics.finalize(job.history + [{"level_record": i, **lv.to_json()} for i, lv in enumerate(job.levels)])
    write_artifacts(run_dir, model, job.mask.state_dict(), job.levels[-1].layers)
    record = {
        "seed": spec.seed,
        **{group: spec.choices.get(group) for group in ("dataset", "model", "init", "pruner", "train")},
        "experiment": spec.choices.get("experiment"),
        "target_sparsity": spec.sparsity,
        "config_hash": spec.config_hash,
        "overrides": overrides,
        "config": spec.config,
        "device": str(device),
        "threads": threads,
        "versions": versions(),
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
    if not spec.keep_checkpoints:
        store.clear()
    print(summary(record, path))
    return record


def summary(record: dict[str, Any], path: Path) -> str:
    lines = [f"prune_lab: {record['dataset']} / {record['model']} / init={record['init']} / "
             f"pruner={record['pruner']} / seed={record['seed']}"]
    for level in record["levels"]:
        lines.append(f"  {level['name']:<10} sparsity {level['sparsity']:.3f} (target {level['target_sparsity']:.3f})"
                     f"  test acc {level['test_acc']:.4f}  test loss {level['test_loss']:.4f}")
        if level.get("collapsed_layers"):
            lines.append(f"    warning: layer collapse: no weight left in {', '.join(level['collapsed_layers'])}")
    lines.append(f"  results: {path}  ({record['wall_time_s']:.1f} s)")
    return "\n".join(lines)


@hydra.main(config_path=CONF_DIR, config_name="config", version_base="1.3")
def hydra_main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    overrides = list(hydra_cfg.overrides.task)
    WHERE["run_dir"] = str(run_dir)
    try:
        spec = compose_run(cfg, dict(hydra_cfg.runtime.choices))
        run(spec, run_dir, overrides)
    except UserError as e:
        write_error(run_dir, {"error": str(e), "kind": "config", "overrides": overrides})
        print(f"prune_lab: error: {e}", file=sys.stderr)
        sys.exit(2)
    except Exception as e:
        write_error(run_dir, {"error": f"{type(e).__name__}: {e}", "kind": "crash", "overrides": overrides,
                              "traceback": traceback.format_exc()})
        raise


def main() -> None:
    guarded(hydra_main)  # unwritable folders, Hydra's errors and Ctrl-C as one line (prune_lab.guard)


if __name__ == "__main__":
    main()
