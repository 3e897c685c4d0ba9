"""`write_report`: the answer first, then the tables, the figures and the runs with problems, as report.md.

Accuracy is in % everywhere in the report, intervals are clipped to [0, 100]. The answer compares
whatever varies between the runs (the hue: init in an init study, pruner in a pruner study, train.lr
when lr varies): at the highest sparsity level every compared group reached, the best group's mean and
interval, and each other group's difference with its paired t-test over seeds after Holm's correction
over every test in the report. Where levels carry a `branch` (control arms: IMP's Lottery Ticket controls, the
sanity checks of pruning at initialisation), each control is also compared with its method's own level
(`main`) at the same sparsity, in the same family of tests. Checks follow: curves whose runs differ in
training budget, code version (git commit) or torch version are flagged, and each level's total training
budget is stated.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from multirun_analysis.loading import CHOICES, MAIN_BRANCH, Sweep, early_stopping, layer_labels, read_curves
from multirun_analysis.plots import (
    Facet,
    palette,
    plot_layers,
    plot_ticket,
    plot_tradeoff,
    plot_training,
    resolve_roles,
    save,
)
from multirun_analysis.stats import LEVEL, compare, curve_columns, holm, robustness, summarize, varying

CAVEAT = (
    "Seeds are the unit of replication: each test pairs two groups' runs of the same seed (paired t-test, "
    "n-1 degrees of freedom, normal differences assumed; with fewer than about 5 seeds p-values are rough "
    "and real differences are easily missed). Where every seed moved by the same amount (to float noise) "
    "the t-test has no variance to work with, and the exact sign-flip test is used: its p is at least "
    "2/2^n for n seeds (0.125 for 4, 0.25 for 3). Gaps are paired differences, over the seeds both groups "
    "have. Significance is decided after Holm's correction over all "
    "{tests} in the comparisons table{controls} (every level, pair and context: one family), at α = {alpha}. The "
    "Wilcoxon p-values beside them are uncorrected and cannot reach 0.05 with fewer than 6 seeds."
)
# Checks of a curve: run columns that must agree between the runs averaged into one curve.
SAME_WITHIN_CURVE = {"code": "code (digest of prune_lab's source and the model's code, or prune_lab's version)",
                     "git_commit": "code version (git commit)", "torch_version": "torch version",
                     "budget": "configured training budget"}


def markdown_table(df: pd.DataFrame, floatfmt: str = ".4g", formats: dict[str, str] | None = None) -> str:
    """A GitHub markdown table (no tabulate dependency); `formats` gives a column its own float format."""
    formats = formats or {}

    def cell(v: object, fmt: str) -> str:
        if isinstance(v, float):
            return "" if math.isnan(v) else format(v, fmt)
        return str(v).replace("|", "\\|").replace("\n", " ")

    fmts = [formats.get(c, floatfmt) for c in df.columns]
    head = "| " + " | ".join(map(str, df.columns)) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v, f) for v, f in zip(row, fmts)) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _formats(table: pd.DataFrame) -> dict[str, str]:
    """Two decimals for every column in % or points (a mean, its interval and its sd alike: 0.01 points is
    finer than a test set of 10,000 examples resolves; sparsity levels are kept to 0.01%), p-values to 3
    significant digits (0.0496 must not read 0.05); other columns 4 significant digits."""
    out = {c: ".2f" for c in table.columns if str(c).endswith(("(%)", "(points)"))}
    return {**out, **{c: ".3g" for c in table.columns if str(c) == "p" or str(c).startswith(("p (", "p_"))}}


def _pct(fraction: float) -> str:
    return f"{fraction * 100:.4g}%"


def _name(row: pd.Series, cols: Sequence[str]) -> str:
    """"pruner=magnitude, train.lr=0.01": the values of `cols` in a row, NaN left out."""
    return ", ".join(f"{c}={row[c]}" for c in cols if not pd.isna(row[c]))


def answer(
    summary: pd.DataFrame, comparisons: pd.DataFrame, hue: str, context: Sequence[str], metric: str = "test_acc",
) -> list[str]:
    """One sentence per context: at the highest sparsity every `hue` group reached, the best group's mean
    (95% interval) and each other group's difference, significance after Holm, p and n."""
    unit = "%" if metric.endswith("acc") else ""
    scale = 100 if unit else 1
    lines = []
    groups = summary.groupby(list(context), dropna=False, sort=True) if context else [((), summary)]
    for key, part in groups:
        where = _name(part.iloc[0], context) if context else ""
        shared = part.groupby(LEVEL)[hue].nunique()
        shared = shared[shared == part[hue].nunique()].index
        if part[hue].nunique() < 2 or shared.empty:
            continue
        level = max(shared)
        at = part[part[LEVEL] == level].sort_values("mean", ascending=False)
        best = at.iloc[0]
        label = (lambda v: str(v)) if hue in (*CHOICES, "branch") else (lambda v: f"{hue}={v}")  # 0.01 -> train.lr=0.01
        ci = f"95% CI {best['ci_low'] * scale:.1f}–{best['ci_high'] * scale:.1f}" if best["n_seeds"] > 1 else "1 seed"
        head = f"At {_pct(level)} sparsity{' (dense)' if level == 0 else ''}"
        head += f" ({where})" if where else ""
        what = {"test_acc": "test accuracy", "val_acc": "validation accuracy"}.get(metric, metric)
        mean = f"{best['mean'] * scale:.1f}{unit}"
        text = f"{head}, **{label(best[hue])}** keeps {mean} {what} ({ci}, n = {best['n_seeds']})"
        others = []
        for _, other in at.iloc[1:].iterrows():
            others.append(_versus(comparisons, context, key, level, best[hue], other, hue, label, scale, unit))
        lines.append(f"- {text}: " + "; ".join(others) + ".")
    return lines


