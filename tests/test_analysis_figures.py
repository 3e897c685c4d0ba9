"""multirun_analysis figures checked from their artists' data against the tables they draw (no runs needed):
dense baselines grouped as the lines are, bands inside the metric's range, one-epoch phases, per-layer
sparsity as categories with min–max bars, and the FLOPs figure only where it says something new."""

from __future__ import annotations

import io
import math

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection
from scipy import stats

from multirun_analysis import Sweep, plot_layers, plot_ticket, plot_tradeoff, plot_training, write_report


def _t_interval(values) -> tuple[float, float]:
    v = np.asarray(values, float)
    half = stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v))
    return v.mean() - half, v.mean() + half


def test_dense_stars_are_grouped_as_the_lines_are():
    """Two inits x two training budgets (the style): four dense baselines, never two budgets pooled."""
    rows = []
    for init, shift in (("A", 0.0), ("B", 0.02)):
        for epochs, dense in ((5, 0.80), (20, 0.90)):
            for seed in range(3):
                for level, acc in ((0.0, dense), (0.5, dense - 0.1)):
                    rows.append({"init": init, "train.epochs": epochs, "seed": seed, "target_level": level,
                                 "test_acc": acc + shift + 0.01 * seed})
    df = pd.DataFrame(rows)
    g = plot_tradeoff(df, hue="init", style="train.epochs", x="sparsity")
    ax = g.axes.flat[0]
    stars = [line for line in ax.get_lines() if line.get_gid() == "dense"]
    expected = df[df.target_level == 0].groupby(["init", "train.epochs"])["test_acc"].mean() * 100
    assert sorted(s.get_ydata()[0] for s in stars) == pytest.approx(sorted(expected))
    dotted = [line for line in ax.get_lines() if line.get_gid() == "dense level"]
    assert len(dotted) == 4


def test_ticket_bands_stay_inside_what_the_values_can_be():
    """Three seeds near 100% with one far below: the t interval reaches past 100; the band stops there,
    and the early-stopping band never goes below epoch 1 (also once the figure is drawn)."""
    rows = []
    for seed, (acc, epoch) in enumerate(((0.99, 1), (0.999, 1), (0.70, 9))):
        for level in (0.0, 0.5):
            rows.append({"init": "x", "pruner": "imp", "seed": seed, "target_level": level, "test_acc": acc,
                         "early_stop_epoch": epoch})
    df = pd.DataFrame(rows)
    assert _t_interval(df.test_acc[df.target_level == 0] * 100)[1] > 100  # the band would overshoot
    assert _t_interval([1, 1, 9])[0] < 1
    g = plot_ticket(df)
    g.figure.savefig(io.BytesIO(), format="png")
    panels = {ax.get_title(): ax for ax in g.axes.flat}
    bands = {t: [c for c in ax.collections if isinstance(c, PolyCollection)] for t, ax in panels.items()}
    acc = np.concatenate([p.vertices[:, 1] for c in bands["test accuracy (%)"] for p in c.get_paths()])
    epochs = np.concatenate([p.vertices[:, 1] for c in bands["early-stopping epoch"] for p in c.get_paths()])
    assert acc.max() == pytest.approx(100) and acc.min() == pytest.approx(_t_interval(df.test_acc[:2 * 3:2] * 100)[0])
    assert epochs.min() == pytest.approx(1) and epochs.max() == pytest.approx(_t_interval([1, 1, 9])[1])


def test_a_phase_of_one_epoch_draws_a_point_and_its_interval():
    rows = [{"init": init, "seed": seed, "phase": "finetune", "epoch": 1, "run_target_sparsity": 0.5,
             "val_acc": 0.70 + 0.02 * seed + 0.05 * (init == "b")} for seed in range(3) for init in ("a", "b")]
    rows += [{"init": "a", "seed": seed, "phase": "dense", "epoch": e, "run_target_sparsity": 0.5,
              "val_acc": 0.5 + 0.1 * e} for seed in range(3) for e in (1, 2, 3)]
    curves = pd.DataFrame(rows)
    g = plot_training(curves)
    ax = {a.get_title(): a for a in g.axes.flat}["finetune · run target 50%"]
    points = [line for line in ax.get_lines() if len(line.get_xdata())]
    assert len(points) == 2 and all(line.get_marker() == "o" for line in points)
    one = curves[curves.phase == "finetune"]
    means = sorted(one.groupby("init")["val_acc"].mean() * 100)
    assert sorted(line.get_ydata()[0] for line in points) == pytest.approx(means)
    lo, hi = ax.get_xlim()
    assert lo < 1 < hi and hi - lo >= 1 and list(ax.get_xticks()) == [1]  # not 0.945…1.05
    bars = [c for c in ax.collections if c.get_gid() == "interval"]
    segments = sorted(tuple(seg[:, 1]) for c in bars for seg in c.get_segments())
    expected = sorted(_t_interval(v * 100) for _, v in one.groupby("init")["val_acc"])
    assert np.allclose(segments, expected)
    dense = {a.get_title(): a for a in g.axes.flat}["dense"]
    assert dense.get_lines()[0].get_marker() in ("None", None, "")  # many epochs: a plain line


