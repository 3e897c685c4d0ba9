"""How fast `multirun_analysis.load_runs` reads a large sweep: generated run folders, timed side by side.

    python benchmarks/bench_load_runs.py [--runs 10000] [--template RUN_DIR/results.json] [--keep DIR]

Writes N run folders shaped like prune_lab's (`.hydra/` with config, hydra and overrides YAML,
`results.json`, `metrics.jsonl`), with init x seed x sparsity varied, then times in one process:
  - load_runs with 1 worker and with a process pool, at 1/4, 1/2 and all N folders;
  - the YAML path it avoids (OmegaConf loading `.hydra/config.yaml` + `overrides.yaml`) on a sample,
    scaled to N, as the ratio of the two.
Prints the table and ratios and saves docs/img/bench_load_runs.png. Timings are on a warm page cache
(the folders were just written); a cold network file system reads slower for both paths.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from multirun_analysis import load_runs  # noqa: E402

INITS = ["xavier_normal", "xavier_uniform", "kaiming_normal", "kaiming_uniform", "orthogonal"]
SPARSITIES = [0.5, 0.8, 0.9, 0.95]
TARGET_S = 5.0  # the bar for 10,000 folders on 2 cores


def template_record(path: Path | None) -> dict:
    """A real results.json when given; else one shaped like lenet_300_100's (3 layers, 2 levels)."""
    if path is not None:
        return json.loads(path.read_text())
    layers = {
        f"net.{i}.weight": {"numel": n, "nonzero": n, "sparsity": 0.0}
        for i, n in ((1, 235200), (3, 30000), (5, 1000))
    }
    level = {
        "name": "dense",
        "target_sparsity": 0.0,
        "sparsity": 0.0,
        "test_acc": 0.98,
        "test_loss": 0.07,
        "val_acc": 0.98,
        "val_loss": 0.07,
        "params_total": 266610,
        "params_nonzero": 266610,
        "prunable_total": 266200,
        "prunable_nonzero": 266200,
        "layers": layers,
    }
    pruned = {
        **level,
        "name": "pruned",
        "before_finetune": {"test_acc": 0.9, "test_loss": 0.3},
        "finetune_epochs": 3,
    }
    config = {
        "dataset": {"_target_": "prune_lab.data.torchvision_sets.MNIST", "val_fraction": 0.1},
        "model": {"_target_": "prune_lab.models.mlp.MLP", "_partial_": True, "hidden": [300, 100]},
        "train": {"lr": 0.0012, "epochs": 10, "batch_size": 60, "finetune_epochs": 3},
        "seed": 0,
        "sparsity": 0.9,
        "device": "auto",
    }
    return {
        "schema_version": 1,
        "status": "ok",
        "seed": 0,
        "dataset": "mnist",
        "model": "lenet_300_100",
        "init": "default",
        "pruner": "magnitude",
        "train": "adam",
        "experiment": None,
        "target_sparsity": 0.9,
        "config_hash": "0" * 16,
        "overrides": [],
        "config": config,
        "device": "cpu",
        "versions": {"python": "3.11", "torch": "2.14.1"},
        "wall_time_s": 30.0,
        "peak_rss_mb": 900.0,
        "levels": [level, pruned],
    }


