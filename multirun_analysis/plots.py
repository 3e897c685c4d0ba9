"""Figures on seaborn: accuracy against % of weights remaining (or FLOPs), the winning-ticket view, training
curves and per-layer sparsity.

Every function draws one seaborn figure-level plot and returns its `FacetGrid`, so seaborn's own tools
restyle it (`sns.set_theme`, `sns.move_legend(g, ...)`, `g.set_titles`, `g.figure`); `save(g, stem)`
writes PNG and PDF. Conventions kept everywhere:
- accuracy in % (stored as fractions, drawn times 100); sparsity and weights remaining in %;
- x = % of weights remaining on a log axis, dense (100%) at the left (the Lottery Ticket papers'
  convention), or linear sparsity;
- the line is the mean over seeds (runs of one seed averaged first), the band its 95% Student t
  interval over seeds, clipped to [0, 100] for accuracies;
- hue, style and facets default to the condition columns that vary (`default_roles`), and every varying
  column not given a role becomes a row facet: different conditions are never drawn as one line;
- colours follow one palette per figure family (`palette`): the same init has the same colour in every
  figure of a report.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path

import matplotlib.pyplot as plt  # headless: pyplot falls back to Agg by itself; a notebook keeps inline
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.collections import PolyCollection
from matplotlib.ticker import FixedLocator, FuncFormatter, MaxNLocator, NullFormatter, NullLocator
from scipy import stats

from multirun_analysis.stats import LEVEL, SEED, per_seed, varying

Facet = str | Sequence[str] | None
LABELS = {
    "test_acc": "test accuracy (%)",
    "val_acc": "validation accuracy (%)",
    "test_loss": "test loss",
    "val_loss": "validation loss",
    "train_loss": "training loss",
    "instability": "instability (test-error barrier, points)",
}
X_LABELS = {
    "remaining": "weights remaining (%, log scale)",
    "sparsity": "sparsity (%)",
    "flops": "FLOPs per sample remaining (% of dense, log scale)",
}
FACETS = ("dataset", "model")  # what a study holds fixed and a merged table may still vary: panels first


def default_roles(df: pd.DataFrame) -> dict[str, str | list[str] | None]:
    """hue, style, col and row from the condition columns that vary in `df`.

    dataset and model become columns of panels; of the rest, the first varying column is the hue (init in
    an init study, pruner in a pruner study, train.lr when only lr varies), the second the line style, and
    any further ones the rows. With one varying column it is both hue and style (colour and a second cue
    for print).
    """
    hue, style, cols, rows = resolve_roles(df, "auto", "auto", "auto", "auto")
    return {"hue": hue, "style": style, "col": cols or None, "row": rows or None}


def palette(df: pd.DataFrame, hue: str | None) -> dict[str, tuple] | None:
    """The colour of each value of `hue` (seaborn's colour-blind palette, values in sorted order)."""
    if hue is None:
        return None
    values = sorted(df[hue].map(str).unique())
    return dict(zip(values, sns.color_palette("colorblind", max(len(values), 1))))


def _cols(spec: Facet) -> list[str]:
    return [] if spec is None else [spec] if isinstance(spec, str) else list(spec)


def resolve_roles(df: pd.DataFrame, hue, style, col, row) -> tuple[str | None, str | None, list[str], list[str]]:
    """Roles given explicitly are kept; "auto" ones take the varying columns not given a role (dataset and
    model as panel columns, then hue, style, rows). Varying columns still without a role join the rows:
    different conditions are never drawn as one line."""
    keys = varying(df)
    given = [v for v in (hue, style) if v not in (None, "auto")]
    given += [c for spec in (col, row) if spec != "auto" for c in _cols(spec)]
    free = [k for k in keys if k not in given]
    cols = [k for k in free if k in FACETS] if col == "auto" else _cols(col)
    free = [k for k in free if k not in cols]
    hue = (free.pop(0) if free else None) if hue == "auto" else hue
    style = (free.pop(0) if free else hue) if style == "auto" else style
    rows = list(free) if row == "auto" else _cols(row)
    for name in [hue, style, *cols, *rows]:
        if name is not None and name not in df.columns:
            raise KeyError(f"{name!r} is not a column of the table; varying columns: {keys}")
    used = {hue, style, *cols, *rows}
    return hue, style, cols, rows + [k for k in keys if k not in used]


def _facet(data: pd.DataFrame, cols: list[str]) -> str | None:
    """One facet variable for several columns: their values joined ("penguins / penguin_mlp")."""
    if not cols:
        return None
    if len(cols) == 1:
        return cols[0]
    name = " / ".join(cols)
    data[name] = data[cols].map(str).agg(" / ".join, axis=1)
    return name


def t_errorbar(confidence: float = 0.95, clip: tuple[float, float] | None = (0, 100)):
    """seaborn `errorbar=`: the Student t interval of the mean of the values (seeds), clipped to `clip`."""

    def interval(values: pd.Series) -> tuple[float, float]:
        v = np.asarray(values, float)
        n = len(v)
        if n < 2:
            return math.nan, math.nan
        half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * v.std(ddof=1) / math.sqrt(n)
        lo, hi = v.mean() - half, v.mean() + half
        return (max(lo, clip[0]), min(hi, clip[1])) if clip else (lo, hi)

    return interval


def _scale(metric: str) -> float:
    return 100.0 if metric.endswith("acc") else 1.0


def _clip(metric: str) -> tuple[float, float] | None:
    return (0, 100) if metric.endswith("acc") else None  # what an accuracy in % can be


# What the winning-ticket panels' values can be: an accuracy in %, an epoch (metrics.jsonl counts from 1).
PANEL_RANGE = {"test accuracy (%)": (0.0, 100.0), "early-stopping epoch": (1.0, math.inf)}


def _clip_bands(ax: plt.Axes, lo: float, hi: float) -> None:
    """Clip the y of every band (the fill_between polygons seaborn draws) on `ax` to [lo, hi].

    A band's vertices are (x, low end) and (x, high end) pairs, so clipping them is clipping both ends
    of the interval at each x: what `t_errorbar(clip=...)` does where one figure has one quantity.
    """
    for band in ax.collections:
        if isinstance(band, PolyCollection):
            band.set_paths([np.column_stack([p.vertices[:, 0], np.clip(p.vertices[:, 1], lo, hi)])
                            for p in band.get_paths()])


def _percent_log_axis(ax: plt.Axes, smallest: float) -> None:
    """Log x axis in %, 100 at the left, ticks at round values down to the smallest point."""
    lo = max(float(smallest), 1e-3)
    ax.set_xscale("log")
    ax.set_xlim(110, lo / 1.3)
    ticks = (100, 80, 60, 50, 40, 30, 20, 15, 10) if lo >= 10 else (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1)
    ax.xaxis.set_major_locator(FixedLocator([t for t in ticks if t >= lo / 1.3]))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def _mark_dense(g: sns.FacetGrid, data: pd.DataFrame, x: str, y: str, groups: list[str], colors,
                hue: str | None = None) -> None:
    """A star and a dotted line at each group's dense mean, in the group's colour, on every panel.

    groups: the columns the lines are grouped by within a panel (hue first, then style), so that dense
    baselines of different conditions (two training budgets drawn as styles) are never averaged into one
    star. Stars of equal accuracy would hide each other, so they are concentric: the first group's is the
    largest and drawn lowest. Stars have gid "dense", the dotted lines "dense level" (tests and users find them).
    """
    for ax_key, sub in g.facet_data():
        ax = g.facet_axis(*ax_key[:2])
        dense = sub[sub[LEVEL] == 0]
        if dense.empty:
            continue
        means = dense.groupby(groups, dropna=False)[[x, y]].mean() if groups else dense[[x, y]].mean().to_frame().T
        sizes = np.linspace(17, 7, len(means)) if len(means) > 1 else [13]
        for size, (key, row) in zip(sizes, means.iterrows()):
            name = str(key[0] if isinstance(key, tuple) else key)
            color = colors.get(name, "black") if colors and groups and groups[0] == hue else "black"
            ax.axhline(row[y], color=color, ls=":", lw=1.1, alpha=0.8, zorder=1, gid="dense level")
            ax.plot([row[x]], [row[y]], "*", color=color, ms=size, mec="black", mew=0.6, zorder=10 + 20 - size,
                    gid="dense", linestyle="none")


def plot_tradeoff(
    df: pd.DataFrame,
    hue: str | None = "auto",
    style: str | None = "auto",
    col: Facet = "auto",
    row: Facet = "auto",
    metric: str = "test_acc",
    x: str = "remaining",
    confidence: float = 0.95,
    colors: dict | None = None,
    title: str | None = None,
) -> sns.FacetGrid:
    """Mean `metric` over seeds against sparsity, one line per hue (and style) value, a t band over seeds.

    x: "remaining" (% of weights remaining, log scale), "sparsity" (linear, %) or "flops" (forward FLOPs
    per sample of the nonzero weights, % of dense, log scale; needs the levels' flops_dense and
    flops_nonzero). "auto" roles come from `default_roles`. Returns the FacetGrid.
    """
    if x not in X_LABELS:
        raise ValueError(f"x={x!r}: use 'remaining' (log % of weights remaining), 'sparsity' (linear %) or 'flops'")
    hue, style, cols, rows = resolve_roles(df, hue, style, col, row)
    keys = list(dict.fromkeys(k for k in [hue, style, *cols, *rows] if k))
    data = per_seed(df, metric, keys)
    data[metric] *= _scale(metric)
    if x == "flops":
        if not {"flops_dense", "flops_nonzero"} <= set(df.columns):
            raise ValueError("x='flops' needs the levels' flops_dense and flops_nonzero (prune_lab >= payoff)")
        share = (df["flops_nonzero"] / df["flops_dense"] * 100).groupby([df[k] for k in [*keys, LEVEL]], dropna=False)
        data = data.merge(share.mean().rename("x").reset_index(), on=[*keys, LEVEL], how="left")
    else:
        data["x"] = (1 - data[LEVEL]) * 100 if x == "remaining" else data[LEVEL] * 100
    colors = colors or palette(data, hue)
    if hue:
        data[hue] = data[hue].map(str)
    col_var, row_var = _facet(data, cols), _facet(data, rows)
    g = sns.relplot(
        data=data, x="x", y=metric, hue=hue, style=style, col=col_var, row=row_var, kind="line",
        errorbar=t_errorbar(confidence, _clip(metric)), markers=True,
        palette=colors, hue_order=list(colors) if colors else None, height=4.2, aspect=1.25,
        err_kws={"alpha": 0.15, "lw": 0}, facet_kws={"margin_titles": bool(row_var)},
    )
    _mark_dense(g, data, "x", metric, list(dict.fromkeys(k for k in (hue, style) if k)), colors, hue)  # as the lines
    if x != "sparsity":
        for ax in g.axes.flat:
            _percent_log_axis(ax, data["x"].min())
    g.set_axis_labels(X_LABELS[x], LABELS.get(metric, metric))
    n = data[data[LEVEL] > 0].groupby([*keys, LEVEL], dropna=False)[SEED].nunique()
    g.figure.suptitle(
        title or f"{LABELS.get(metric, metric)} vs {X_LABELS[x].split(' (')[0]}: mean over seeds "
        f"(n = {_nrange(n)}); band = {confidence:.0%} t-interval; ★ and dotted line = dense",
        y=1.03,
    )
    return g


def _nrange(n: pd.Series) -> str:
    if n.empty:
        return "0"
    return str(int(n.min())) if n.min() == n.max() else f"{int(n.min())}–{int(n.max())}"


def plot_ticket(
    df: pd.DataFrame, hue: str | None = "auto", style: str | None = "auto", colors: dict | None = None,
    confidence: float = 0.95,
) -> sns.FacetGrid:
    """The Lottery Ticket paper's Figure 4 view of IMP runs: test accuracy and the early-stopping epoch
    (the epoch of the best validation accuracy in the phase that made the level) against % remaining.

    `df` needs an `early_stop_epoch` column (`multirun_analysis.early_stopping`).
    """
    hue, style, cols, rows = resolve_roles(df, hue, style, None, None)
    keys = list(dict.fromkeys(k for k in [hue, style, *rows] if k))
    acc = per_seed(df, "test_acc", keys).rename(columns={"test_acc": "value"}).assign(value=lambda d: d.value * 100)
    stop = per_seed(df, "early_stop_epoch", keys).rename(columns={"early_stop_epoch": "value"})
    data = pd.concat([acc.assign(panel="test accuracy (%)"), stop.assign(panel="early-stopping epoch")])
    data["x"] = (1 - data[LEVEL]) * 100
    colors = colors or palette(data, hue)
    if hue:
        data[hue] = data[hue].map(str)
    g = sns.relplot(
        data=data, x="x", y="value", hue=hue, style=style, col="panel", row=_facet(data, rows), kind="line",
        errorbar=t_errorbar(confidence, None), markers=True, palette=colors,
        hue_order=list(colors) if colors else None, height=3.8, aspect=1.2, err_kws={"alpha": 0.15, "lw": 0},
        facet_kws={"sharey": False},
    )
    for key, ax in g.axes_dict.items():  # one errorbar for two quantities: clip each panel's bands to its range
        _clip_bands(ax, *PANEL_RANGE[key[-1] if isinstance(key, tuple) else key])
    for ax in g.axes.flat:
        _percent_log_axis(ax, data["x"].min())
    g.set_titles("{col_name}")
    g.set_axis_labels(X_LABELS["remaining"], "")
    g.figure.suptitle("IMP: the winning-ticket view (Frankle & Carbin, Fig. 4): mean over seeds, "
                      f"band = {confidence:.0%} t-interval", y=1.04)
    return g


def plot_training(
    curves: pd.DataFrame, hue: str | None = "auto", style: str | None = "auto", metric: str = "val_acc",
    colors: dict | None = None, confidence: float = 0.95,
) -> sns.FacetGrid:
    """Per-epoch `metric` of `load_curves(runs)`, one panel per training phase, mean and t band over seeds.

    Panels: "dense" once (every run of a seed shares its dense phase), then each later phase by the run's
    target ("finetune · run target 80%", "round-2 · run target 80%").
    """
    hue, style, _, rows = resolve_roles(curves, hue, style, None, None)
    rows = [r for r in rows if r != "run_target_sparsity"]
    keys = list(dict.fromkeys(k for k in [hue, style, *rows] if k))
    data = curves.dropna(subset=[metric]).copy()
    target = data["run_target_sparsity"].map(lambda t: f"{t * 100:.4g}%" if isinstance(t, (int, float)) else "?")
    data["phase"] = data["phase"].where(data["phase"] == "dense", data["phase"] + " · run target " + target)
    order = list(dict.fromkeys(data.sort_values("run_target_sparsity", kind="stable")["phase"]))
    order = ["dense", *[p for p in order if p != "dense"]] if "dense" in order else order
    data = data.groupby([*keys, SEED, "phase", "epoch"], dropna=False)[metric].mean().reset_index()
    data[metric] *= _scale(metric)
    colors = colors or palette(data, hue)
    if hue:
        data[hue] = data[hue].map(str)
    row_var = _facet(data, rows)
    g = sns.relplot(
        data=data, x="epoch", y=metric, hue=hue, style=style, col="phase", col_order=order, row=row_var,
        col_wrap=None if row_var else min(4, len(order)), kind="line", palette=colors,
        hue_order=list(colors) if colors else None, errorbar=t_errorbar(confidence, _clip(metric)),
        height=2.8, aspect=1.3, err_kws={"alpha": 0.15, "lw": 0}, facet_kws={"sharex": False},
    )
    g.set_titles("{col_name}" if not row_var else "{row_name} | {col_name}")
    g.set_axis_labels("epoch of the phase", LABELS.get(metric, metric))
    for ax in g.axes.flat:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        _single_epoch(ax)
    g.figure.suptitle(f"training curves: {LABELS.get(metric, metric)}, mean over seeds, "
                      f"band = {confidence:.0%} t-interval", y=1.03)
    return g


def _single_epoch(ax: plt.Axes) -> None:
    """A panel whose phase has one epoch: a line of one point and a band of zero width draw nothing, so
    each line gets a marker, each band a vertical bar over the same interval (gid "interval"), and the
    x axis one epoch either side with a tick at the epoch only."""
    lines = [line for line in ax.get_lines() if len(line.get_xdata())]
    epochs = {float(x) for line in lines for x in line.get_xdata()}
    if len(epochs) != 1:
        return
    (epoch,) = epochs
    for line in lines:
        line.set_marker("o")
    for band in [c for c in ax.collections if isinstance(c, PolyCollection)]:
        paths = band.get_paths()  # none: one seed, no interval to draw
        y = np.concatenate([p.vertices[:, 1] for p in paths]) if paths else np.empty(0)
        if len(y):
            ax.vlines(epoch, y.min(), y.max(), colors=[band.get_facecolor()[0][:3]], lw=5, alpha=0.4, gid="interval")
    ax.set_xlim(epoch - 1, epoch + 1)
    ax.xaxis.set_major_locator(FixedLocator([epoch]))


def plot_layers(
    layers: pd.DataFrame, hue: str | None = "auto", colors: dict | None = None, names: dict | None = None,
) -> sns.FacetGrid:
    """Measured sparsity of each prunable layer (x, in model order), one panel per target level, per method.

    `layers` is `load_sweep(...).layers`; dense levels are left out. `names` maps a layer to its readable
    label (`layer_labels`). Points are the mean over runs, bars the min–max: global pruning shows how its
    single threshold spreads the zeros, layer-wise pruning gives flat lines at the target.
    """
    data = layers[layers[LEVEL] > 0].copy()
    hue, _, cols, rows = resolve_roles(data, hue, None, None, None)
    data["layer"] = data["layer"].map(lambda n: (names or {}).get(n, n))
    order = data.groupby("layer")["layer_index"].min().sort_values().index.tolist()
    data["sparsity"] *= 100
    data["target"] = data[LEVEL].map(lambda t: f"{t * 100:.4g}% target")
    targets = [f"{t * 100:.4g}% target" for t in sorted(data[LEVEL].unique())]
    colors = colors or palette(data, hue)
    if hue:
        data[hue] = data[hue].map(str)
    keys = [k for k in rows if k != hue and k != LEVEL and k != "run_target_sparsity"]
    row_var = _facet(data, keys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # seaborn on a single-category hue
        g = sns.catplot(
            data=data, x="layer", y="sparsity", hue=hue, col="target", col_order=targets, row=row_var, order=order,
            # pi 100 = from the smallest to the largest run; layers are categories: points, no lines between
            kind="point", errorbar=("pi", 100), capsize=0.15, err_kws={"linewidth": 1.5}, linestyle="none",
            dodge=0.3 if hue else False, palette=colors,
            hue_order=list(colors) if colors else None, height=3.4, aspect=max(1.0, 0.35 * len(order)),
            col_wrap=None if row_var else min(4, len(targets)),
        )
    for ax in g.axes.flat:
        ax.set_ylim(-3, 103)
        # rotated labels end at their tick (right-aligned, rotated about that end), under their points
        plt.setp(ax.get_xticklabels(), rotation=25, ha="right", rotation_mode="anchor")
    g.set_titles("{col_name}" if not row_var else "{row_name} | {col_name}")
    g.set_axis_labels("layer", "layer sparsity (%)")
    n = data.groupby([*(k for k in (hue, *keys) if k), LEVEL, "layer"], dropna=False)["run_dir"].nunique()
    g.figure.suptitle(f"per-layer sparsity: mean over runs (n = {_nrange(n)}), bars = min–max over runs", y=1.04)
    return g


def save(g: sns.FacetGrid | plt.Figure, stem: str | Path, dpi: int = 150) -> list[Path]:
    """Write `stem`.png and `stem`.pdf of a FacetGrid or Figure; close it. Returns the two paths."""
    fig = getattr(g, "figure", g)
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".pdf")]
    for path in paths:
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
    plt.close(fig)
    return paths