def _pair(comparisons: pd.DataFrame, context, key, level, a, b) -> tuple[pd.Series | None, int]:
    """The comparisons row of a and b at `level` in the context `key`, and +1 if a is its `higher`, -1 if b."""
    if comparisons.empty:
        return None, 1
    rows = comparisons[comparisons[LEVEL] == level]
    for c, v in zip(context, key if isinstance(key, tuple) else (key,)):
        rows = rows[(rows[c] == v) | (rows[c].isna() & pd.isna(v))]
    for sign, (hi, lo) in ((1, (a, b)), (-1, (b, a))):
        found = rows[(rows["higher"] == hi) & (rows["lower"] == lo)]
        if not found.empty:
            return found.iloc[0], sign
    return None, 1


def _versus(comparisons, context, key, level, best, other: pd.Series, hue, label, scale, unit) -> str:
    """"3.0 points above **B** on the 3 seeds both have (75.7% over its 4 seeds; significant ...)".

    The gap is the paired difference over the seeds both groups have, the one the test tests; where a group
    misses seeds the sentence says over how many seeds the gap is and over how many the other's mean is.
    """
    row, sign = _pair(comparisons, context, key, level, best, other[hue])
    mean = f"{other['mean'] * scale:.1f}{unit}"
    if row is None or row["n_pairs"] == 0:
        return f"**{label(other[hue])}** {mean} (n = {other['n_seeds']}; no seed in common, not tested)"
    diff = sign * row["mean_diff"] * scale
    gap = f"{abs(diff):.1f} points {'above' if diff >= 0 else 'below'} **{label(other[hue])}**"
    shared = row["n_pairs"] == row["higher_seeds"] == row["lower_seeds"]
    if shared:
        return f"{gap} ({mean}; {_verdict(row)})"
    return (f"{gap} on the {row['n_pairs']} seed(s) both have ({mean} over its {other['n_seeds']} seeds; "
            f"{_verdict(row)})")


