"""Sweep folders of prune_lab -> a tidy DataFrame, statistics over seeds, figures and a written report.

from multirun_analysis import load_runs, summarize, robustness, compare, plot_tradeoff
runs = load_runs("sweeps/init_study")           # one row per run x sparsity level
summarize(runs)                                  # mean, std, 95% CI, n seeds per group and level
robustness(runs)                                 # area under the curve, critical sparsity
compare(runs, hue="init")                        # best vs runner-up per level, paired over seeds
plot_tradeoff(runs, hue="init", style="pruner", col="model")
"""

from multirun_analysis.loading import Sweep, load_curves, load_runs, load_sweep
from multirun_analysis.plots import plot_layers, plot_tradeoff, plot_training, save
from multirun_analysis.report import write_report
from multirun_analysis.stats import (
    auc,
    compare,
    critical_sparsity,
    paired_test,
    per_seed,
    robustness,
    robustness_per_seed,
    summarize,
)

__all__ = [
    "Sweep",
    "auc",
    "compare",
    "critical_sparsity",
    "load_curves",
    "load_runs",
    "load_sweep",
    "paired_test",
    "per_seed",
    "plot_layers",
    "plot_tradeoff",
    "plot_training",
    "robustness",
    "robustness_per_seed",
    "save",
    "summarize",
    "write_report",
]
