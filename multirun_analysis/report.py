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
from multirun_analysis.stats import (
    LEVEL,
    compare,
    condition_columns,
    paired_test,
    robustness,
    robustness_per_seed,
    summarize,
)

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


def _groups(df: pd.DataFrame, context: Sequence[str]):
    """(context name, rows) per context, in sorted order; one unnamed group without context columns."""
    if not context:
        return [("", df)]
    return [
        (_context_name(g.iloc[0], context), g) for _, g in df.groupby(list(context), dropna=False, sort=True)
    ]


def _level_sentence(row: pd.Series, metric: str, scale: float, unit: str) -> str:
    lead = (row["best_mean"] - row["runner_up_mean"]) * scale
    where = f"At sparsity {_pct(row[LEVEL])}{' (dense)' if row[LEVEL] == 0 else ''}"
    if row["n_pairs"] >= 1 and row["mean_diff"] == 0 and math.isnan(row["p_wilcoxon"]):
        return f"- {where}, **{row['best']}** and {row['runner_up']} tie: the same {metric} on every seed."
    if abs(lead) < 1e-9:
        return (
            f"- {where}, **{row['best']}** and {row['runner_up']} tie in the mean ({metric} "
            f"{row['best_mean'] * scale:.4g}); no scheme leads."
        )
    if row["n_pairs"] < 2:
        verdict = f"untested (only {row['n_pairs']} seed(s) in common)"
    else:
        sig = "**significant**" if row["significant"] else "not significant"
        verdict = (
            f"{sig} (paired t-test p = {row['p_t']:.3g}, Wilcoxon p = {row['p_wilcoxon']:.3g}, "
            f"n = {row['n_pairs']} seeds)"
        )
    return (
        f"- {where}, **{row['best']}** is best with mean {metric} {row['best_mean'] * scale:.4g}; its lead "
        f"of {lead:.3g}{unit} over {row['runner_up']} is {verdict}."
    )


def _robust_sentence(row: pd.Series, hue: str, metric: str, scale: float) -> str:
    crit = (
        "not defined (no dense level)"
        if math.isnan(row["critical_sparsity"])
        else _pct(row["critical_sparsity"])
    )
    spread = ""
    if row["n_seeds"] > 1:
        spread = (
            f" (per seed: mean {_pct(row['critical_seed_mean'])}, sd {_pct(row['critical_seed_std'])}, "
            f"range {_pct(row['critical_seed_min'])}–{_pct(row['critical_seed_max'])}, n = {row['n_seeds']})"
        )
    return (
        f"- {row[hue]}: area {row['auc']:.4g} over sparsity 0–{_pct(row['max_level'])} (a mean {metric} of "
        f"{row['auc_norm'] * scale:.4g} across it); critical sparsity {crit}{spread}."
    )


def _auc_test(per_seed_auc: pd.DataFrame, hue: str, top: pd.Series, second: pd.Series) -> str:
    """The paired test of two schemes' per-seed areas, in words."""
    mine = per_seed_auc
    for c in [c for c in per_seed_auc.columns if c not in (hue, "seed", "auc", "critical")]:
        mine = mine[(mine[c] == top[c]) | (mine[c].isna() & pd.isna(top[c]))]
    wide = mine.pivot_table(index="seed", columns=hue, values="auc") if not mine.empty else pd.DataFrame()
    if top[hue] not in wide or second[hue] not in wide:
        return "no seeds in common to test the lead"
    pair = wide[[top[hue], second[hue]]].dropna()
    test = paired_test(pair[top[hue]], pair[second[hue]])
    if test["n_pairs"] < 2 or math.isnan(test["p_t"]):
        return f"the per-seed areas cannot be tested (n = {test['n_pairs']})"
    sig = "**significant**" if test["p_t"] < 0.05 else "not significant"
    return f"the lead is {sig} (paired t-test on per-seed areas p = {test['p_t']:.3g}, n = {test['n_pairs']})"


def answer_sentences(
    comparisons: pd.DataFrame,
    robust: pd.DataFrame,
    hue: str,
    metric: str,
    context: Sequence[str],
    tolerance: float,
    per_seed_auc: pd.DataFrame | None = None,
) -> list[str]:
    """The findings in sentences, per context (e.g. pruner): the most robust scheme, each level's best
    scheme and its paired test, and every scheme's area and critical sparsity."""
    scale, unit = (100, " points") if metric.endswith("acc") else (1, "")
    tol = f"{tolerance * scale:g}{' point' if unit and tolerance * scale == 1 else unit}"
    lines = []
    per_seed_auc = pd.DataFrame(columns=["seed", "auc"]) if per_seed_auc is None else per_seed_auc
    robust_by = dict(_groups(robust, context))
    compared = dict(_groups(comparisons, context)) if not comparisons.empty else {}
    for name in dict.fromkeys([*compared, *robust_by]):  # a context with one scheme has no comparison
        if name:
            lines += ["", f"**{name}**", ""]
        ranked = robust_by.get(name, robust.iloc[:0]).sort_values("auc", ascending=False)
        if len(ranked) > 1:
            top, second = ranked.iloc[0], ranked.iloc[1]
            lines.append(
                f"Most robust `{hue}` by area under the curve: **{top[hue]}** ({top['auc']:.4g}), ahead "
                f"of {second[hue]} ({second['auc']:.4g}); {_auc_test(per_seed_auc, hue, top, second)}."
            )
            lines.append("")
        if name in compared:
            levels = compared[name].sort_values(LEVEL)
            lines += [_level_sentence(row, metric, scale, unit) for _, row in levels.iterrows()]
        else:
            lines.append(f"- Only one `{hue}` here: nothing to compare.")
        if not ranked.empty:
            lines += [
                "",
                f"Robustness (area under the {metric}–sparsity curve of the mean; critical sparsity = "
                f"highest level whose mean {metric} is within {tol} of the dense mean):",
                "",
            ]
            lines += [_robust_sentence(row, hue, metric, scale) for _, row in ranked.iterrows()]
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
            # what else tells curves apart (another swept setting, a second pruner without a style) gets a row
            facets = [*([style] if style else []), *([col] if isinstance(col, str) else col or [])]
            extra = [c for c in context if c not in facets] or None
            figures = {
                "tradeoff": plot_tradeoff(runs, hue=hue, style=style, col=col, row=extra, metric=metric, x=x)
            }
        pooled = [str(w.message) for w in caught]
        curves = load_curves(runs)
        if not curves.empty and "val_acc" in curves:
            figures["training"] = plot_training(
                curves, hue=hue, style=style, row=[*[c for c in context if c != style], "run_target_sparsity"]
            )
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
        per_seed_auc = robustness_per_seed(runs, metric, by, tolerance)
        lines += answer_sentences(comparisons, robust, hue, metric, context, tolerance, per_seed_auc)
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