def test_layer_sparsity_is_points_with_min_max_bars_and_aligned_labels():
    rows = []
    for run in range(4):
        spread = (("net.1.weight", 0.40 + 0.05 * run), ("net.3.weight", 0.70 - 0.1 * run))
        for j, (layer, sparsity) in enumerate(spread):
            rows.append({"run_dir": f"r{run}", "level": 1, "layer_index": j, "layer": layer, "numel": 100,
                         "nonzero": 50, "sparsity": sparsity, "pruner": "magnitude", "target_level": 0.5})
    layers = pd.DataFrame(rows)
    g = plot_layers(layers, hue=None)
    ax = g.axes.flat[0]
    means = [line for line in ax.get_lines() if line.get_marker() not in ("None", None, "") and len(line.get_xdata())]
    assert means and all(line.get_linestyle() == "None" for line in means)  # layers are categories: no lines
    bars = [line for line in ax.get_lines() if line.get_marker() in ("None", None, "") and len(line.get_xdata())]
    spans = sorted((np.nanmin(b.get_ydata()), np.nanmax(b.get_ydata())) for b in bars)
    by_layer = layers.groupby("layer")["sparsity"].agg(["min", "max"]) * 100
    assert np.allclose(spans, sorted(zip(by_layer["min"], by_layer["max"])))
    labels = ax.get_xticklabels()
    assert [t.get_text() for t in labels] == ["net.1.weight", "net.3.weight"]
    assert all(t.get_ha() == "right" and t.get_rotation_mode() == "anchor" for t in labels)
    assert list(ax.get_xticks()) == pytest.approx(sorted({x for line in means for x in line.get_xdata()}))


def _sweep_with_flops(proportional: bool) -> Sweep:
    rows = []
    for init in ("A", "B"):
        for seed in range(2):
            for level in (0.0, 0.5):
                nonzero = int(100 * (1 - level))
                flops = 2 * nonzero if proportional else 2 * nonzero + 50  # + an unpruned layer's FLOPs
                rows.append({"dataset": "d", "model": "m", "init": init, "pruner": "magnitude", "seed": seed,
                             "run_dir": f"run-{init}-{seed}", "target_level": level, "sparsity": level,
                             "test_acc": 0.9 - level / 10 + 0.01 * seed, "prunable_total": 100,
                             "prunable_nonzero": nonzero, "flops_dense": 250 if not proportional else 200,
                             "flops_nonzero": flops})
    return Sweep(pd.DataFrame(rows), pd.DataFrame(columns=["target_level"]),
                 pd.DataFrame(columns=["sweep", "run", "run_dir", "status", "reason"]))


def test_flops_figure_only_where_flops_do_not_follow_the_weights(tmp_path):
    report = write_report(_sweep_with_flops(True), tmp_path / "mlp", hue="init").read_text()
    assert not (tmp_path / "mlp" / "figures" / "flops.png").exists() and "figures/flops.png" not in report
    assert "The FLOPs figure is left out" in report.split("## Figures")[1]
    report = write_report(_sweep_with_flops(False), tmp_path / "conv", hue="init").read_text()
    assert (tmp_path / "conv" / "figures" / "flops.png").exists() and "figures/flops.png" in report
    assert "left out" not in report


def test_a_phase_of_one_epoch_with_one_seed_draws_its_point_without_an_interval():
    # One seed: no t-interval, so seaborn draws no band (the first-hour retry crashed here on a debug sweep).
    rows = [{"init": "a", "seed": 0, "phase": "finetune", "epoch": 1, "run_target_sparsity": 0.5, "val_acc": 0.7},
            {"init": "a", "seed": 0, "phase": "dense", "epoch": 1, "run_target_sparsity": 0.5, "val_acc": 0.6}]
    g = plot_training(pd.DataFrame(rows))
    for ax in g.axes.flat:
        points = [line for line in ax.get_lines() if len(line.get_xdata())]
        assert [line.get_marker() for line in points] == ["o"]
        assert not [c for c in ax.collections if c.get_gid() == "interval"]
