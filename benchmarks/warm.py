"""Sweeps of many short runs: the one-process launcher, the local launcher with warm workers, the local launcher
with one process per job (as it was), and packed vs unpacked array tasks on the real test SLURM cluster."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import statistics
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
ONE = ["threads=1"]  # the one-process launcher on one thread: the rate the ideal is counted from
WARM = ["hydra/launcher=local", "hydra.launcher.parallelism=2", "hydra.launcher.gpus_per_node=0"]
PER_JOB = [*WARM, "hydra.launcher.warm=false"]


def run_sweep(args: list[str], cwd: Path = ROOT) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "prune_lab", "-m", *args], cwd=cwd, capture_output=True, text=True,
                         env={**os.environ, "HYDRA_FULL_ERROR": "1"})
    elapsed = time.perf_counter() - t0
    if out.returncode != 0:
        raise RuntimeError(f"prune_lab -m {' '.join(args)} failed:\n{(out.stdout + out.stderr)[-3000:]}")
    return elapsed, out.stdout + out.stderr


def levels(folder: Path) -> dict[str, list[dict]]:
    """Each run's levels without what is timed (latencies differ run to run)."""
    return {p.parent.name: [{k: v for k, v in lv.items() if not k.endswith(("_ms", "_s"))}
                            for lv in json.loads(p.read_text())["levels"]] for p in folder.rglob("results.json")}


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def compare_launchers(tag: str, grid: list[str], runs: int, rounds: int, log: Callable[[str], None],
                      targets: dict[str, tuple[str, Callable[[float], bool]]]) -> dict[str, Any]:
    """One sweep through three launchers, interleaved round by round; results compared level by level."""
    with tempfile.TemporaryDirectory() as tmp:
        folders: dict[str, list[Path]] = {"one process": [], "warm workers": [], "process per job": []}
        outputs: dict[str, str] = {}
        count = iter(range(10**6))

        def variant(name: str, extra: list[str]) -> Callable[[], float]:
            def timer() -> float:
                folder = Path(tmp) / f"{name.replace(' ', '_')}{next(count)}"
                folders[name].append(folder)
                wall, outputs[name] = run_sweep([f"hydra.sweep.dir={folder}", *extra, *grid])
                return wall
            return timer

        times = interleave({"one process": variant("one process", ONE),
                            "warm workers": variant("warm workers", WARM),
                            "process per job": variant("process per job", PER_JOB)}, rounds, log)
        reference = levels(folders["one process"][0])
        identical = all(len(levels(f)) == runs and levels(f) == reference for fs in folders.values() for f in fs)
        jobs = [json.loads(line) for line in (folders["warm workers"][-1] / ".workers" / "outcomes.jsonl")
                .read_text().splitlines()]
        walls = {p.parent.name: json.loads(p.read_text())["wall_time_s"]
                 for p in folders["warm workers"][-1].rglob("results.json")}
    rate = {name: runs / median(t) * 60 for name, t in times.items()}
    ideal = cores() * rate["one process"]
    warm_wall = ratio(times["warm workers"], times["one process"])
    warm_rate = ratio(times["one process"], times["warm workers"])  # runs/min warm / runs/min one process
    per_job_rate = ratio(times["one process"], times["process per job"])
    outside = [j["job_s"] - walls[Path(j["run_dir"]).name] for j in jobs if Path(j["run_dir"]).name in walls]
    rows = [row(f"{tag}: runs/min, one-process launcher (1 thread)", rate["one process"], "runs/min"),
            row(f"{tag}: runs/min, local, 2 warm workers", rate["warm workers"], "runs/min"),
            row(f"{tag}: runs/min, local, one process per job (as it was)", rate["process per job"], "runs/min"),
            row(f"{tag}: ideal runs/min ({cores()} cores x one-process rate)", ideal, "runs/min"),
            row(f"{tag}: warm workers wall / one-process wall", warm_wall, "x", *targets.get("wall", (None, None))),
            row(f"{tag}: warm workers rate / one-process rate", warm_rate, "x", *targets.get("rate", (None, None))),
            row(f"{tag}: warm workers rate / ideal", warm_rate / cores(), "x"),
            row(f"{tag}: process-per-job rate / one-process rate", per_job_rate, "x"),
            row(f"{tag}: process-per-job rate / ideal", per_job_rate / cores(), "x"),
            row(f"{tag}: identical levels in every launcher and round ({runs} runs)", float(identical), "bool", "1",
                lambda v: v == 1),
            row(f"{tag}: per run in a warm worker outside the run's timed part (compose, Hydra's job setup, "
                "result writing, checkpoint clean-up; median)", median(outside), "s"),
            row(f"{tag}: config composition per run in a warm worker (median)",
                median([j["compose_s"] for j in jobs]), "s")]
    return {"rows": rows, "times_s": times, "warm_jobs": jobs}


