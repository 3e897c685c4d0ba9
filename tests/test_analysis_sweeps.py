"""multirun_analysis on real sweeps made by prune_lab on penguins (tiny budgets), made once per session.

The sweep holds, besides complete runs: a job that stopped on a config error (sparsity=1.5: error.json),
a run killed mid-training (no results.json), and a run whose results.json was cut short (corrupt).
A second sweep with iterative pruning (one level per round, each measured near its own target) and a
third with perturbed levels test merging and alignment.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import ROOT, run_cli

from multirun_analysis import load_curves, load_runs, load_sweep, plot_tradeoff, summarize

BUDGET = ["train.epochs=2", "train.finetune_epochs=1"]
NOTEBOOK = ROOT / "notebooks" / "analysis.ipynb"


def _env(cwd: Path) -> dict[str, str]:
    """A dense-training cache of this session's own: every run here trains for real."""
    return {"PRUNE_LAB_CACHE_DIR": str(cwd / "cache"), "OMP_NUM_THREADS": "1"}


def _sweep(folder: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return run_cli("-m", f"hydra.sweep.dir={folder}", *args, *BUDGET, cwd=cwd, env=_env(cwd))


def _start_long_run(folder: Path, cwd: Path) -> subprocess.Popen:
    """A run with a budget it will not finish; returns once it has written its first epoch."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "prune_lab",
            f"hydra.run.dir={folder}",
            "train.epochs=100000",
            "train.eval_every=1",
        ],
        cwd=cwd,
        env={**os.environ, **_env(cwd)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 120
    while not (folder / "metrics.jsonl").exists():
        if proc.poll() is not None or time.time() > deadline:
            proc.kill()
            pytest.fail(f"the long run did not start writing metrics (exit {proc.returncode})")
        time.sleep(0.2)
    return proc


@pytest.fixture(scope="session")
def sweeps(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("analysis")
    main, other, shifted = base / "main", base / "imp", base / "shifted"
    done = _sweep(main, "init=xavier_normal,kaiming_uniform", "seed=0,1,2", "sparsity=0.5,0.9", cwd=base)
    assert done.returncode == 0, done.stderr[-2000:]
    bad = _sweep(main, "init=xavier_normal", "seed=0", "sparsity=1.5", cwd=base)
    assert bad.returncode == 2, bad.stderr[-2000:]
    done = _sweep(
        other,
        "pruner=imp",
        "pruner.rate=0.4",
        "init=xavier_normal,kaiming_uniform",
        "seed=0,1",
        "sparsity=0.8",
        cwd=base,
    )
    assert done.returncode == 0, done.stderr[-2000:]

    # live: analysed while it trains, then killed without warning (an interrupted run)
    live = main / "killed_mid_run"
    proc = _start_long_run(live, base)
    during = load_sweep(main)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    # a torn results.json: a complete run's file cut in the middle
    runs = sorted(p for p in main.iterdir() if (p / "results.json").exists())
    torn = main / "torn_results"
    shutil.copytree(runs[0], torn)
    text = (torn / "results.json").read_text()
    (torn / "results.json").write_text(text[: len(text) // 2])

    # measured levels that differ slightly from the target, and a field added by a future prune_lab
    shifted.mkdir()
    src = next(p for p in runs if "sparsity=0.9" in p.name and "seed=0" in p.name and "xavier" in p.name)
    shutil.copytree(src, shifted / "seed5")
    record = json.loads((shifted / "seed5" / "results.json").read_text())
    record["seed"] = 5
    record["overrides"] = [o if not o.startswith("seed=") else "seed=5" for o in record["overrides"]]
    for i, level in enumerate(record["levels"]):
        level["target_sparsity"] += 1e-9 * (i > 0)
        if i > 0:  # one weight more survives: measured just below the target, its counts agreeing (the contract)
            level["prunable_nonzero"] += 1
            level["sparsity"] = 1 - level["prunable_nonzero"] / level["prunable_total"]
        level["flops"] = 1000 - 10 * i
    (shifted / "seed5" / "results.json").write_text(json.dumps(record))
    return {
        "base": base,
        "main": main,
        "other": other,
        "shifted": shifted,
        "during": during,
        "complete": runs,
        "bad": main / f"init=xavier_normal,seed=0,sparsity=1.5,{','.join(BUDGET)}",
    }


def test_tidy_table_one_row_per_run_and_level(sweeps):
    runs = load_runs(sweeps["main"])
    assert runs["run_dir"].nunique() == 12 and len(runs) == 24
    for col in (
        "dataset",
        "model",
        "init",
        "pruner",
        "seed",
        "run_target_sparsity",
        "target_level",
        "sparsity",
        "test_acc",
        "val_acc",
        "params_nonzero",
        "before_finetune.test_acc",
        "train.epochs",
        "condition",
    ):
        assert col in runs.columns, col
    assert set(runs["init"]) == {"xavier_normal", "kaiming_uniform"}
    assert set(runs["target_level"]) == {0.0, 0.5, 0.9}
    assert (runs["train.epochs"] == 2).all()
    # each row agrees with the results.json it came from
    row = runs[(runs["target_level"] == 0.9)].iloc[0]
    level = json.loads(Path(row["run_dir"], "results.json").read_text())["levels"][row["level"]]
    assert row["test_acc"] == level["test_acc"] and row["sparsity"] == level["sparsity"]


def test_failed_killed_and_corrupt_runs_are_listed_with_reason(sweeps):
    sweep = load_sweep(sweeps["main"])
    problems = sweep.problems.set_index("run")
    assert len(problems) == 3, problems
    bad = problems.loc[sweeps["bad"].name]
    assert bad["status"] == "failed (config)" and "sparsity" in bad["reason"]
    assert problems.loc["killed_mid_run", "status"] == "incomplete"
    assert "still running or interrupted" in problems.loc["killed_mid_run", "reason"]
    assert problems.loc["torn_results", "status"] == "corrupt"
    assert "not valid JSON" in problems.loc["torn_results", "reason"]
    assert not sweep.runs["run_dir"].str.contains("torn_results|killed_mid_run|1.5").any()


def test_analysing_while_a_run_trains(sweeps):
    during = sweeps["during"]
    assert during.runs["run_dir"].nunique() == 12
    live = during.problems.set_index("run").loc["killed_mid_run"]
    assert live["status"] == "incomplete" and "0 min ago" in live["reason"]


def test_dense_level_counts_each_seed_once(sweeps):
    runs = load_runs(sweeps["main"])
    s = summarize(runs).set_index(["init", "target_level"])
    assert (s["n_seeds"] == 3).all()  # the dense level is in 2 runs per seed
    dense = [
        json.loads((p / "results.json").read_text()) for p in sweeps["complete"] if "sparsity=0.5" in p.name
    ]
    by_hand = pd.Series({(r["init"], r["seed"]): r["levels"][0]["test_acc"] for r in dense})
    assert s.loc[("xavier_normal", 0.0), "mean"] == pytest.approx(by_hand["xavier_normal"].mean())


def test_sweeps_merge_and_levels_align(sweeps):
    runs = load_runs([sweeps["main"], sweeps["other"], sweeps["shifted"]])
    assert set(runs["pruner"]) == {"magnitude", "imp"}
    assert runs["sweep"].nunique() == 3
    shifted = runs[runs["seed"] == 5]
    assert set(shifted["target_level"]) == {0.0, 0.9} and shifted["sparsity"].max() < 0.9  # aligned on target
    assert shifted["flops"].tolist() == [1000, 990]  # a field unknown today carried through as a column
    imp = runs[runs["pruner"] == "imp"]
    # 40% of what remains per round; the 0.15 of a round left after 78.4% joins the third, which goes to 80%
    assert set(imp["target_level"]) == {0.0, 0.4, 0.64, 0.8}
    off = (imp["sparsity"] - imp["target_level"]).abs()
    assert off.max() > 0 and off.max() < 0.01  # rounds measure their own sparsity, aligned on the target
    # pruner.rate is an imp setting: the pruner column already tells the curves apart, so no label is needed
    assert (imp["pruner.rate"] == 0.4).all() and (runs["condition"] == "").all()
    assert runs.groupby(["init", "pruner"])["condition_key"].nunique().max() == 1
    assert (runs["pruner"] == "magnitude").sum() == 26
    s = summarize(runs).set_index(["init", "pruner", "target_level"])
    assert s.loc[("xavier_normal", "magnitude", 0.9), "n_seeds"] == 4
    assert (s.xs("imp", level="pruner")["n_seeds"] == 2).all()


def test_training_curves_and_figure(sweeps):
    runs = load_runs(sweeps["main"])
    curves = load_curves(runs)
    assert set(curves["phase"]) == {"dense", "finetune"} and set(curves["init"]) == set(runs["init"])
    g = plot_tradeoff(runs)  # init is what varies: hue, legend and one line each, by default
    ax = g.axes.flat[0]
    assert ax.get_xscale() == "log" and ax.get_xlabel() == "weights remaining (%, log scale)"
    assert ax.get_xlim()[0] > ax.get_xlim()[1]  # 100% at the left
    assert g.legend.get_title().get_text() == "init"
    assert {t.get_text() for t in g.legend.get_texts()} == {"xavier_normal", "kaiming_uniform"}
    lines = [line for line in ax.get_lines() if len(line.get_xdata()) == 3]
    assert len(lines) == 2 and all(sorted(line.get_xdata()) == pytest.approx([10, 50, 100]) for line in lines)
    stars = [line for line in ax.get_lines() if line.get_gid() == "dense"]
    assert len(stars) == 2 and {s.get_color() for s in stars} == {line.get_color() for line in lines}
    bands = [c.get_paths()[0].vertices[:, 1] for c in ax.collections if c.get_paths()]
    assert bands and all(b.min() >= 0 and b.max() <= 100 for b in bands)


def test_cli_writes_tables_figures_and_report(sweeps):
    out = sweeps["base"] / "report"
    done = run_cli(
        str(sweeps["main"]),
        str(sweeps["other"]),
        "--out",
        str(out),
        module="multirun_analysis",
        cwd=sweeps["base"],
    )
    assert done.returncode == 0, done.stderr[-3000:]
    for name in (
        "runs.csv",
        "runs.parquet",
        "summary.csv",
        "robustness.csv",
        "comparisons.csv",
        "problems.csv",
        "report.md",
        "figures/tradeoff.png",
        "figures/tradeoff.pdf",
        "figures/training.png",
        "figures/layers.png",
        "figures/ticket.png",
    ):
        assert (out / name).stat().st_size > 0, name
    # penguin MLPs: every weight costs the same FLOPs, so a FLOPs figure would repeat the trade-off
    assert not (out / "figures/flops.png").exists()
    # 12 magnitude runs x 2 levels, 4 imp runs x 4
    assert len(pd.read_parquet(out / "runs.parquet")) == len(pd.read_csv(out / "runs.csv")) == 24 + 16
    summary = pd.read_csv(out / "summary.csv")
    assert {"mean", "std", "ci_low", "ci_high", "n_seeds"} <= set(summary.columns)
    report = (out / "report.md").read_text()
    answer = report.split("## Answer")[1].split("## Checks")[0]
    assert "Compared: `init` (kaiming_uniform, xavier_normal), within each `pruner`" in answer
    assert "- At 90% sparsity (pruner=magnitude), **" in answer and "- At 80% sparsity (pruner=imp), **" in answer
    # 2 inits: one pair per level; magnitude has 3 levels, imp 5: one family of 8 tests
    # 3 levels of magnitude, 4 of imp
    assert "after Holm correction" in answer and "Holm's correction over all 7 tests" in answer
    order = [report.index(h) for h in ("## Answer", "## Checks", "## Tables", "## Figures", "## Runs with problems")]
    assert order == sorted(order)
    assert "critical sparsity" in report and "test_acc 95% CI high (%)" in report
    for name in ("torn_results", "killed_mid_run", sweeps["bad"].name):
        assert name in report
    assert "3 not complete" in done.stdout
    assert "The FLOPs figure is left out" in report.split("## Figures")[1]


def test_cli_missing_folder_is_one_clear_error(sweeps):
    done = run_cli(
        str(sweeps["base"] / "nope"),
        "--out",
        str(sweeps["base"] / "r2"),
        module="multirun_analysis",
        cwd=sweeps["base"],
    )
    assert done.returncode == 2 and "is not a folder" in done.stderr and "Traceback" not in done.stderr


def test_notebook_runs_on_the_sweep(sweeps):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    env_before = os.environ.get("PRUNE_LAB_SWEEP")
    os.environ["PRUNE_LAB_SWEEP"] = str(sweeps["main"])  # the kernel inherits this process's environment
    try:
        client = nbclient.NotebookClient(
            nb, kernel_name="python3", timeout=300, resources={"metadata": {"path": str(NOTEBOOK.parent)}}
        )
        client.execute()
    finally:
        if env_before is None:
            os.environ.pop("PRUNE_LAB_SWEEP")
        else:
            os.environ["PRUNE_LAB_SWEEP"] = env_before
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    text = "".join(o.get("text", "") + str(o.get("data", {}).get("text/plain", "")) for o in outputs)
    assert sys.executable in text  # the kernel ran this venv's python
    assert "kaiming_uniform" in text and any("image/png" in o.get("data", {}) for o in outputs)


def test_only_runs_whose_results_say_ok_are_analysed(sweeps, tmp_path: Path):
    """A results.json with its levels but another status (a run that marked itself failed) is a problem, never
    a row of the table."""
    good = sweeps["complete"][0]
    for name, status in (("ok_run", "ok"), ("failed_run", "failed")):
        shutil.copytree(good, tmp_path / name)
        record = json.loads((tmp_path / name / "results.json").read_text())
        (tmp_path / name / "results.json").write_text(json.dumps({**record, "status": status}))
    sweep = load_sweep(tmp_path)
    assert set(sweep.runs["run"]) == {"ok_run"}
    problem = sweep.problems.set_index("run").loc["failed_run"]
    assert problem["status"] == "corrupt" and "'failed'" in problem["reason"]