def _verdict(row: pd.Series) -> str:
    """"significant after Holm correction, p = 0.012, n = 4 seeds"; the sign-flip test is named."""
    if math.isnan(row["p_holm"]):
        if row["n_pairs"] >= 2:  # paired_test tests every difference it can: these are all zero
            return f"no difference on any of the {row['n_pairs']} paired seeds, nothing to test"
        return f"not testable with {row['n_pairs']} paired seed(s)"
    verdict = "**significant**" if row["significant"] else "not significant"
    p = "p < 0.001" if row["p_holm"] < 0.001 else f"p = {row['p_holm']:.2g}"
    how = " (exact sign-flip test: every seed moved by the same amount)" if row["test"] == "sign-flip" else ""
    return f"{verdict} after Holm correction{how}, {p}, n = {row['n_pairs']} seeds"


def control_comparisons(runs: pd.DataFrame, hue: str | None, comparisons: pd.DataFrame, metric: str,
                        by: Sequence[str], alpha: float, res: float | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(comparisons, controls): each control arm (a level's `branch`) against its method's own level (`main`) at
    the same sparsity within every other curve column, paired by seed (`compare` with hue="branch"). Where the hue
    is `branch` these are rows of `comparisons` already; otherwise they join its family and Holm's correction is
    taken again over both tables. No branch but `main`: controls is empty."""
    if "branch" not in runs or not (runs["branch"] != MAIN_BRANCH).any():
        return comparisons, pd.DataFrame()
    if hue == "branch":
        controls = comparisons
    else:
        controls = compare(runs, "branch", metric, by, alpha, res)
        if controls.empty:
            return comparisons, controls
        controls = controls[(controls["higher"] == MAIN_BRANCH) | (controls["lower"] == MAIN_BRANCH)].copy()
        if not comparisons.empty and not controls.empty:
            p = holm(pd.concat([comparisons["p"], controls["p"]], ignore_index=True))
            comparisons = comparisons.assign(p_holm=p[: len(comparisons)])
            controls = controls.assign(p_holm=p[len(comparisons):])
            comparisons["significant"] = comparisons["p_holm"] < alpha
            controls["significant"] = controls["p_holm"] < alpha
    controls = controls[(controls["higher"] == MAIN_BRANCH) | (controls["lower"] == MAIN_BRANCH)]
    return comparisons, controls[controls[LEVEL] > 0] if not controls.empty else controls


def control_answer(summary: pd.DataFrame, controls: pd.DataFrame, context: Sequence[str],
                   metric: str = "test_acc") -> list[str]:
    """One sentence per context: at the highest pruned level the method (`main`) and its controls share, whether
    the method beat each control (its paired gap and the Holm-corrected verdict)."""
    unit = "%" if metric.endswith("acc") else ""
    scale = 100 if unit else 1
    lines = []
    pruned = summary[summary[LEVEL] > 0]
    groups = pruned.groupby(list(context), dropna=False, sort=True) if context else [((), pruned)]
    for key, part in groups:
        main = part[part["branch"] == MAIN_BRANCH]
        arms = part[part["branch"] != MAIN_BRANCH]
        shared = sorted(set(main[LEVEL]) & set(arms[LEVEL]))
        if not shared:
            continue
        level = shared[-1]
        at = arms[arms[LEVEL] == level].sort_values("branch")
        own = main[main[LEVEL] == level].iloc[0]
        where = _name(part.iloc[0], context)
        said = []
        for _, arm in at.iterrows():
            row, sign = _pair(controls, context, key, level, MAIN_BRANCH, arm["branch"])
            mean = f"{arm['mean'] * scale:.1f}{unit}"
            if row is None or row["n_pairs"] == 0:
                said.append(f"**{arm['branch']}** {mean} (no seed in common with the method, not tested)")
                continue
            diff = sign * row["mean_diff"] * scale
            beat = ("the method beat it, " if diff > 0 else "it beat the method, ") if row["significant"] else ""
            said.append(f"**{arm['branch']}** {mean}: {beat}the method {abs(diff):.1f} points "
                        f"{'above' if diff >= 0 else 'below'} ({_verdict(row)})")
        lines.append(f"- {where + ', a' if where else 'A'}t {_pct(level)} sparsity, the method (**{MAIN_BRANCH}**) "
                     f"keeps {own['mean'] * scale:.1f}{unit} (n = {own['n_seeds']}): " + "; ".join(said) + ".")
    return lines


def resolution(runs: pd.DataFrame, metric: str) -> float | None:
    """An accuracy's smallest step, 1 / the test set's size, when every run records the same size (else None:
    the paired test then treats only float noise as no difference)."""
    sizes = runs["test_size"].dropna().unique() if "test_size" in runs and metric.startswith("test_") else []
    if metric.endswith("_acc") and len(sizes) == 1 and runs["test_size"].notna().all() and sizes[0] > 0:
        return 1.0 / float(sizes[0])
    return None


def trust_flags(runs: pd.DataFrame, by: Sequence[str]) -> list[str]:
    """One line per curve whose runs differ in what must not differ within a curve: code version, torch
    version, configured budget, or (per level) the recorded epochs_trained."""
    lines = []
    for _, part in runs.groupby(list(by), dropna=False, sort=True):
        name = _name(part.iloc[0], [c for c in by if runs[c].map(str).nunique() > 1]) or "the only curve"
        for col, what in SAME_WITHIN_CURVE.items():
            values = sorted(part[col].dropna().map(str).unique()) if col in part else []
            if len(values) > 1:
                lines.append(f"- ⚠ **{name}**: its runs have different {what}: {', '.join(values)}.")
        unknown = part.drop_duplicates("run_dir")[["code", "git_commit"]].isna().all(axis=1).sum() \
            if {"code", "git_commit", "run_dir"} <= set(part.columns) else 0
        if unknown:
            lines.append(f"- ⚠ **{name}**: {unknown} of its runs record no code version (no code digest, no git "
                         "commit): whether its runs share one code version cannot be checked.")
        if "epochs_trained" in part:
            spread = part.groupby(LEVEL)["epochs_trained"].agg(lambda v: sorted(v.dropna().unique()))
            for level, values in spread.items():
                if len(values) > 1:
                    lines.append(f"- ⚠ **{name}** at {_pct(level)}: runs trained for different budgets "
                                 f"({', '.join(f'{v:g}' for v in values)} epochs).")
    return lines


def budget_table(runs: pd.DataFrame, by: Sequence[str]) -> tuple[pd.DataFrame, list[str]]:
    """Each curve's total training epochs per level (epochs_trained), and a note when pruned levels had
    more training than their dense baseline (a gain over dense may then come from the extra epochs)."""
    if "epochs_trained" not in runs or runs["epochs_trained"].isna().all():
        configured = runs.drop_duplicates("budget")["budget"].dropna().tolist() if "budget" in runs else []
        return pd.DataFrame(), [
            "- These runs do not record `epochs_trained` per level (older prune_lab); configured budgets: "
            + ("; ".join(f"`{b}`" for b in configured) or "unknown") + "."]
    table = (runs.groupby([*by, LEVEL], dropna=False)["epochs_trained"]
             .agg(lambda v: "–".join(f"{x:g}" for x in sorted({v.min(), v.max()})) if v.notna().any() else "")
             .reset_index())
    notes = []
    for _, part in runs.groupby(list(by), dropna=False):
        dense, pruned = part.loc[part[LEVEL] == 0, "epochs_trained"], part.loc[part[LEVEL] > 0, "epochs_trained"]
        if not dense.dropna().empty and not pruned.dropna().empty and pruned.max() > dense.max():
            name = _name(part.iloc[0], [c for c in by if runs[c].map(str).nunique() > 1]) or "the runs"
            notes.append(f"- {name}: pruned levels trained up to {pruned.max():g} epochs in total, the dense "
                         f"baseline {dense.max():g}; part of any gain over dense may be the extra training.")
    return table, notes


def _display(summary: pd.DataFrame, shown: Sequence[str], metric: str) -> pd.DataFrame:
    """The summary in the report's units: sparsity and accuracy in %."""
    scale = 100 if metric.endswith("acc") else 1
    out = summary[[*shown]].copy()
    out["sparsity (%)"] = summary[LEVEL] * 100
    if "mean_sparsity" in summary:
        out["measured (%)"] = summary["mean_sparsity"] * 100
    unit = " (%)" if scale == 100 else ""
    for col, name in (("mean", "mean"), ("ci_low", "95% CI low"), ("ci_high", "95% CI high"), ("std", "sd")):
        out[f"{metric} {name}{unit}"] = summary[col] * scale
    out["n seeds"] = summary["n_seeds"]
    return out


def write_report(
    sweep: Sweep,
    out: str | os.PathLike,
    hue: str | None = "auto",
    style: str | None = "auto",
    col: Facet = "auto",
    metric: str = "test_acc",
    x: str = "remaining",
    tolerance: float = 0.01,
    alpha: float = 0.05,
    sources: Sequence[str] = (),
) -> Path:
    """Write runs.csv/.parquet, summary.csv, robustness.csv, comparisons.csv, problems.csv, figures/ and report.md.

    hue/style/col: "auto" takes the columns that vary (`plots.default_roles`). Returns the path of
    report.md. Works on a sweep with no complete run (the report then lists problems).
    """
    out = Path(out)
    fig_dir = out / "figures"
    fig_dir.mkdir(parents=True, exist_ok=True)
    runs = sweep.runs
    curves, damaged = read_curves(runs) if not runs.empty else (pd.DataFrame(), sweep.problems.iloc[:0])
    problems = pd.concat([sweep.problems, damaged], ignore_index=True) if not damaged.empty else sweep.problems
    runs.to_csv(out / "runs.csv", index=False)
    _to_parquet(runs, out / "runs.parquet")
    problems.to_csv(out / "problems.csv", index=False)
    complete, broken = runs["run_dir"].nunique(), problems["run_dir"].nunique()
    lines = [
        "# Sweep report",
        "",
        f"Sources: {', '.join(f'`{s}`' for s in sources) or '(given tables)'}  ",
        f"Runs read: {complete} complete, {len(sweep.problems)} not complete"
        + (f", {len(damaged)} with damaged metrics lines" if not damaged.empty else "") + " (listed at the end).",
        "",
    ]
    figures: dict[str, str] = {}
    if not runs.empty:
        hue, style, _, _ = resolve_roles(runs, hue, style, col, "auto")
        by = curve_columns(runs)
        by += [hue] if hue and hue not in by else []  # a hue outside the conditions (e.g. sweep) splits curves too
        keys = varying(runs)
        keys += [hue] if hue and hue not in keys else []
        context = [c for c in by if c != hue and c in keys]
        shown = [c for c in by if c == hue or c in keys] or [c for c in ("model", "pruner") if c in runs]
        summary = summarize(runs, metric, by)
        robust = robustness(runs, metric, by, tolerance)
        comparisons = compare(runs, hue, metric, by, alpha, resolution(runs, metric)) if hue else pd.DataFrame()
        comparisons, controls = control_comparisons(runs, hue, comparisons, metric, by, alpha,
                                                    resolution(runs, metric))
        summary.to_csv(out / "summary.csv", index=False)
        robust.to_csv(out / "robustness.csv", index=False)
        comparisons.to_csv(out / "comparisons.csv", index=False)
        if not controls.empty:
            controls.to_csv(out / "controls.csv", index=False)
        colors = palette(runs, hue)
        figure_notes: list[str] = []
        figures = _figures(sweep, runs, curves, fig_dir, hue, style, col, metric, x, colors, figure_notes)
        fixed = [f"{c} = {runs[c].iloc[0]}" for c in ("dataset", "model", "init", "pruner") if c not in keys]
        lines += [
            "## Answer",
            "",
            f"Compared: `{hue}` ({', '.join(map(str, sorted(runs[hue].map(str).unique())))})"
            + (f", within each {', '.join(f'`{c}`' for c in context)}" if context else "")
            + (f"; fixed: {', '.join(fixed)}" if fixed else "") + "."
            if hue else "Nothing varies between these runs but the seed and the sparsity target: one curve.",
            "",
        ]
        if hue:
            lines += answer(summary, comparisons, hue, context, metric) or [f"- Only one `{hue}` per context."]
            if not controls.empty:
                arms = [c for c in by if c != "branch" and c in keys]
                lines += ["", "Controls: each `branch` against its method's own level (`main`) at the same sparsity, "
                          "paired by seed (the table *Controls against their method* has every level):", ""]
                lines += control_answer(summary, controls, arms, metric)
            separate = hue != "branch" and not controls.empty
            m = int(comparisons["p_holm"].notna().sum()) if not comparisons.empty else 0
            m += int(controls["p_holm"].notna().sum()) if separate else 0
            tests = f"{m} test" + "s" * (m != 1)
            also = " and the controls table" if separate else ""
            if m:
                lines += ["", f"*How to read this.* {CAVEAT.format(tests=tests, controls=also, alpha=alpha)}", ""]
            else:  # one seed, or no pair of groups: nothing was tested, so no correction to explain
                lines += ["", "*How to read this.* No test could be run: a paired test needs at least two seeds that "
                          "both groups of a pair have. Differences above are single runs, not evidence.", ""]
        flags = trust_flags(runs, by)
        budget, notes = budget_table(runs, by)
        lines += ["## Checks", ""]
        lines += flags or ["- Every curve's runs share one code version, torch version and configured budget."]
        lines += notes + [""]
        lines += _tables(summary, robust, comparisons, budget, shown, context, hue, by, metric, tolerance)
        if not controls.empty:
            arms = [c for c in by if c != "branch" and c in keys]
            lines += _control_table(controls, arms, metric)
        lines += _figure_section(figures, figure_notes)
    else:
        lines += ["No complete run was found, so there is nothing to summarize yet.", ""]
    lines += ["## Runs with problems", ""]
    if problems.empty:
        lines += ["None: every run folder holds a valid `results.json` and readable metrics.", ""]
    else:
        lines += [
            f"{broken} run folder(s) have problems. Runs without usable results are left out of every table and "
            "figure above; damaged lines of metrics.jsonl are skipped (the run's results.json still counts).",
            "",
            markdown_table(problems[["status", "run_dir", "reason"]]),
            "",
        ]
    path = out / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def flops_follow_weights(runs: pd.DataFrame) -> bool:
    """Whether every level's FLOPs remaining (flops_nonzero / flops_dense) is its prunable weights
    remaining (prunable_nonzero / prunable_total), to float precision: FLOPs proportional to nonzero
    weights, so a FLOPs axis is the weights axis again. False where the weight counts are not recorded."""
    need = {"flops_dense", "flops_nonzero", "prunable_nonzero", "prunable_total"}
    if not need <= set(runs.columns) or runs[list(need)].isna().any().any() or (runs["prunable_total"] <= 0).any():
        return False
    flops = runs["flops_nonzero"] / runs["flops_dense"]
    weights = runs["prunable_nonzero"] / runs["prunable_total"]
    return bool(np.allclose(flops, weights, rtol=1e-9, atol=0))


# Per-level measures a method records beside accuracy (a column of the runs table where it does): each gets a
# figure against the weights remaining, drawn as the trade-off is (one line per condition: a rewind point, say).
LEVEL_MEASURES = {
    "instability": "IMP's instability (pruner.stability): the test-error barrier to a copy trained from the "
                   "rewind point with another data order (Frankle et al. 2020)",
}


def _figures(sweep, runs, curves, fig_dir, hue, style, col, metric, x, colors, notes) -> dict[str, str]:
    """Draw and save every figure the runs allow; {name: caption}. Why one is left out goes to `notes`."""
    made = {}
    common = {"hue": hue, "style": style, "colors": colors}
    save(plot_tradeoff(runs, col=col, metric=metric, x=x, **common), fig_dir / "tradeoff")
    made["tradeoff"] = f"{metric} against the share of weights remaining"
    for measure, caption in LEVEL_MEASURES.items():
        if measure in runs and runs[measure].notna().any():
            save(plot_tradeoff(runs.dropna(subset=[measure]), col=col, metric=measure, x=x, **common),
                 fig_dir / measure)
            made[measure] = f"{caption}, against the share of weights remaining"
    flops = {"flops_dense", "flops_nonzero"} <= set(runs.columns)
    if flops and runs["flops_nonzero"].notna().all() and (runs["flops_dense"] > 0).all():
        if flops_follow_weights(runs):
            notes.append("The FLOPs figure is left out: in every run the share of forward FLOPs remaining equals "
                         "the share of prunable weights remaining (each weight costs the same FLOPs, as in an "
                         "MLP), so it would repeat the trade-off figure.")
        else:
            save(plot_tradeoff(runs, col=col, metric=metric, x="flops", **common), fig_dir / "flops")
            made["flops"] = f"{metric} against the forward FLOPs remaining"
    if not curves.empty and "val_acc" in curves:
        if "round" in runs and runs["round"].notna().any():
            ticket = runs[runs["round"].notna()].merge(early_stopping(curves), on=["run_dir", "level_name"], how="left")
            if ticket["early_stop_epoch"].notna().any():
                save(plot_ticket(ticket.dropna(subset=["early_stop_epoch"]), **common), fig_dir / "ticket")
                made["ticket"] = "IMP: test accuracy and early-stopping epoch per level"
        # a level's branch is not a column of the per-epoch curves: colour them by what varies among them
        roles = {k: v if v is None or v in curves else "auto" for k, v in (("hue", hue), ("style", style))}
        save(plot_training(curves, colors=colors if roles["hue"] == hue else None, **roles), fig_dir / "training")
        made["training"] = "validation accuracy per epoch of each phase"
    if not sweep.layers.empty and (sweep.layers[LEVEL] > 0).any():
        save(plot_layers(sweep.layers, hue=hue, colors=colors, names=layer_labels(sweep.layers)), fig_dir / "layers")
        made["layers"] = "measured sparsity of each layer"
    return made


def _tables(summary, robust, comparisons, budget, shown, context, hue, by, metric, tolerance) -> list[str]:
    unit = " (%)" if metric.endswith("acc") else ""
    scale = 100 if unit else 1
    lines = ["## Tables (accuracy in %; 95% Student t intervals over seeds, clipped to [0, 100])", ""]
    display = _display(summary, shown, metric)
    lines += [f"### {metric} per level", "", markdown_table(display, formats=_formats(display)), ""]
    if not budget.empty:
        lines += ["### Training budget (total epochs behind each level's weights)", "",
                  markdown_table(budget[[*shown, LEVEL, "epochs_trained"]].assign(
                      **{LEVEL: budget[LEVEL] * 100}).rename(columns={LEVEL: "sparsity (%)"})), ""]
    if not comparisons.empty:
        # every number of a row is over the pair's shared seeds, so that mean - mean = the difference tested
        table = comparisons[[*context, LEVEL, "higher", "higher_mean", "lower", "lower_mean", "mean_diff",
                             "test", "p", "p_holm", "p_wilcoxon", "significant"]].copy()
        table[LEVEL] *= 100
        for c in ("higher_mean", "lower_mean", "mean_diff"):
            table[c] *= scale
        seeds = comparisons.apply(lambda r: f"{r['n_pairs']} ({r['higher_seeds']}, {r['lower_seeds']})", axis=1)
        table.insert(table.columns.get_loc("mean_diff"), "paired seeds (of higher, lower)", seeds)
        table = table.rename(columns={LEVEL: "sparsity (%)", "mean_diff": f"paired difference{unit and ' (points)'}",
                                      "higher_mean": f"higher mean{unit}", "lower_mean": f"lower mean{unit}",
                                      "p": "p (of the test)"})
        lines += [f"### Pairwise comparisons of `{hue}` (paired by seed; Holm-corrected p_holm decides)", "",
                  "Means and difference are over the seeds both groups have (the pair's paired seeds), the "
                  "ones the test uses; the per-level table above has each group's mean over all its seeds. "
                  "test: `t` (paired t-test) or `sign-flip` (exact sign-flip test, where every seed moved by "
                  "the same amount and the t-test has no variance to work with).", "",
                  markdown_table(table, formats=_formats(table)), ""]
    rob = robust[[*shown, "dense_mean", "auc_norm", "max_level", "critical_sparsity", "critical_seed_min",
                  "critical_seed_max", "n_seeds"]].copy()
    for c in ("dense_mean", "auc_norm"):
        rob[c] *= scale
    for c in ("max_level", "critical_sparsity", "critical_seed_min", "critical_seed_max"):
        rob[c] *= 100
    what = {"test_acc": "test accuracy", "val_acc": "validation accuracy"}.get(metric, metric)
    rob = rob.rename(columns={"dense_mean": f"dense {what}{unit}",
                              "auc_norm": f"average {what} up to the highest sparsity{unit}",
                              "max_level": "highest sparsity (%)", "critical_sparsity": "critical sparsity (%)",
                              "critical_seed_min": "critical sparsity, lowest seed (%)",
                              "critical_seed_max": "critical sparsity, highest seed (%)"})
    lines += [f"### Robustness (critical sparsity: highest level whose mean {metric} is within "
              f"{tolerance * scale:g} {'point(s)' if unit else ''} of the dense mean)", "",
              f"*average {what} up to the highest sparsity*: the area under the mean curve of {what} against "
              "sparsity, divided by its width (from the lowest level, 0% where the dense level is in, to the "
              "highest sparsity): the curve's height averaged over that range of sparsity. Comparable between "
              "rows with the same levels.", "",
              markdown_table(rob, formats=_formats(rob)), ""]
    return lines


def _control_table(controls: pd.DataFrame, context: Sequence[str], metric: str) -> list[str]:
    """Every (context, level, control) against `main`: the method's and the control's means over their paired
    seeds, the gap (method - control), the test and its Holm-corrected p."""
    unit = " (%)" if metric.endswith("acc") else ""
    scale = 100 if unit else 1
    rows = []
    for _, r in controls.iterrows():
        main_high = r["higher"] == MAIN_BRANCH
        rows.append({**{c: r[c] for c in context}, "sparsity (%)": r[LEVEL] * 100,
                     "control": r["lower"] if main_high else r["higher"],
                     f"method{unit}": (r["higher_mean"] if main_high else r["lower_mean"]) * scale,
                     f"control{unit}": (r["lower_mean"] if main_high else r["higher_mean"]) * scale,
                     f"method - control{unit and ' (points)'}": (1 if main_high else -1) * r["mean_diff"] * scale,
                     "paired seeds": r["n_pairs"], "test": r["test"], "p (of the test)": r["p"],
                     "p_holm": r["p_holm"], "significant": r["significant"]})
    table = pd.DataFrame(rows)
    return ["### Controls against their method (`main`; paired by seed; Holm-corrected p_holm decides)", "",
            "Each control arm (a level's `branch`) against its method's own level at the same sparsity: positive "
            "gaps mean the method did better. The tests are in the same Holm family as the pairwise comparisons.",
            "", markdown_table(table, formats=_formats(table)), ""]


def _figure_section(figures: dict[str, str], notes: Sequence[str] = ()) -> list[str]:
    lines = ["## Figures", "", *[line for note in notes for line in (note, "")]]
    if "flops" in figures:  # the two trade-offs side by side
        lines += ['<img src="figures/tradeoff.png" width="49%"> <img src="figures/flops.png" width="49%">', ""]
    for name, caption in figures.items():
        if name not in ("tradeoff", "flops") or "flops" not in figures:
            lines += [f"![{caption}](figures/{name}.png)", ""]
    return lines


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

