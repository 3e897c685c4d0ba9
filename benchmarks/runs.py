"""Whole runs through the real CLI: startup, per-job overhead in a local sweep, and the dense cache's speed-up."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.timing import interleave, median, ratio
from benchmarks.training_speed import row

ROOT = Path(__file__).resolve().parent.parent


def cli(args: list[str], cwd: Path = ROOT) -> float:
    """Wall seconds of `python -m prune_lab ARGS` (fails loudly if the run fails)."""
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "prune_lab", *args], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"prune_lab {' '.join(args)} failed:\n{out.stderr[-3000:]}")
    return elapsed


def python_c(code: str) -> Callable[[], float]:
    def timer() -> float:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.perf_counter() - t0

    return timer


def first_step(args: list[str]) -> Callable[[], float]:
    """Seconds from process start to the end of the first epoch of the default run (metrics.jsonl's first line).

    The penguins epoch is 4 steps plus a validation pass, milliseconds: an upper bound on the first step.
    """

    def timer() -> float:
        with tempfile.TemporaryDirectory() as tmp:
            metrics = Path(tmp) / "run" / "metrics.jsonl"
            t0 = time.perf_counter()
            proc = subprocess.Popen([sys.executable, "-m", "prune_lab", f"hydra.run.dir={tmp}/run", *args],
                                    cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            seen = None
            while seen is None and proc.poll() is None:
                try:
                    if metrics.read_text().strip():
                        seen = time.perf_counter() - t0
                except OSError:
                    pass
                time.sleep(0.005)
            _, err = proc.communicate()
            if proc.returncode != 0 or seen is None:
                raise RuntimeError(f"prune_lab failed or wrote no metrics:\n{err[-3000:]}")
            return seen

    return timer


def startup_section(rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    variants = {
        "python -c 'import torch'": python_c("import torch"),
        "python -c 'import torch, torch._dynamo'": python_c("import torch, torch._dynamo"),
        "python -m prune_lab: first epoch done": first_step(["cache_dir=null"]),
    }
    times = interleave(variants, rounds, log)
    first = times["python -m prune_lab: first epoch done"]
    return {"rows": [
        row("startup: python -m prune_lab to its first (penguins) epoch", median(first), "s", "<= 2.5",
            lambda v: v <= 2.5),
        row("startup: floor, import torch (median)", median(times["python -c 'import torch'"]), "s"),
        row("startup: floor, import torch + torch._dynamo (first optimizer step imports it)",
            median(times["python -c 'import torch, torch._dynamo'"]), "s"),
        row("startup: first epoch / (import torch + torch._dynamo)",
            ratio(first, times["python -c 'import torch, torch._dynamo'"]), "x"),
    ], "times_s": times}


def sweep(tmp: Path, jobs: int, extra: list[str]) -> float:
    seeds = ",".join(str(s) for s in range(jobs))
    return cli(["-m", f"hydra.sweep.dir={tmp}/sweep{jobs}_{time.monotonic_ns()}", f"seed={seeds}", *extra])


def overhead_section(rounds: int, log: Callable[[str], None], jobs: int = 11) -> dict[str, Any]:
    """(T(sweep of `jobs`) - T(sweep of 1)) / (jobs - 1): all a job costs in a one-process local sweep, with
    its training (1 penguins epoch, 4 steps) and evaluation included: an upper bound on the overhead."""
    extra = ["pruner=none", "train.epochs=1", "cache_dir=null"]
    with tempfile.TemporaryDirectory() as tmp:
        variants = {f"sweep of {jobs} jobs": lambda: sweep(Path(tmp), jobs, extra),
                    "sweep of 1 job": lambda: sweep(Path(tmp), 1, extra)}
        times = interleave(variants, rounds, log)
    per_job = [(a - b) / (jobs - 1) for a, b in zip(times[f"sweep of {jobs} jobs"], times["sweep of 1 job"])]
    return {"rows": [row("per-job cost in a local sweep (1-epoch penguins jobs; upper bound on overhead)",
                         median(per_job), "s", "<= 0.5", lambda v: v <= 0.5)],
            "times_s": times, "per_job_s": per_job}


def penguins_section(rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        count = iter(range(10**6))
        times = interleave({"python -m prune_lab (default penguins run)":
                            lambda: cli([f"hydra.run.dir={tmp}/run{next(count)}", "cache_dir=null"])}, rounds, log)
        record = json.loads((Path(tmp) / "run0" / "results.json").read_text())
    wall = times["python -m prune_lab (default penguins run)"]
    return {"rows": [row("default penguins run: wall time, whole process (median)", median(wall), "s"),
                     row("default penguins run: wall_time_s recorded inside the run", record["wall_time_s"], "s"),
                     row("default penguins run: peak RSS (results.json peak_rss_mb)", record["peak_rss_mb"], "MiB")],
            "times_s": times}


SPARSITIES = "0.5,0.6,0.7,0.8,0.9"


def sweep_cache_section(data_dir: Path, rounds: int, log: Callable[[str], None], epochs: int = 2,
                        finetune: int = 1, subset: int | None = None) -> dict[str, Any]:
    """5 sparsities x 2 inits x 2 seeds of magnitude pruning + fine-tuning, LeNet-300-100 on MNIST, one process:
    with the dense cache (a fresh folder each round) and without; results compared level by level."""
    base = ["-m", f"sparsity={SPARSITIES}", "init=kaiming_normal,xavier_normal", "seed=0,1", "pruner=magnitude",
            "dataset=mnist", f"dataset.data_dir={data_dir}", "model=lenet_300_100", f"train.epochs={epochs}",
            f"train.finetune_epochs={finetune}", "train.batch_size=60", "train.lr=0.0012"]
    base += [f"dataset.train_subset={subset}"] if subset else []  # --quick only
    fixed = ",".join(arg.split("=")[0] for arg in base[1:] if not arg.startswith(("sparsity=", "init=", "seed=")))
    base.append(f"hydra.job.config.override_dirname.exclude_keys=[{fixed},cache_dir,hydra.sweep.dir]")  # short names
    with tempfile.TemporaryDirectory() as tmp:
        tags = iter(range(10**6))
        dirs: dict[str, list[Path]] = {"cache": [], "no cache": []}

        def run(kind: str) -> float:
            folder = Path(tmp) / f"{kind.replace(' ', '_')}{next(tags)}"
            dirs[kind].append(folder)
            cache = f"cache_dir={folder}/dense_cache" if kind == "cache" else "cache_dir=null"
            return cli([*base, f"hydra.sweep.dir={folder}/sweep", cache])

        times = interleave({"no cache": lambda: run("no cache"), "cache": lambda: run("cache")}, rounds, log)
        identical, trained_once = compare(dirs["cache"][0] / "sweep", dirs["no cache"][0] / "sweep")
    return {"rows": [
        row("dense cache: sweep 5 sparsities x 2 inits x 2 seeds, cache / no cache", ratio(times["cache"],
            times["no cache"]), "x", "<= 0.6", lambda v: v <= 0.6),
        row("dense cache: identical levels with and without (20 jobs)", float(identical), "bool", "1",
            lambda v: v == 1),
        row("dense cache: dense trainings with the cache (4 keys)", float(trained_once), "count", "4",
            lambda v: v == 4),
        row("dense cache: sweep without cache (median)", median(times["no cache"]), "s"),
    ], "times_s": times, "budget": {"epochs": epochs, "finetune_epochs": finetune}}


def compare(with_cache: Path, without: Path) -> tuple[bool, int]:
    def load(folder: Path) -> dict[str, dict]:
        return {p.parent.name: json.loads(p.read_text()) for p in folder.rglob("results.json")}

    a, b = load(with_cache), load(without)

    def levels(record: dict) -> list[dict]:  # latencies are measured, so they differ run to run
        return [{k: v for k, v in lv.items() if "latency" not in k} for lv in record["levels"]]

    identical = len(a) == len(b) == 20 and all(levels(a[k]) == levels(b[k]) for k in a)
    trained = sum(1 for r in a.values() for c in r.get("dense_cache", []) if not c["hit"])
    return identical, trained


def concurrent_runs_section(device: str, processes: int, runs_each: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Tiny runs per hour when `processes` sweeps share one device (each a local sweep of `runs_each` runs)."""
    extra = [f"device={device}", "train.epochs=20", "train.finetune_epochs=10", "cache_dir=null"]
    with tempfile.TemporaryDirectory() as tmp:
        seeds = ",".join(str(s) for s in range(runs_each))
        t0 = time.perf_counter()
        procs = [subprocess.Popen([sys.executable, "-m", "prune_lab", "-m", f"hydra.sweep.dir={tmp}/p{i}",
                                   f"seed={seeds}", *extra], cwd=ROOT, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL) for i in range(processes)]
        codes = [p.wait() for p in procs]
        wall = time.perf_counter() - t0
    done = processes * runs_each if all(c == 0 for c in codes) else 0
    log(f"  {processes} concurrent sweeps x {runs_each} runs on {device}: {wall:.1f} s")
    return {"rows": [row(f"tiny penguins runs per hour, {processes} sweeps sharing {device}", done / wall * 3600,
                         "runs/h")], "wall_s": wall}