def fixed_cost(rounds: int, log: Callable[[str], None], runs: int = 24) -> dict[str, Any]:
    """Per-run cost in a warm worker of a run with next to no training (1 penguins epoch of 4 steps, no pruning,
    no fine-tuning): composition, data (shared), model, one epoch, evaluation, results, checkpoints. An upper
    bound on the fixed cost: it includes the epoch and the evaluation."""
    per_run: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            folder = Path(tmp) / f"fixed{r}"
            run_sweep([f"hydra.sweep.dir={folder}", *WARM, "pruner=none", "train.epochs=1", "cache_dir=null",
                       f"seed={','.join(str(s) for s in range(runs))}"])
            jobs = [json.loads(line) for line in (folder / ".workers" / "outcomes.jsonl").read_text().splitlines()]
            later = [j["job_s"] for j in jobs if j["status"] == "completed"]
            firsts = {}
            for j in jobs:  # each worker's first job loads the dataset: not a per-run cost
                firsts.setdefault(j["worker_pid"], j["job_s"])
            for first in firsts.values():
                later.remove(first)
            per_run.append(median(later))
            log(f"  round {r + 1}/{rounds}  warm worker, 1-epoch runs: {per_run[-1]:.3f} s per run (median)")
    return {"rows": [row("fixed cost per run inside a warm worker (1-epoch penguins runs, no pruning; includes "
                         "the epoch and the evaluation: an upper bound)", median(per_run), "s", "<= 0.2",
                         lambda v: v <= 0.2)], "per_run_s": per_run}


def local_section(data_dir: Path | None, rounds: int, log: Callable[[str], None],
                  quick: bool = False) -> dict[str, Any]:
    penguins = 6 if quick else 24
    grid = [f"seed={','.join(str(s) for s in range(penguins))}", "cache_dir=null"]
    log(f"  penguins: {penguins}-run sweep (the default run), three launchers")
    body = compare_launchers("penguins", grid, penguins, rounds, log,
                             {"wall": ("<= 0.6", lambda v: v <= 0.6)})
    rows, times = body["rows"], {"penguins": body["times_s"]}
    if data_dir is not None:
        mnist = 4 if quick else 12
        grid = [f"seed={','.join(str(s) for s in range(mnist))}", "dataset=mnist", f"dataset.data_dir={data_dir}",
                "model=lenet_300_100", "pruner=magnitude", "sparsity=0.8", "train.epochs=1", "train.finetune_epochs=0",
                "cache_dir=null"]
        grid += ["dataset.train_subset=2000"] if quick else []
        log(f"  MNIST LeNet-300-100: {mnist}-run sweep of 1 epoch each, three launchers")
        body = compare_launchers("MNIST LeNet-300-100", grid, mnist, rounds, log,
                                 {"rate": (">= 1.6", lambda v: v >= 1.6)})
        rows += body["rows"]
        times["mnist"] = body["times_s"]
    fixed = fixed_cost(rounds, log, 6 if quick else 24)
    return {"rows": rows + fixed["rows"], "times_s": times, "fixed_cost_per_run_s": fixed["per_run_s"]}


