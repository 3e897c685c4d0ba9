"""`write_report`: the tables, figures and the answer in sentences, as REPORT_DIR/report.md.

The answer: at each sparsity level, the best init scheme by mean accuracy and whether its lead over the
runner-up is significant in a paired test over seeds; each scheme's robustness (area under its curve and
critical sparsity); and every run that could not be read, with its folder and reason.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from multirun_analysis.loading import Sweep, load_curves
from multirun_analysis.plots import Facet, plot_layers, plot_tradeoff, plot_training, save
from multirun_analysis.stats import LEVEL, compare, condition_columns, robustness, summarize

CAVEAT = (
    "Seeds are the unit of replication: each test pairs the two schemes' runs of the same seed. With n seeds "
    "the paired t-test has n-1 degrees of freedom and assumes normally distributed differences, so with fewer "
    "than about 5 seeds its p-values are rough and a real difference is easily missed; the Wilcoxon "
    "signed-rank test makes no normality assumption but cannot reach p < 0.05 with fewer than 6 seeds. Several "
    "levels are tested without correction for multiple comparisons."
)


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g") -> str:
    """A GitHub markdown table (no tabulate dependency)."""

    def cell(v: object) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, floatfmt)
        return str(v).replace("|", "\\|").replace("\n", " ")

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _context_name(row: pd.Series, cols: Sequence[str]) -> str:
    parts = [
        f"{row[c]}" for c in cols if not (isinstance(row[c], float) and math.isnan(row[c])) and row[c] != ""
    ]
    return " / ".join(parts)


def _pct(level: float) -> str:
    return f"{level * 100:.4g}%"


def answer_sentences(
    comparisons: pd.DataFrame,
    robust: pd.DataFrame,
    hue: str,
    metric: str,
    context: Sequence[str],
    tolerance: float,
) -> list[str]:
    """The findings in sentences, one list item per context x level and per scheme."""
    scale, unit = (100, " points") if metric.endswith("acc") else (1, "")
    lines = []
    for _, group in (
        comparisons.groupby(list(context), dropna=False, sort=True) if context else [((), comparisons)]
    ):
        name = _context_name(group.iloc[0], context)
        if name:
            lines.append(f"\n**{name}**\n")
        for row in group.sort_values(LEVEL).itertuples(index=False):
            row = row._asdict()
            lead = (row["best_mean"] - row["runner_up_mean"]) * scale
            if row["n_pairs"] < 2:
                verdict = f"no paired test (only {row['n_pairs']} seed(s) in common)"
            else:
                sig = "significant" if row["significant"] else "not significant"
                verdict = (
                    f"{sig} (paired t-test p = {row['p_t']:.3g}, Wilcoxon p = {row['p_wilcoxon']:.3g}, "
                    f"n = {row['n_pairs']} seeds)"
                )
            lines.append(
                f"- At sparsity {_pct(row[LEVEL])}{' (dense)' if row[LEVEL] == 0 else ''}, "
                f"**{row['best']}** is best with mean {metric} {row['best_mean'] * scale:.4g}; its lead of "
                f"{lead:.3g}{unit} over {row['runner_up']} is {verdict}."
            )
    if not robust.empty:
        tol_unit = " point" if unit and tolerance * scale == 1 else unit
        lines.append(
            "\nRobustness (higher area = more accuracy kept across the levels; critical sparsity = "
            f"highest level whose mean {metric} is within {tolerance * scale:g}{tol_unit} of the dense mean):\n"
        )
        for row in robust.sort_values("auc_norm", ascending=False).itertuples(index=False):
            row = row._asdict()
            where = _context_name(pd.Series(row), context)
            crit = (
                "none measured (no dense level)"
                if math.isnan(row["critical_sparsity"])
                else f"{_pct(row['critical_sparsity'])}"
            )
            spread = (
                ""
                if math.isnan(row["critical_seed_std"])
                else f" (per seed {_pct(row['critical_seed_mean'])} ± {row['critical_seed_std'] * 100:.2g} points, "
                f"range {_pct(row['critical_seed_min'])}–{_pct(row['critical_seed_max'])}, "
                f"n = {row['n_seeds']})"
            )
            lines.append(
                f"- {row[hue]}{f' ({where})' if where else ''}: area {row['auc']:.4g} over sparsity "
                f"0–{_pct(row['max_level'])} (mean {metric} {row['auc_norm'] * scale:.4g} across it), "
                f"critical sparsity {crit}{spread}."
            )
    return lines


def write_report(
    sweep: Sweep,
    out: str | os.PathLike,
    hue: str = "init",
    style: str | None = "pruner",
    col: Facet = ("dataset", "model"),
    metric: str = "test_acc",
    x: str = "remaining",
    tolerance: float = 0.01,
    alpha: float = 0.05,
    sources: Sequence[str] = (),
) -> Path:
    """Write runs.csv/.parquet, summary.csv, robustness.csv, comparisons.csv, problems.csv, figures/ and report.md.

    Returns the path of report.md. Works on a sweep with no complete run (the report then lists problems).
    """
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    runs, problems = sweep.runs, sweep.problems
    runs.to_csv(out / "runs.csv", index=False)
    _to_parquet(runs, out / "runs.parquet")
    problems.to_csv(out / "problems.csv", index=False)
    lines = [
        "# Sweep report",
        "",
        f"Sources: {', '.join(f'`{s}`' for s in sources) or '(given tables)'}  ",
        f"Runs read: {runs['run_dir'].nunique()} complete, {len(problems)} not complete (listed at the end).",
        "",
    ]
    if not runs.empty:
        by = condition_columns(runs)
        context = [c for c in by if c != hue and runs[c].nunique(dropna=False) > 1]
        shown = [c for c in by if c == hue or c in context]
        summary = summarize(runs, metric, by)
        robust = robustness(runs, metric, by, tolerance)
        comparisons = compare(runs, hue, metric, by, alpha)
        summary.to_csv(out / "summary.csv", index=False)
        robust.to_csv(out / "robustness.csv", index=False)
        comparisons.to_csv(out / "comparisons.csv", index=False)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            figures = {"tradeoff": plot_tradeoff(runs, hue=hue, style=style, col=col, metric=metric, x=x)}
        pooled = [str(w.message) for w in caught]
        curves = load_curves(runs)
        if not curves.empty and "val_acc" in curves:
            figures["training"] = plot_training(curves, hue=hue)
        if not sweep.layers.empty and (sweep.layers["target_level"] > 0).any():
            figures["layers"] = plot_layers(
                sweep.layers,
                col=[c for c in ("model", "pruner", "condition") if sweep.layers[c].nunique(dropna=False) > 1]
                or "model",
            )
        for name, fig in figures.items():
            save(fig, fig_dir / name)
        lines += [
            "## Answer",
            "",
            f"Which `{hue}` keeps the most {metric} under pruning? Per sparsity level, the "
            f"best scheme by mean over seeds against the runner-up (α = {alpha}):",
            "",
        ]
        lines += answer_sentences(comparisons, robust, hue, metric, context, tolerance)
        lines += ["", f"*Caveat.* {CAVEAT}", ""]
        lines += ["## Accuracy against sparsity", "", "![trade-off](figures/tradeoff.png)", ""]
        lines += [f"> {msg}" for msg in pooled]
        cols = [*shown, LEVEL, "mean_sparsity", "mean", "std", "ci_low", "ci_high", "n_seeds"]
        lines += [
            "",
            f"### Summary ({metric}; 95% t-interval over seeds)",
            "",
            markdown_table(summary[[c for c in cols if c in summary]]),
            "",
        ]
        rcols = [
            *shown,
            "dense_mean",
            "auc",
            "auc_norm",
            "auc_seed_std",
            "critical_sparsity",
            "critical_seed_mean",
            "critical_seed_std",
            "critical_seed_min",
            "critical_seed_max",
            "n_seeds",
        ]
        lines += ["### Robustness", "", markdown_table(robust[rcols]), ""]
        ccols = [
            *[c for c in context],
            LEVEL,
            "best",
            "best_mean",
            "runner_up",
            "runner_up_mean",
            "n_pairs",
            "mean_diff",
            "t",
            "p_t",
            "p_wilcoxon",
            "significant",
        ]
        lines += [
            "### Paired comparisons (best vs runner-up, paired by seed)",
            "",
            markdown_table(comparisons[ccols]) if not comparisons.empty else f"(only one `{hue}` value)",
            "",
        ]
        if "training" in figures:
            lines += ["## Training curves", "", "![training](figures/training.png)", ""]
        if "layers" in figures:
            lines += [
                "## Per-layer sparsity",
                "",
                "Global pruning spreads the zeros unevenly across layers; "
                "layer-wise pruning gives every layer the target.",
                "",
                "![layers](figures/layers.png)",
                "",
            ]
    else:
        lines += ["No complete run was found, so there is nothing to summarize yet.", ""]
    lines += ["## Runs that are not complete", ""]
    if problems.empty:
        lines += ["None: every run folder holds a valid `results.json`.", ""]
    else:
        lines += [
            f"{len(problems)} run folder(s) have no usable results; they are left out of every table and "
            "figure above.",
            "",
            markdown_table(problems[["status", "run_dir", "reason"]]),
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def _to_parquet(runs: pd.DataFrame, path: Path) -> None:
    """Parquet needs one type per column: a swept key that is an int in one sweep and a string in another
    is written as text."""
    table = runs.copy()
    for c in table.select_dtypes(include=object).columns:
        kinds = {type(v) for v in table[c].dropna()}
        if len(kinds) > 1:
            table[c] = table[c].map(
                lambda v: v if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)
            )
    table.attrs = {}
    table.to_parquet(path, index=False)