def write_sweep(folder: Path, n: int, record: dict) -> None:
    metrics = "".join(
        json.dumps(
            {
                "phase": "dense",
                "epoch": e,
                "step": 100 * e,
                "train_loss": 0.1,
                "val_acc": 0.9,
                "val_loss": 0.2,
            }
        )
        + "\n"
        for e in range(1, 11)
    )
    for i in range(n):
        init, sparsity = INITS[i % len(INITS)], SPARSITIES[(i // len(INITS)) % len(SPARSITIES)]
        seed = i // (len(INITS) * len(SPARSITIES))
        overrides = [f"init={init}", f"seed={seed}", f"sparsity={sparsity}"]
        run = folder / ",".join(overrides)
        (run / ".hydra").mkdir(parents=True)
        levels = [dict(lv) for lv in record["levels"]]
        levels[-1].update(
            target_sparsity=sparsity, sparsity=sparsity, test_acc=0.9 - sparsity / 10 + seed * 1e-4
        )
        rec = {
            **record,
            "seed": seed,
            "init": init,
            "target_sparsity": sparsity,
            "overrides": overrides,
            "config": {**record["config"], "seed": seed, "sparsity": sparsity},
            "levels": levels,
        }
        (run / "results.json").write_text(json.dumps(rec, indent=2))
        (run / "metrics.jsonl").write_text(metrics)
        (run / ".hydra" / "overrides.yaml").write_text("".join(f"- {o}\n" for o in overrides))
        (run / ".hydra" / "config.yaml").write_text(_yaml(rec["config"]))
        (run / ".hydra" / "hydra.yaml").write_text("hydra:\n  job:\n    name: __main__\n")


def _yaml(obj: dict, indent: int = 0) -> str:
    out = []
    for k, v in obj.items():
        if isinstance(v, dict):
            out.append(" " * indent + f"{k}:\n" + _yaml(v, indent + 2))
        else:
            out.append(" " * indent + f"{k}: {json.dumps(v)}\n")
    return "".join(out)


def time_it(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)  # best of the repeats: the least disturbed by other processes on a shared machine


def yaml_path(runs: list[Path]) -> None:
    from omegaconf import OmegaConf

    for run in runs:
        OmegaConf.load(run / ".hydra" / "config.yaml")
        OmegaConf.load(run / ".hydra" / "overrides.yaml")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10_000)
    p.add_argument(
        "--template", type=Path, help="a real results.json to clone (default: a lenet_300_100 shape)"
    )
    p.add_argument("--workers", type=int, default=2, help="pool size to compare with 1 worker (default 2)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--keep", type=Path, help="write the folders here and keep them (default: a temp folder)")
    p.add_argument("--figure", type=Path, default=ROOT / "docs" / "img" / "bench_load_runs.png")
    args = p.parse_args()

    folder = args.keep or Path(tempfile.mkdtemp(prefix="bench_load_runs_"))
    try:
        t0 = time.perf_counter()
        write_sweep(folder / "sweep", args.runs, template_record(args.template))
        print(
            f"wrote {args.runs} run folders in {time.perf_counter() - t0:.1f} s ({folder}); "
            f"{os.cpu_count()} CPUs visible"
        )
        # subsets: the first k folders of the sweep, as separate sweep roots (symlinks cost nothing)
        sizes = sorted({max(1, args.runs // 4), max(1, args.runs // 2), args.runs})
        runs = sorted((folder / "sweep").iterdir())
        rows = []
        for n in sizes:
            sub = folder / f"sub{n}"
            if not sub.exists():
                sub.mkdir()
                for run in runs[:n]:
                    (sub / run.name).symlink_to(run, target_is_directory=True)
            t1 = time_it(lambda sub=sub: load_runs(sub, workers=1), args.repeat)
            tp = time_it(lambda sub=sub: load_runs(sub, workers=args.workers), args.repeat)
            rows.append((n, t1, tp))
            print(
                f"{n:>7} folders: 1 worker {t1:6.2f} s   {args.workers} workers {tp:6.2f} s   "
                f"pool speed-up x{t1 / tp:.2f}"
            )
        sample = runs[: min(500, args.runs)]
        ty = time_it(lambda: yaml_path(sample), 1) * args.runs / len(sample)
        t1_full, tp_full = rows[-1][1], rows[-1][2]
        best = min(t1_full, tp_full)
        print(
            f"YAML path (OmegaConf, config + overrides), {len(sample)} folders scaled to {args.runs}: {ty:.1f} s "
            f"= x{ty / t1_full:.1f} the json path on 1 worker"
        )
        print(
            f"{args.runs} folders: best {best:.2f} s ({'under' if best < TARGET_S else 'OVER'} the {TARGET_S:g} s "
            f"target)"
        )
        plot(rows, ty, args.runs, args.workers, args.figure)
        print(f"figure: {args.figure}")
    finally:
        if args.keep is None:
            shutil.rmtree(folder, ignore_errors=True)


def plot(rows, yaml_s: float, n: int, workers: int, path: Path) -> None:
    import matplotlib.pyplot as plt

    sizes = [r[0] for r in rows]
    fig, ax = plt.subplots(figsize=(6.4, 4.2), constrained_layout=True)
    ax.plot(sizes, [r[1] for r in rows], "-o", color="#0072B2", lw=2, label="load_runs, 1 worker")
    ax.plot(sizes, [r[2] for r in rows], "--s", color="#D55E00", lw=2, label=f"load_runs, {workers} workers")
    ax.plot(
        [n], [yaml_s], "^", color="#009E73", ms=10, label=f"YAML configs instead (OmegaConf): {yaml_s:.0f} s"
    )
    ax.axhline(TARGET_S, color="gray", ls=":", lw=1.5)
    ax.text(n, TARGET_S * 0.97, f"target: {TARGET_S:g} s for {n:,} runs", color="gray", va="top", ha="right")
    ax.set_xlabel("run folders")
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:,.0f}"))
    ax.set_ylabel("seconds (best of repeats)")
    ax.set_ylim(0, max(TARGET_S * 1.7, max(max(r[1], r[2]) for r in rows) * 1.2))  # legend above the target
    if yaml_s > ax.get_ylim()[1]:
        ax.annotate(
            f"YAML: {yaml_s:.0f} s ↑", (n, ax.get_ylim()[1] * 0.97), ha="right", va="top", color="#009E73"
        )
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", frameon=False)
    ax.set_title(f"reading a sweep: results.json only ({os.cpu_count()} CPUs)")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)


if __name__ == "__main__":
    main()
