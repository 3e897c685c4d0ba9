"""multirun_analysis on real penguin sweeps (tiny budgets, made once for this module): what varies drives the
comparison and the figures, curves follow the configs (and prune_lab.bookkeeping), damaged runs never crash
the analysis, and the report flags curves whose runs differ in code, torch or budget.

Sweeps: a pruner study (magnitude, random, unit; 3 seeds) and two sweeps that differ only in train.lr, not
swept on either command line.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_cli

from multirun_analysis import (
    early_stopping,
    layer_labels,
    load_curves,
    load_sweep,
    plot_tradeoff,
    plot_training,
    summarize,
)
from prune_lab import bookkeeping

BUDGET = ["train.epochs=6", "train.finetune_epochs=3"]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("report")
    env = {"PRUNE_LAB_CACHE_DIR": str(base / "cache"), "OMP_NUM_THREADS": "1"}
    made = {"base": base}
    for name, args in {
        "pruners": ["pruner=magnitude,random,unit", "seed=0,1,2", "sparsity=0.4"],  # 0.4: whole units reach it
        "lr_high": ["train.lr=0.01", "seed=0,1", "sparsity=0.5"],
        "lr_low": ["train.lr=0.002", "seed=0,1", "sparsity=0.5"],
    }.items():
        done = run_cli("-m", f"hydra.sweep.dir={base / name}", *args, *BUDGET, cwd=base, env=env)
        assert done.returncode == 0, done.stderr[-2000:]
        made[name] = base / name
    return made


def _report(*sweeps: Path, out: Path, extra: tuple[str, ...] = ()) -> tuple[str, str]:
    done = run_cli(*map(str, sweeps), "--out", str(out), *extra, module="multirun_analysis", cwd=out.parent)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "report.md").read_text()
    return report, report.split("## Answer")[1].split("## Checks")[0]


def _copy_runs(src: Path, dst: Path, keep) -> list[Path]:
    """Copies of the run folders of `src` whose name passes `keep`, under `dst`."""
    copies = []
    for run in sorted(p for p in src.iterdir() if (p / "results.json").exists() and keep(p.name)):
        shutil.copytree(run, dst / run.name)
        copies.append(dst / run.name)
    return copies


def _edit(run: Path, change) -> None:
    record = json.loads((run / "results.json").read_text())
    change(record)
    (run / "results.json").write_text(json.dumps(record))


def test_pruner_sweep_report_compares_the_pruners(sweeps):
    report, answer = _report(sweeps["pruners"], out=sweeps["base"] / "pruner_report")
    assert "Compared: `pruner` (magnitude, random, unit); fixed: dataset = penguins, model = penguin_mlp, " \
           "init = default." in answer
    sentence = next(line for line in answer.splitlines() if line.startswith("- At 40% sparsity, **"))
    assert all(f"**{p}**" in sentence for p in ("magnitude", "random", "unit")), sentence
    assert sentence.count("after Holm correction") == 2 and "points above" in sentence
    pairs = pd.read_csv(sweeps["base"] / "pruner_report" / "comparisons.csv")
    assert len(pairs) == 2 * 3 and set(pairs["hue"]) == {"pruner"}  # 3 pairs at the dense level and at 40%
    assert "Only one `init`" not in report


def test_pruner_figure_one_line_per_pruner_with_dense_marks(sweeps):
    g = plot_tradeoff(load_sweep(sweeps["pruners"]).runs)
    ax = g.axes.flat[0]
    assert g.legend.get_title().get_text() == "pruner" and ax.get_xscale() == "log"
    assert {t.get_text() for t in g.legend.get_texts()} == {"magnitude", "random", "unit"}
    lines = [line for line in ax.get_lines() if line.get_gid() is None and len(line.get_xdata())]  # not legend/dense
    assert len(lines) == 3 and len({line.get_color() for line in lines}) == 3
    assert all(sorted(line.get_xdata()) == pytest.approx([60, 100]) for line in lines)  # 40% sparsity
    stars = [line for line in ax.get_lines() if line.get_gid() == "dense"]
    assert len(stars) == 3 and len({s.get_markersize() for s in stars}) == 3  # equal dense accuracies stay visible
    assert all(s.get_xdata()[0] == 100 for s in stars)


def test_merged_sweeps_differing_only_in_lr_give_two_curves(sweeps):
    runs = load_sweep([sweeps["lr_high"], sweeps["lr_low"]]).runs
    assert set(runs["condition"]) == {"train.lr=0.01", "train.lr=0.002"}
    assert runs["condition_key"].nunique() == 2 and set(runs["train.lr"]) == {0.01, 0.002}
    s = summarize(runs)
    assert len(s) == 4 and (s["n_seeds"] == 2).all()  # 2 curves x (dense, 50%), never pooled into one
    g = plot_tradeoff(runs)
    assert g.legend.get_title().get_text() == "train.lr"
    assert {t.get_text() for t in g.legend.get_texts()} == {"0.01", "0.002"}
    _, answer = _report(sweeps["lr_high"], sweeps["lr_low"], out=sweeps["base"] / "lr_report")
    assert "Compared: `train.lr` (0.002, 0.01)" in answer
    assert "**train.lr=0.01**" in answer and "**train.lr=0.002**" in answer  # a bare number would say nothing


def test_conditions_follow_the_bookkeeping_list(sweeps, monkeypatch):
    monkeypatch.setattr(bookkeeping, "BOOKKEEPING", (*bookkeeping.BOOKKEEPING, "train.lr"))
    runs = load_sweep([sweeps["lr_high"], sweeps["lr_low"]]).runs
    assert runs["condition_key"].nunique() == 1 and set(runs["condition"]) == {""}
    assert "train.lr" not in runs.columns
    assert (summarize(runs)["n_seeds"] == 2).all()  # the same seeds of both sweeps, averaged as one curve


def test_damaged_runs_are_listed_never_fatal(sweeps, tmp_path):
    sweep = tmp_path / "damaged"
    runs = _copy_runs(sweeps["pruners"], sweep, lambda name: "magnitude" in name)
    with (runs[0] / "metrics.jsonl").open("a") as f:
        f.write('{"phase": "finetune", "epoch": 4, "val_acc": "oops"}\n{"phase": "fine\n')
        f.write('{"phase": "finetune", "epoch": true, "val_acc": 0.5}\n["a list"]\n')
    _edit(runs[1], lambda r: r["levels"][1].update(test_acc="oops"))
    report, _ = _report(sweep, out=tmp_path / "out")
    problems = pd.read_csv(tmp_path / "out" / "problems.csv").set_index("run")
    damaged = problems.loc[runs[0].name]
    assert damaged["status"] == "damaged metrics.jsonl" and damaged["reason"].startswith("4 line(s) skipped")
    assert "val_acc='oops'" in damaged["reason"] and "not JSON" in damaged["reason"]
    corrupt = problems.loc[runs[1].name]
    assert corrupt["status"] == "corrupt" and "test_acc='oops'" in corrupt["reason"]
    assert "damaged metrics.jsonl" in report and runs[1].name in report.split("## Runs with problems")[1]
    curves = load_curves(load_sweep(sweep).runs)
    assert pd.api.types.is_float_dtype(curves["val_acc"]) and curves["epoch"].max() == 6


@pytest.mark.parametrize("case", ["out_is_a_file", "hue_bogus", "hue_seed"])
def test_bad_options_get_one_line(sweeps, tmp_path, case):
    out = tmp_path / "report"
    extra = {"hue_bogus": ["--hue", "bogus"], "hue_seed": ["--hue", "seed"]}.get(case, [])
    if case == "out_is_a_file":
        out.write_text("not a folder")
    done = run_cli(str(sweeps["pruners"]), "--out", str(out), *extra, module="multirun_analysis", cwd=tmp_path)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "Traceback" not in done.stderr
    expected = {"hue_bogus": "--hue bogus is not a column", "hue_seed": "--hue seed is an axis of the statistics",
                "out_is_a_file": f"--out {out} is a file"}[case]
    assert expected in done.stderr and ("pruner" in done.stderr or case == "out_is_a_file")  # names the choices
    assert out.is_file() if case == "out_is_a_file" else not out.exists()  # nothing written


def test_control_arms_budgets_and_versions(sweeps, tmp_path):
    """IMP control arms recorded as levels with `branch` are curves of their own; the report flags a curve
    whose runs come from two git commits and says when pruned levels had more training than dense."""
    sweep = tmp_path / "arms"
    runs = _copy_runs(sweeps["pruners"], sweep, lambda name: "magnitude" in name)

    def add_arm(record):
        dense, pruned = record["levels"]
        dense["epochs_trained"], pruned["epochs_trained"] = 6, 9
        arm = {**pruned, "branch": "randomly_reinitialize", "test_acc": pruned["test_acc"] - 0.2}
        record["levels"].append(arm)

    for run in runs:
        _edit(run, add_arm)
    _edit(runs[0], lambda r: r["versions"].update(git_commit="0" * 40))
    loaded = load_sweep(sweep).runs
    assert set(loaded["branch"]) == {"main", "randomly_reinitialize"}
    s = summarize(loaded).set_index(["branch", "target_level"])
    assert s.loc[("randomly_reinitialize", 0.0), "n_seeds"] == 3  # the arm starts from the run's dense level
    assert s.loc[("main", 0.4), "mean"] - s.loc[("randomly_reinitialize", 0.4), "mean"] == pytest.approx(0.2)
    report, answer = _report(sweep, out=tmp_path / "out")
    assert "Compared: `branch` (main, randomly_reinitialize)" in answer and "20.0 points above" in answer
    checks = report.split("## Checks")[1].split("## Tables")[0]
    assert "different code version (git commit): " + "0" * 40 in checks
    assert "pruned levels trained up to 9 epochs in total, the dense baseline 6" in checks
    assert "### Training budget" in report


def test_layer_labels_name_module_type_and_shape(sweeps, tmp_path):
    layers = load_sweep(sweeps["pruners"]).layers
    assert layer_labels(layers) == {"net.1.weight": "net.1 (Linear 12→12)", "net.3.weight": "net.3 (Linear 12→3)"}
    copy = tmp_path / "no_model"
    runs = _copy_runs(sweeps["pruners"], copy, lambda name: "magnitude" in name)
    for run in runs:  # a record of schema 1 (no artifact checksums) whose model.pt is unreadable: counts, then
        _edit(run, lambda r: (r.pop("artifacts"), r.update(schema_version=1)))
        (run / "model.pt").write_bytes(b"not a checkpoint")
    assert layer_labels(load_sweep(copy).layers)["net.1.weight"] == "net.1 (144 weights)"


def test_training_panels_show_the_dense_phase_once(sweeps):
    runs = load_sweep(sweeps["lr_high"]).runs
    g = plot_training(load_curves(runs))
    titles = [ax.get_title() for ax in g.axes.flat]
    assert titles == ["dense", "finetune · run target 50%"]
    assert g.axes.flat[0].get_ylabel() == "validation accuracy (%)"


def test_early_stopping_is_the_epoch_of_best_validation_accuracy():
    curves = pd.DataFrame({
        "run_dir": ["r"] * 7,
        "phase": ["dense"] * 4 + ["finetune"] * 3,
        "epoch": [1, 2, 3, 4, 1, 2, 3],
        "val_acc": [0.5, 0.8, 0.8, 0.7, 0.6, 0.6, 0.9],
    })
    out = early_stopping(curves).set_index("level_name")["early_stop_epoch"]
    assert out.to_dict() == {"dense": 2, "pruned": 3}  # a tie keeps the first epoch; finetune made "pruned"


def test_values_that_print_alike_still_make_two_curves(sweeps, tmp_path):
    """train.lr 0.01 in one run and "0.01" (text) in another print alike; they are still two conditions."""
    copy = tmp_path / "alike"
    runs = _copy_runs(sweeps["lr_high"], copy, lambda name: True)
    _edit(runs[0], lambda r: r["config"]["train"].update(lr="0.01"))
    loaded = load_sweep(copy).runs
    assert loaded["condition_key"].nunique() == 2 and loaded["condition"].nunique() == 2
    assert (summarize(loaded)["n_seeds"] == 1).all()  # never averaged together
    g = plot_tradeoff(loaded)
    assert len([line for line in g.axes.flat[0].get_lines() if line.get_gid() is None and len(line.get_xdata())]) == 2


def test_a_one_seed_sweep_says_no_test_could_be_run(sweeps, tmp_path):
    # seed 0 of each pruner: nothing to pair, so no "Holm's correction over all 0 tests" (first-hour retry)
    one = tmp_path / "one_seed"
    assert _copy_runs(sweeps["pruners"], one, lambda name: "seed=0" in name)
    report, _ = _report(one, out=tmp_path / "out")
    assert "No test could be run" in report and "over all 0 tests" not in report
