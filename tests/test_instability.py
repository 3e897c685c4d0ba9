"""Instability analysis (Frankle et al. 2020, linear mode connectivity): `pruner=imp pruner.stability=true`
trains a second copy of every level from the rewind point with another data order and records `instability`,
the test-error barrier (points) on the straight line between the two, less the ends' mean.

The barrier by hand on a network whose two copies are the same function with hidden units swapped; then real
penguin runs: every level gets a barrier, the levels themselves are those of the run without it, a bad setting
refuses before training, and a run killed mid-copy resumes to the uninterrupted result.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY, computed, job_from_config, killed_and_reference, read_json, run_cli
from torch import nn

from prune_lab.data.splits import TensorSet
from prune_lab.errors import UserError
from prune_lab.evaluation import BARRIER_POINTS, error_barrier

IMP = ["pruner=imp", "sparsity=0.5", "pruner.rate=0.3", "device=cpu", "cache_dir=null", *TINY]


def swapped_pair() -> tuple[nn.Sequential, dict[str, torch.Tensor], dict[str, torch.Tensor], TensorSet]:
    """x in R: class 1 if x > 0. Hidden relu(x) and relu(-x); copy b has the two hidden units swapped, so both
    classify every point right. On the line, t = 0.5 zeroes the first layer: both logits 0, argmax says class 0,
    and every positive point (half of them) is wrong; at any other t the two units keep the sign apart."""
    net = nn.Sequential(nn.Linear(1, 2, bias=False), nn.ReLU(), nn.Linear(2, 2, bias=False))
    a = {"0.weight": torch.tensor([[1.0], [-1.0]]), "2.weight": torch.tensor([[0.0, 1.0], [1.0, 0.0]])}
    b = {"0.weight": torch.tensor([[-1.0], [1.0]]), "2.weight": torch.tensor([[1.0, 0.0], [0.0, 1.0]])}
    x = torch.tensor([[-2.0], [-1.0], [-0.5], [0.5], [1.0], [2.0]])
    return net, a, b, TensorSet(x, (x[:, 0] > 0).long())


def test_the_barrier_by_hand() -> None:
    net, a, b, data = swapped_pair()
    assert BARRIER_POINTS == 11  # 0, 0.1, ..., 1: the midpoint is on the grid
    assert error_barrier(net, a, b, data) == pytest.approx(50.0)  # 50% error at t = 0.5, 0% at both ends
    assert error_barrier(net, a, b, data, points=10) == pytest.approx(0.0)  # 10 points miss t = 0.5
    assert error_barrier(net, a, a, data) == 0.0  # one network: no barrier
    wrong = {k: v.clone() for k, v in a.items()}
    wrong["2.weight"] = wrong["2.weight"].flip(0)  # wrong everywhere: 100% error at that end
    assert error_barrier(net, a, wrong, data, points=2) == pytest.approx(100 - (0 + 100) / 2)  # ends only


def test_a_bad_stability_setting_refuses_before_training(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"pruner\.stability=true trains two copies .* needs pruner\.reinit=original"):
        job_from_config(tmp_path, *IMP, "pruner.stability=true", "pruner.reinit=keep")
    with pytest.raises(UserError, match=r"pruner\.stability='maybe' must be true or false"):
        job_from_config(tmp_path, *IMP, "pruner.stability=maybe")


def test_every_level_gets_its_barrier_and_the_levels_are_those_of_the_run_without_it(tmp_path: Path) -> None:
    plain = run_cli(f"hydra.run.dir={tmp_path / 'plain'}", *IMP, cwd=tmp_path)
    stable = run_cli(f"hydra.run.dir={tmp_path / 'stable'}", *IMP, "pruner.stability=true",
                     "pruner.rewind=epoch:1", cwd=tmp_path)
    late = run_cli(f"hydra.run.dir={tmp_path / 'late'}", *IMP, "pruner.rewind=epoch:1", cwd=tmp_path)
    for done in (plain, stable, late):
        assert done.returncode == 0, done.stderr[-3000:]
    levels = read_json(tmp_path / "stable" / "results.json")["levels"]
    assert len(levels) >= 3 and all(0 <= level["instability"] <= 100 for level in levels)
    without = [{k: v for k, v in level.items() if k != "instability"} for level in levels]
    assert computed(without) == computed(read_json(tmp_path / "late" / "results.json")["levels"])  # untouched
    assert all("instability" not in level for level in read_json(tmp_path / "plain" / "results.json")["levels"])
    phases = {line.split('"phase": "')[1].split('"')[0]
              for line in (tmp_path / "stable" / "metrics.jsonl").read_text().splitlines() if '"phase": "' in line}
    assert {f"stability-{r}" for r in range(len(levels))} <= phases  # one copy per level, the dense one included

    analysis = run_cli(str(tmp_path / "stable"), "--out", str(tmp_path / "analysis"), cwd=tmp_path,
                       module="multirun_analysis")
    assert analysis.returncode == 0, analysis.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "analysis" / "runs.csv")
    assert runs["instability"].tolist() == [level["instability"] for level in levels]  # the tidy frame has it
    assert (tmp_path / "analysis" / "figures" / "instability.png").is_file()
    assert "figures/instability.png" in (tmp_path / "analysis" / "report.md").read_text()


@pytest.mark.slow  # two runs of 20 + 20 epochs at once, one killed: a minute or two
def test_a_run_killed_while_training_a_copy_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    args = ["pruner=imp", "sparsity=0.5", "pruner.rate=0.3", "pruner.stability=true"]
    reference, killed = killed_and_reference(tmp_path, args, pattern="stability-1.partial.pt")
    ref, res = read_json(reference / "results.json"), read_json(killed / "results.json")
    assert res["resumed"] and computed(res["levels"]) == computed(ref["levels"])
    assert [level["instability"] for level in res["levels"]] == [level["instability"] for level in ref["levels"]]
