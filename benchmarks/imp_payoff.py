"""`python -m benchmarks.imp_payoff`: what a level's payoff costs in a 15-round IMP run, measured side by side.

The same 15-round IMP run on penguins (sparsity 1 - 0.8^15) with `measure=cheap` (the default: FLOPs,
parameters, bytes) and `measure=latency` (slim export and CPU timings at every level, what every level paid
before payoff became on demand), in one process, rounds interleaved. Printed: the time `Job.evaluate`
spends per level (mean over the run's levels, test/val evaluation included) and the run's wall time, as
medians over rounds, and the ratio within each round. Written to benchmarks/results/<date>-imp-payoff.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import statistics
import tempfile
import time
from pathlib import Path

import torch

from prune_lab.api import prepare
from prune_lab.job import Job

ROOT = Path(__file__).resolve().parent.parent
ROUNDS_OF_IMP = 15
SPARSITY = round(1 - 0.8**ROUNDS_OF_IMP, 6)


class TimedJob(Job):
    """A real Job that also times each call of `evaluate` (one level)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.level_s: list[float] = []

    def evaluate(self, name, target_sparsity, **extra):
        t0 = time.perf_counter()
        level = super().evaluate(name, target_sparsity, **extra)
        self.level_s.append(time.perf_counter() - t0)
        return level


def one_run(measure: str, folder: Path) -> tuple[float, float, int, int]:
    """(mean seconds per level, wall seconds, levels, levels with latency fields) of one IMP run."""
    t0 = time.perf_counter()
    spec, job = prepare("pruner=imp", f"sparsity={SPARSITY}", "train.epochs=2", f"measure={measure}",
                        "cache_dir=null", "threads=1", run_dir=folder, job_type=TimedJob)
    spec.pruner.run(job)
    timed = sum(any("latency" in k for k in level.extra) for level in job.levels)
    return statistics.mean(job.level_s), time.perf_counter() - t0, len(job.levels), timed


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.imp_payoff", description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results: dict[str, list[tuple[float, float, int, int]]] = {"cheap": [], "latency": []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for measure in results:
                results[measure].append(one_run(measure, Path(tmp) / f"{measure}-{r}"))
    per_level = {m: statistics.median(x[0] for x in runs) for m, runs in results.items()}
    wall = {m: statistics.median(x[1] for x in runs) for m, runs in results.items()}
    ratio = statistics.median(lat[0] / cheap[0] for cheap, lat in zip(results["cheap"], results["latency"]))
    levels, timed = results["latency"][0][2], results["latency"][0][3]
    lines = [
        f"# IMP payoff cost, {dt.date.today().isoformat()}",
        "",
        f"15-round IMP on penguins (sparsity={SPARSITY}, train.epochs=2 per round, {levels} levels), one thread, "
        f"{args.rounds} rounds interleaved; load average at the end: {os.getloadavg()[0]:.2f} (shared machine).",
        "",
        "| measure | time per level (mean over the run) | run wall time | levels with latency fields |",
        "|---|---|---|---|",
        f"| cheap (default) | {per_level['cheap'] * 1000:.1f} ms | {wall['cheap']:.2f} s | "
        f"{results['cheap'][0][3]} of {levels} |",
        f"| latency (every level, as before) | {per_level['latency'] * 1000:.1f} ms | {wall['latency']:.2f} s | "
        f"{timed} of {levels} |",
        "",
        f"Per level, latency / cheap = {ratio:.1f}x (median of the within-round ratios).",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{dt.date.today().isoformat()}-imp-payoff.md").write_text(text)


if __name__ == "__main__":
    main()