HYDRA_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]\[HYDRA\] Submitted", re.M)


def slurm_section(rounds: int, log: Callable[[str], None], runs: int = 40, per_task: int = 10) -> dict[str, Any]:
    """`runs` penguin runs on the real test cluster, unpacked (a task per run, one CPU each) and packed
    (`per_task` runs a task, two warm workers on two CPUs): wall from submission to the last results.json."""
    if subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0:
        return {"rows": [{"name": f"SLURM {runs} penguin runs: packed / unpacked", "value": None, "unit": "",
                          "target": "<= 0.4", "met": None,
                          "note": "not measured: no SLURM cluster answers (sudo slurm/start_local_cluster.sh)"}]}
    base = ["hydra/launcher=slurm_cpu", "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=20", "device=cpu",
            "cache_dir=null", f"seed={','.join(str(s) for s in range(runs))}"]
    variants = {"unpacked": ["hydra.launcher.runs_per_task=1", "hydra.launcher.cpus_per_task=1"],
                "packed": [f"hydra.launcher.runs_per_task={per_task}", "hydra.launcher.cpus_per_task=2"]}
    with tempfile.TemporaryDirectory() as tmp:
        folders: dict[str, list[Path]] = {name: [] for name in variants}
        totals: dict[str, list[float]] = {name: [] for name in variants}
        count = iter(range(10**6))

        def variant(name: str) -> Callable[[], float]:
            def timer() -> float:
                folder = Path(tmp) / f"{name}{next(count)}"
                folders[name].append(folder)
                total, out = run_sweep([f"hydra.sweep.dir={folder}", *base, *variants[name]], cwd=Path(tmp))
                totals[name].append(total)
                submitted = dt.datetime.strptime(HYDRA_TIME.search(out).group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()
                last = max(p.stat().st_mtime for p in folder.rglob("results.json"))
                return last - submitted
            return timer

        times = interleave({name: variant(name) for name in variants}, rounds, log)
        reference = levels(folders["unpacked"][0])
        identical = all(len(levels(f)) == runs and levels(f) == reference for fs in folders.values() for f in fs)
    packed = ratio(times["packed"], times["unpacked"])
    return {"rows": [
        row(f"SLURM {runs} penguin runs: packed ({per_task} per task) / unpacked, submission to last result",
            packed, "x", "<= 0.4", lambda v: v <= 0.4),
        row(f"SLURM {runs} penguin runs: unpacked, submission to last result (median)", median(times["unpacked"]), "s"),
        row(f"SLURM {runs} penguin runs: packed, submission to last result (median)", median(times["packed"]), "s"),
        row(f"SLURM {runs} penguin runs: packed / unpacked, whole command (launcher start to exit)",
            ratio(totals["packed"], totals["unpacked"]), "x"),
        row(f"SLURM {runs} penguin runs: identical levels packed and unpacked", float(identical), "bool", "1",
            lambda v: v == 1),
    ], "times_s": times, "command_s": totals, "spread": {k: statistics.pstdev(v) for k, v in times.items()}}


SPIN = "import time\nt = time.perf_counter()\nx = 0\nfor i in range(12_000_000):\n    x += i * i\n"


def capacity_section(rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """How much parallel CPU this shared machine gives right now: the throughput of 2 CPU-bound processes at
    once over that of 1 alone (2.0 on 2 idle cores). The yardstick for the warm workers' ratio to the ideal."""

    def spin(n: int) -> Callable[[], float]:
        def timer() -> float:
            t0 = time.perf_counter()
            procs = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(n)]
            for p in procs:
                p.wait()
            return time.perf_counter() - t0
        return timer

    times = interleave({"1 process": spin(1), "2 processes at once": spin(2)}, rounds, log)
    capacity = [2 * a / b for a, b in zip(times["1 process"], times["2 processes at once"])]
    return {"rows": [row("parallel capacity now: throughput of 2 CPU-bound processes / 1 (2.0 = two free cores)",
                         median(capacity), "x")], "times_s": times}
