"""`python -m multirun_analysis SWEEP_DIR [SWEEP_DIR ...] [--out REPORT_DIR]`: tables, statistics, figures, report
(default REPORT_DIR: SWEEP_DIR/analysis)."""

from __future__ import annotations

import argparse
import os
import sys
import time

from multirun_analysis.loading import load_sweep
from multirun_analysis.report import write_report
from multirun_analysis.stats import varying

AUTO = "auto"
NOT_A_GROUP = ("seed", "level", "target_level", "sparsity", "run_target_sparsity")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m multirun_analysis",
        description="Read every run below the sweep folders (local or SLURM, several merged) and write runs.csv, "
        "runs.parquet, summary.csv, robustness.csv, comparisons.csv, problems.csv, figures/ "
        "(PNG and PDF) and report.md to --out.",
    )
    p.add_argument(
        "sweeps", nargs="+", metavar="SWEEP_DIR", help="a sweep folder (hydra.sweep.dir) or run folder"
    )
    p.add_argument("--out", default=None, help="report folder (created); default: <first sweep folder>/analysis")
    p.add_argument("--metric", default="test_acc", help="level field to compare (default test_acc)")
    p.add_argument("--hue", default=AUTO, help="column compared and coloured (default: the first that varies)")
    p.add_argument(
        "--style", default=AUTO, help="column drawn as line style (default: the second that varies; 'none')"
    )
    p.add_argument(
        "--col", default=AUTO, help="facet columns, comma-separated (default: dataset,model where they vary)"
    )
    p.add_argument(
        "--x",
        choices=("remaining", "sparsity", "flops"),
        default="remaining",
        help="x axis of the trade-off: %% of weights remaining on a log scale (default), linear sparsity, or "
        "%% of forward FLOPs remaining (a FLOPs figure is drawn beside the default one anyway)",
    )
    p.add_argument(
        "--tolerance",
        type=float,
        default=0.01,
        help="critical sparsity: how far below the dense mean still counts (metric units; 0.01 = 1 point)",
    )
    p.add_argument("--alpha", type=float, default=0.05, help="significance level of the paired tests")
    p.add_argument("--workers", type=int, default=1, help="processes reading results.json (default 1)")
    return p.parse_args(argv)


def _error(message: str) -> int:
    print(f"multirun_analysis: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.out is None:  # beside the runs it reads (no run marker in it, so a later read skips it)
        args.out = os.path.join(args.sweeps[0], "analysis")
    if os.path.exists(args.out) and not os.path.isdir(args.out):
        return _error(f"--out {args.out} is a file; give a folder for the report (it is created)")
    t0 = time.perf_counter()
    try:
        sweep = load_sweep(args.sweeps, workers=args.workers)
    except FileNotFoundError as e:
        print(f"multirun_analysis: error: {e}", file=sys.stderr)
        return 2
    if sweep.runs.empty and sweep.problems.empty:
        print(
            f"multirun_analysis: error: no run folder below {', '.join(args.sweeps)} (a run folder holds "
            ".hydra/ or results.json); pass the folder given as hydra.sweep.dir",
            file=sys.stderr,
        )
        return 2
    if args.metric not in sweep.runs.columns and not sweep.runs.empty:
        numeric = [c for c in sweep.runs.select_dtypes("number").columns]
        print(
            f"multirun_analysis: error: --metric {args.metric} is not a level field; choose one of {numeric}",
            file=sys.stderr,
        )
        return 2
    loaded = time.perf_counter() - t0
    style = None if args.style.lower() == "none" else args.style
    col = AUTO if args.col == AUTO else [c for c in args.col.split(",") if c]
    if not sweep.runs.empty:
        for option, names in (("--hue", [args.hue]), ("--style", [style]), ("--col", col if col != AUTO else [])):
            bad = [n for n in names if n not in (None, AUTO) and n not in sweep.runs.columns]
            if bad:
                return _error(f"{option} {','.join(bad)} is not a column of the runs; columns that vary here: "
                              f"{', '.join(varying(sweep.runs)) or 'none'} (any column of runs.csv works)")
            axes = [n for n in names if n in NOT_A_GROUP or n == args.metric]
            if axes:
                return _error(f"{option} {','.join(axes)} is an axis of the statistics (seeds are averaged, levels "
                              f"are the x), not a group to compare; columns that vary here: "
                              f"{', '.join(varying(sweep.runs)) or 'none'}")
    try:
        os.makedirs(args.out, exist_ok=True)
    except OSError as e:
        return _error(f"cannot create --out {args.out}: {e.strerror or e}")
    report = write_report(
        sweep,
        args.out,
        hue=args.hue,
        style=style,
        col=col,
        metric=args.metric,
        x=args.x,
        tolerance=args.tolerance,
        alpha=args.alpha,
        sources=args.sweeps,
    )
    n_runs = sweep.runs["run_dir"].nunique() if not sweep.runs.empty else 0
    print(
        f"multirun_analysis: {n_runs} complete runs, {len(sweep.problems)} not complete "
        f"(read in {loaded:.2f} s); report: {report}"
    )
    for row in sweep.problems.itertuples(index=False):
        print(f"  {row.status}: {row.run_dir}: {row.reason}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
