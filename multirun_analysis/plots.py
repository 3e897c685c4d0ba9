"""Figures: accuracy against sparsity (mean and CI band over seeds), training curves, per-layer sparsity.

Each function takes a tidy table and names its hue (colour), style (line style and marker) and facets
(col, row: a column or a list of columns whose values are joined) as arguments, returns the Figure, and
never calls `plt.show()`; save it with `save(fig, stem)` (PNG and PDF).
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt  # headless: pyplot falls back to Agg by itself; a notebook keeps inline
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator, NullFormatter

from multirun_analysis.stats import LEVEL, condition_columns, summarize

Facet = str | Sequence[str] | None
# Colour-blind-safe (Okabe-Ito) then tab10; line styles and markers add a second cue for print.
COLORS = [
    "#0072B2",
    "#D55E00",
    "#009E73",
    "#CC79A7",
    "#E69F00",
    "#56B4E9",
    "#000000",
    "#F0E442",
    *plt.get_cmap("tab10").colors,
]
DASHES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "P", "X"]
LABELS = {
    "test_acc": "test accuracy (%)",
    "val_acc": "validation accuracy (%)",
    "test_loss": "test loss",
    "val_loss": "validation loss",
    "train_loss": "training loss",
}


def _cols(spec: Facet) -> list[str]:
    return [] if spec is None else [spec] if isinstance(spec, str) else list(spec)


def _label(row: pd.Series | dict, cols: list[str]) -> str:
    return " / ".join(str(row[c]) for c in cols) if cols else ""


def _scale(metric: str, values: pd.Series) -> float:
    """Accuracies are stored as fractions and drawn as percent."""
    return 100.0 if metric.endswith("acc") and values.dropna().le(1.0).all() else 1.0


def _pooled(df: pd.DataFrame, used: list[str]) -> list[str]:
    return [c for c in condition_columns(df) if c not in used and df[c].nunique(dropna=False) > 1]


def _grid(n_rows: int, n_cols: int, width: float = 5.2, height: float = 4.0):
    fig, axes = plt.subplots(
        n_rows,
        n_cols,
        figsize=(width * n_cols, height * n_rows),
        squeeze=False,
        sharey=True,
        constrained_layout=True,
    )
    return fig, axes


def _percent_axis(ax: plt.Axes, remaining: np.ndarray) -> None:
    """Log x axis of % weights remaining, dense (100%) at the left as in the Lottery Ticket papers."""
    ax.set_xscale("log")
    lo = max(float(np.nanmin(remaining)), 1e-3)
    ax.set_xlim(105, lo / 1.25)
    dense_ticks = lo >= 10  # less than a decade: room for more ticks
    candidates = (
        (100, 80, 60, 50, 40, 30, 20, 15, 10)
        if dense_ticks
        else (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)
    )
    ticks = [t for t in candidates if t >= lo / 1.3]
    ax.xaxis.set_major_locator(plt.FixedLocator(ticks))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(LogLocator(subs="auto"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def plot_tradeoff(
    df: pd.DataFrame,
    hue: str = "init",
    style: str | None = "pruner",
    col: Facet = ("dataset", "model"),
    row: Facet = None,
    metric: str = "test_acc",
    x: str = "remaining",
    confidence: float = 0.95,
    title: str | None = None,
) -> plt.Figure:
    """Mean `metric` against sparsity, one line per `hue` (and `style`) value, a CI band over seeds.

    x: "remaining" (% of weights remaining, log scale, the Lottery Ticket convention) or "sparsity"
    (linear, %). The dense level (target 0) is a filled star on each line and a dotted horizontal line in
    its colour across the panel. Columns of the condition that are neither hue, style nor a facet but take
    several values are pooled, with a warning.
    """
    if x not in ("remaining", "sparsity"):
        raise ValueError(f"x={x!r}: use 'remaining' (log % of weights remaining) or 'sparsity' (linear %)")
    cols, rows, styles = _cols(col), _cols(row), _cols(style)
    keys = list(dict.fromkeys([hue, *styles, *cols, *rows]))
    pooled = _pooled(df, keys)
    if pooled:
        warnings.warn(
            f"plot_tradeoff pools over {pooled}, which vary in the table: pass them as hue, style, "
            f"col or row, or filter the table",
            stacklevel=2,
        )
    summary = summarize(df, metric, keys, confidence)
    scale = _scale(metric, df[metric])
    summary[["mean", "ci_low", "ci_high"]] *= scale
    if metric.endswith("acc"):  # an interval of few seeds can overshoot what an accuracy can be
        summary[["ci_low", "ci_high"]] = summary[["ci_low", "ci_high"]].clip(0, 100 if scale == 100 else 1)
    summary["x"] = (1 - summary[LEVEL]) * 100 if x == "remaining" else summary[LEVEL] * 100
    col_vals = sorted(summary.apply(_label, axis=1, cols=cols).unique()) if cols else [""]
    row_vals = sorted(summary.apply(_label, axis=1, cols=rows).unique()) if rows else [""]
    hue_vals = sorted(summary[hue].astype(str).unique())
    style_vals = sorted(summary.apply(_label, axis=1, cols=styles).unique()) if styles else [""]
    color = dict(zip(hue_vals, itertools.cycle(COLORS)))
    dash = {v: (DASHES[i % len(DASHES)], MARKERS[i % len(MARKERS)]) for i, v in enumerate(style_vals)}
    fig, axes = _grid(len(row_vals), len(col_vals), width=7.0 if len(col_vals) == 1 else 5.5, height=4.8)
    summary["_col"] = summary.apply(_label, axis=1, cols=cols) if cols else ""
    summary["_row"] = summary.apply(_label, axis=1, cols=rows) if rows else ""
    summary["_style"] = summary.apply(_label, axis=1, cols=styles) if styles else ""
    for (r, rv), (c, cv) in itertools.product(enumerate(row_vals), enumerate(col_vals)):
        ax = axes[r, c]
        panel = summary[(summary["_row"] == rv) & (summary["_col"] == cv)]
        n_lines = panel.groupby([panel[hue].astype(str), "_style"]).ngroups
        band_alpha = max(0.05, 0.2 / max(1.0, n_lines / 2) ** 0.5)  # many overlapping bands stay see-through
        for (h, s), line in panel.groupby([panel[hue].astype(str), "_style"], sort=True):
            line = line.sort_values(LEVEL)
            ls, marker = dash[s]
            label = " · ".join(v for v in (h, s if len(style_vals) > 1 else "") if v)
            ax.plot(line["x"], line["mean"], ls, marker=marker, color=color[h], lw=2, ms=5, label=label)
            ax.fill_between(
                line["x"], line["ci_low"], line["ci_high"], color=color[h], alpha=band_alpha, lw=0
            )
            dense = line[line[LEVEL] == 0]
            if not dense.empty:
                ax.axhline(dense["mean"].iloc[0], color=color[h], ls=":", lw=1.2, alpha=0.8)
                ax.plot(dense["x"], dense["mean"], "*", color=color[h], ms=13, mec="black", mew=0.6, zorder=5)
        if x == "remaining" and not panel.empty:
            _percent_axis(ax, panel["x"].to_numpy())
        ax.grid(True, which="major", alpha=0.3)
        ax.set_title(_wrap(" — ".join(v for v in (rv, cv) if v)), fontsize=11)
        if r == len(row_vals) - 1:
            ax.set_xlabel("weights remaining (%, log scale)" if x == "remaining" else "sparsity (%)")
        if c == 0:
            ax.set_ylabel(LABELS.get(metric, metric))
    dense_handle = plt.Line2D([], [], ls=":", marker="*", color="gray", ms=11, mec="black", mew=0.6)
    _legend(
        fig,
        axes,
        " · ".join([hue, *([style] if styles and len(style_vals) > 1 else [])]),
        extra=[(dense_handle, "dense baseline")],
    )
    n = summary.loc[summary[LEVEL] > 0, "n_seeds"]
    fig.suptitle(
        title
        or f"{LABELS.get(metric, metric)} vs sparsity\nmean over seeds (n={_nrange(n)}), "
        f"band = {confidence:.0%} t-interval",
        fontsize=12,
    )
    return fig


def _nrange(n: pd.Series) -> str:
    if n.empty:
        return "0"
    return str(int(n.min())) if n.min() == n.max() else f"{int(n.min())}–{int(n.max())}"


def plot_training(
    curves: pd.DataFrame,
    hue: str = "init",
    style: str | None = "pruner",
    col: Facet = "phase",
    row: Facet = "run_target_sparsity",
    metric: str = "val_acc",
    confidence: float = 0.95,
) -> plt.Figure:
    """Per-epoch `metric` of `load_curves(runs)`: mean and CI band over seeds, one line per hue (and style).

    Default facets: one column per training phase (dense, finetune, rounds...), one row per run target
    sparsity, so each row is the path of the runs that ended at that level.
    """
    cols, rows, styles = _cols(col), _cols(row), _cols(style)
    keys = list(dict.fromkeys([hue, *styles, *cols, *rows]))
    pooled = [c for c in _pooled(curves, keys) if c != "run_target_sparsity"]
    if pooled:
        warnings.warn(
            f"plot_training pools over {pooled}, which vary in the table: pass them as hue, style, "
            f"col or row, or filter the table",
            stacklevel=2,
        )
    data = curves.dropna(subset=[metric]).copy()
    data[LEVEL] = data["epoch"]  # summarize's x: here the epoch of the phase
    summary = summarize(data, metric, keys, confidence)
    scale = _scale(metric, data[metric])
    summary[["mean", "ci_low", "ci_high"]] *= scale
    if metric.endswith("acc"):
        summary[["ci_low", "ci_high"]] = summary[["ci_low", "ci_high"]].clip(0, 100 if scale == 100 else 1)
    for name, spec in (("_col", cols), ("_row", rows), ("_style", styles)):
        summary[name] = summary.apply(_label, axis=1, cols=spec) if spec else ""
    col_vals = list(dict.fromkeys(summary["_col"]))
    if cols == ["phase"]:  # phases in the order the runs went through them
        col_vals = [p for p in dict.fromkeys(curves["phase"]) if p in col_vals]
    row_vals = sorted(summary["_row"].unique())
    style_vals = sorted(summary["_style"].unique())
    color = dict(zip(sorted(summary[hue].astype(str).unique()), itertools.cycle(COLORS)))
    dash = {v: DASHES[i % len(DASHES)] for i, v in enumerate(style_vals)}
    # each row shows only the columns it has (an IMP run has more phases than a one-shot run)
    row_cols = {
        rv: [cv for cv in col_vals if ((summary["_row"] == rv) & (summary["_col"] == cv)).any()]
        for rv in row_vals
    }
    fig, axes = _grid(len(row_vals), max(map(len, row_cols.values())), width=4.2, height=2.8)
    for ax in axes.flat:
        ax.set_visible(False)
    panels = [(r, c, rv, cv) for r, rv in enumerate(row_vals) for c, cv in enumerate(row_cols[rv])]
    for r, c, rv, cv in panels:
        ax = axes[r, c]
        ax.set_visible(True)
        panel = summary[(summary["_row"] == rv) & (summary["_col"] == cv)]
        for (h, s), line in panel.groupby([panel[hue].astype(str), "_style"], sort=True):
            line = line.sort_values(LEVEL)
            label = " · ".join(v for v in (h, s if len(style_vals) > 1 else "") if v)
            ax.plot(line[LEVEL], line["mean"], dash[s], marker="o", color=color[h], lw=1.8, ms=3, label=label)
            ax.fill_between(line[LEVEL], line["ci_low"], line["ci_high"], color=color[h], alpha=0.12, lw=0)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(True, alpha=0.3)
        # the row's label once, on its first panel; every panel names its column (the phase)
        head = _wrap(f"{' / '.join(rows)}: {rv}", 45) + "\n" if rows and c == 0 else ""
        ax.set_title(head + (f"{'/'.join(cols)}: {cv}" if cols else ""), fontsize=9, loc="left")
        ax.set_xlabel("epoch of the phase")
        if c == 0:
            ax.set_ylabel(LABELS.get(metric, metric))
    _legend(fig, axes, " · ".join([hue, *([style] if styles and len(style_vals) > 1 else [])]))
    fig.suptitle(
        f"training curves: {LABELS.get(metric, metric)}, mean over seeds, band = {confidence:.0%} t-interval",
        fontsize=11,
    )
    return fig


def _wrap(text: str, width: int = 60) -> str:
    """Long facet titles (several swept keys) broken at their commas and separators."""
    lines, line = [], ""
    for part in text.replace(" — ", " —\x00").replace(",", ",\x00").split("\x00"):
        if line and len(line) + len(part) > width:
            lines.append(line.rstrip())
            line = ""
        line += part
    return "\n".join([*lines, line.rstrip()])


def _legend(fig: plt.Figure, axes: np.ndarray, title: str, extra: list | None = None, order=None) -> None:
    """One legend for all panels, below them (the union of every panel's lines, in `order` if given)."""
    handles, labels = [], []
    for ax in axes.flat:
        for h, label in zip(*ax.get_legend_handles_labels()):
            if label not in labels:
                handles.append(h)
                labels.append(label)
    if order is not None:
        rank = {label: i for i, label in enumerate(order)}
        pairs = sorted(zip(handles, labels), key=lambda hl: rank.get(hl[1], len(rank)))
        handles, labels = [h for h, _ in pairs], [label for _, label in pairs]
    for h, label in extra or []:
        handles.append(h)
        labels.append(label)
    fig.legend(
        handles,
        labels,
        title=title,
        loc="outside lower center",
        frameon=False,
        ncol=min(len(labels), max(2, 3 * axes.shape[1])),
    )


def plot_layers(
    layers: pd.DataFrame, hue: str = "target_level", col: Facet = ("model", "pruner"), row: Facet = None
) -> plt.Figure:
    """Measured sparsity of each prunable layer (x, in model order) per level, mean over runs.

    `layers` is `load_sweep(...).layers` merged with the runs' columns; dense levels are left out. Global
    pruning shows how its single threshold spreads the zeros; layer-wise pruning gives flat lines.
    """
    data = layers[layers["target_level"] > 0]
    cols, rows = _cols(col), _cols(row)
    data = data.assign(
        _col=data.apply(_label, axis=1, cols=cols) if cols else "",
        _row=data.apply(_label, axis=1, cols=rows) if rows else "",
    )
    col_vals, row_vals = sorted(data["_col"].unique()) or [""], sorted(data["_row"].unique()) or [""]
    hue_vals = sorted(data[hue].unique())
    color = dict(zip(hue_vals, itertools.cycle(COLORS)))
    fig, axes = _grid(
        len(row_vals), len(col_vals), width=max(4.5, 0.9 * data["layer"].nunique() + 2), height=3.6
    )
    for (r, rv), (c, cv) in itertools.product(enumerate(row_vals), enumerate(col_vals)):
        ax = axes[r, c]
        panel = data[(data["_row"] == rv) & (data["_col"] == cv)]
        order = panel.groupby("layer")["layer_index"].min().sort_values().index.tolist()
        for h in hue_vals:
            part = panel[panel[hue] == h]
            if part.empty:
                continue
            mean = part.groupby("layer")["sparsity"].agg(["mean", "min", "max"]).reindex(order) * 100
            xs = np.arange(len(order))
            ax.plot(
                xs,
                mean["mean"],
                "-o",
                color=color[h],
                lw=1.8,
                label=f"{h * 100:.3g}%" if hue == "target_level" else str(h),
            )
            ax.fill_between(xs, mean["min"], mean["max"], color=color[h], alpha=0.15, lw=0)
            if hue == "target_level":
                ax.axhline(h * 100, color=color[h], ls=":", lw=1)
        ax.set_xticks(np.arange(len(order)), [_short(n) for n in order], rotation=30, ha="right", fontsize=8)
        ax.set_ylim(-2, 102)
        ax.grid(True, alpha=0.3)
        ax.set_title(_wrap(" — ".join(v for v in (rv, cv) if v), 50), fontsize=10)
        if c == 0:
            ax.set_ylabel("layer sparsity (%)")
    _legend(
        fig,
        axes,
        "target sparsity" if hue == "target_level" else hue,
        order=[f"{h * 100:.3g}%" if hue == "target_level" else str(h) for h in hue_vals],
    )
    fig.suptitle("per-layer sparsity (mean; band = min–max over runs; dotted = target)", fontsize=11)
    return fig


def _short(name: str) -> str:
    return name[: -len(".weight")] if name.endswith(".weight") else name


def save(fig: plt.Figure, stem: str | Path, dpi: int = 150) -> list[Path]:
    """Write `stem`.png and `stem`.pdf; close the figure. Returns the two paths."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return paths
