"""`python -m benchmarks`: prune_lab's speed as ratios measured side by side, printed and saved.

    python -m benchmarks [--data ../shared/data] [--rounds 3] [--only lenet convnets ...] [--out benchmarks/results]

Sections (all by default): lenet (LeNet-300-100 on real MNIST vs the FLOP bound and the reference loop),
convnets (Conv-6, ResNet-20 on CIFAR-shaped data), startup, overhead (per job in a local sweep), penguins
(the default run), sweep_cache (the dense cache's sweep speed-up), payoff (slim vs masked model
after unit pruning), warm (24 penguin runs and 12 one-epoch MNIST runs through the one-process launcher, warm
workers and one process per job; the fixed cost per run in a warm worker), slurm_pack (40 penguin runs on the
test SLURM cluster, packed 10 per task vs a task per run), capacity (the parallel CPU the shared machine gives
now: 2 CPU-bound processes vs 1), gpu (only where CUDA is available;
otherwise its figures are recorded as not yet measured). Every compared variant runs once per round,
rounds interleaved; a ratio is the median over rounds of the ratio within a round. The MNIST .gz files
are copied from --data into a temporary folder (prune_lab unpacks them there).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks import runs, training_speed, warm
from benchmarks.training_speed import row
from prune_lab.data.splits import Splits, TensorSet
from prune_lab.results import versions

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("lenet", "sweep_cache", "startup", "overhead", "convnets", "payoff", "penguins", "warm", "slurm_pack",
            "capacity", "gpu")  # most wanted first


def copy_mnist(data: Path, into: Path) -> Path:
    source = data / "MNIST" / "raw"
    if not source.is_dir():
        sys.exit(f"benchmarks: {source} not found; pass --data FOLDER holding MNIST/raw/*.gz")
    (into / "MNIST").mkdir(parents=True)
    shutil.copytree(source, into / "MNIST" / "raw")
    return into


def gpu_section(data_dir: Path, rounds: int, device: torch.device, log, quick: bool = False) -> dict[str, Any]:
    """Epoch times and samples/s on the GPU against its FLOP bound, fp32 and bf16; tiny runs per hour."""
    rows = []
    mnist = training_speed.no_eval(training_speed.mnist_splits(data_dir))
    if quick:
        mnist = Splits(mnist.info, TensorSet(mnist.train.x[:2000], mnist.train.y[:2000]), mnist.val, mnist.test)
    mnist = mnist.to(device)
    build = training_speed.model_factory("lenet_300_100", mnist.info)
    flops = training_speed.count_flops(build(), mnist.train.x[:1].cpu()).train_epoch(len(mnist.train))
    for amp in (False, True):
        timer = training_speed.our_epoch(build, mnist, 128, 0.0, device, amp)
        timer()  # warm-up (CUDA context, kernels)
        times = [timer() for _ in range(rounds)]
        peak = training_speed.matmul_flops_per_s(device, torch.bfloat16 if amp else torch.float32)
        tag = f"LeNet-300-100 MNIST b128 {'bf16' if amp else 'fp32'} ({device.type})"
        rows += [row(f"{tag}: epoch (median)", training_speed.median(times), "s"),
                 row(f"{tag}: samples/s", len(mnist.train) / training_speed.median(times), "1/s"),
                 row(f"{tag}: epoch / FLOP bound", training_speed.median(times) / (flops / peak), "x")]
    samples = 32 if quick else 10000 if device.type == "cuda" else 256
    for amp in (False, True):
        rows += training_speed.convnets_section(rounds, samples, log, device, (("resnet20", 128), ("resnet18", 128)),
                                                amp)["rows"]
    rows += runs.concurrent_runs_section(device.type, 4 if device.type == "cuda" else 2, 2 if quick else 5,
                                         log)["rows"]
    return {"rows": rows}


def not_measured(reason: str) -> dict[str, Any]:
    names = ["LeNet-300-100 MNIST b128 fp32/bf16 (cuda): epoch, samples/s, epoch / FLOP bound",
             "ResNet-20 / ResNet-18 CIFAR-shaped b128 fp32/bf16 (cuda): epoch, samples/s, epoch / FLOP bound",
             "tiny penguins runs per hour, 4 sweeps sharing one GPU"]
    return {"rows": [{"name": n, "value": None, "unit": "", "target": None, "met": None,
                      "note": f"not yet measured: {reason}"} for n in names]}


def table(results: dict[str, Any]) -> str:
    lines = ["| section | measure | value | unit | target | met |", "|---|---|---|---|---|---|"]
    for section, body in results["sections"].items():
        for r in body["rows"]:
            value = r.get("note", "") if r["value"] is None else f"{r['value']:.3g}"
            met = "" if r["met"] is None else ("yes" if r["met"] else "**no**")
            lines.append(f"| {section} | {r['name']} | {value} | {r['unit']} | {r['target'] or ''} | {met} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data",
                        help="folder holding MNIST/raw/*.gz (copied to a temp folder)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved repetitions (medians over them)")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--conv-samples", type=int, default=512, help="CIFAR-shaped samples per timed epoch")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads here and OMP_NUM_THREADS of the runs it starts (default 1: on a shared "
                             "2-core machine every 2-thread parallel op waits for a time slice of the busy core)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke-run every section on tiny sizes (checks the code, measures nothing useful)")
    parser.add_argument("--gpu-device", default=None,
                        help="run the gpu section on this device (default: cuda when available, else skipped); "
                             "cpu exercises its code path")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the prune_lab processes it starts
    log = print
    started = time.perf_counter()
    results: dict[str, Any] = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(),
                    "load_average_1min_at_start": os.getloadavg()[0], "cuda": torch.cuda.is_available()},
        "versions": versions(), "rounds": args.rounds, "sections": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        mnist = {"lenet", "sweep_cache", "gpu", "warm"} & set(args.only)
        data_dir = copy_mnist(args.data, Path(tmp) / "data") if mnist else None
        for section in args.only:
            log(f"== {section}  (load average {os.getloadavg()[0]:.1f})")
            t0 = time.perf_counter()
            if section == "lenet":
                body = training_speed.lenet_section(data_dir, args.rounds, log, 2000 if args.quick else None)
            elif section == "convnets":
                body = training_speed.convnets_section(args.rounds, 64 if args.quick else args.conv_samples, log)
            elif section == "startup":
                body = runs.startup_section(args.rounds, log)
            elif section == "overhead":
                body = runs.overhead_section(args.rounds, log, 3 if args.quick else 11)
            elif section == "payoff":
                body = training_speed.payoff_section(args.rounds, log)
            elif section == "penguins":
                body = runs.penguins_section(args.rounds, log)
            elif section == "warm":
                body = warm.local_section(data_dir, args.rounds, log, args.quick)
            elif section == "capacity":
                body = warm.capacity_section(args.rounds, log)
            elif section == "slurm_pack":
                body = warm.slurm_section(args.rounds, log, 8 if args.quick else 40, 4 if args.quick else 10)
            elif section == "sweep_cache":
                body = runs.sweep_cache_section(data_dir, max(1, args.rounds - 1), log,
                                                subset=2000 if args.quick else None)
            else:
                device = args.gpu_device or ("cuda" if torch.cuda.is_available() else None)
                body = gpu_section(data_dir, args.rounds, torch.device(device), log, args.quick) if device else \
                    not_measured("no GPU on this machine")
            body["section_s"] = time.perf_counter() - t0
            body["load_average_1min_at_end"] = os.getloadavg()[0]  # other users' load on this shared machine
            results["sections"][section] = body
            save(results, args)
    results["total_s"] = time.perf_counter() - started
    stem = save(results, args)
    print(table(results))
    print(f"benchmarks: wrote {args.out / stem}.json and .md ({results['total_s']:.0f} s)")


def save(results: dict[str, Any], args: argparse.Namespace) -> str:
    """Write the JSON and the Markdown table (after every section: an interrupted run keeps what it measured)."""
    args.out.mkdir(parents=True, exist_ok=True)
    stem = f"{results['date'][:10]}-{'cuda' if torch.cuda.is_available() else 'cpu'}{'-quick' if args.quick else ''}"
    (args.out / f"{stem}.json").write_text(json.dumps(results, indent=2) + "\n")
    header = (f"# prune_lab benchmarks, {results['date']}\n\n`python -m benchmarks --rounds {args.rounds} --threads "
              f"{args.threads}` on "
              f"{results['machine']['platform']}, {results['machine']['torch_threads']} torch threads, torch "
              f"{results['versions']['torch']}, commit {results['versions']['git_commit']}. Ratios are medians "
              "over rounds of ratios within a round (variants interleaved).\n\n")
    (args.out / f"{stem}.md").write_text(header + table(results) + "\n")
    return stem


if __name__ == "__main__":
    main()
