"""Sweep folders of prune_lab -> a tidy DataFrame, statistics over seeds, seaborn figures and a written report.

from multirun_analysis import load_sweep, summarize, compare, plot_tradeoff
sweep = load_sweep("sweeps/init_study")         # .runs: one row per run x sparsity level; .problems; .layers
summarize(sweep.runs)                            # mean, std, 95% t interval, n seeds per curve and level
compare(sweep.runs, hue="init")                  # every pair per level, paired over seeds, Holm-corrected
g = plot_tradeoff(sweep.runs)                    # a seaborn FacetGrid; hue/style/facets: what varies
"""

from multirun_analysis.loading import (
    Sweep,
    early_stopping,
    layer_labels,
    load_curves,
    load_runs,
    load_sweep,
    read_curves,
)
from multirun_analysis.plots import (
    default_roles,
    palette,
    plot_layers,
    plot_ticket,
    plot_tradeoff,
    plot_training,
    save,
)
from multirun_analysis.report import write_report
from multirun_analysis.stats import (
    auc,
    compare,
    critical_sparsity,
    curve_columns,
    holm,
    paired_test,
    per_seed,
    robustness,
    robustness_per_seed,
    summarize,
    varying,
)

__all__ = [
    "Sweep",
    "auc",
    "compare",
    "critical_sparsity",
    "curve_columns",
    "default_roles",
    "early_stopping",
    "holm",
    "layer_labels",
    "load_curves",
    "load_runs",
    "load_sweep",
    "paired_test",
    "palette",
    "per_seed",
    "plot_layers",
    "plot_ticket",
    "plot_tradeoff",
    "plot_training",
    "read_curves",
    "robustness",
    "robustness_per_seed",
    "save",
    "summarize",
    "varying",
    "write_report",
]
