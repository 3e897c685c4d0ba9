"""Property-based fuzzing of the command line (hypothesis): any combination of overrides (wrong types, edge
values, unknown keys, group options, lists) ends either with exit 0 and a record that passes the record contract
(prune_lab.record), or with exit 2, exactly one line on stderr and no results.json.

A few examples run by default; many more in the slow run. Every failure the fuzzer ever finds becomes a
regular test (test_record_contract.py, test_bad_input.py)."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
from conftest import run_cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prune_lab.record import inspect

BASE = ["device=cpu", "cache_dir=null", "threads=1", "train.epochs=1", "train.finetune_epochs=1"]
BAD = ["abc", "", "null", "true", "-1", "nan", "1e309", "[1,2]", "{a:1}", "0.5,0.6"]
VALUES = {
    "sparsity": ["0", "0.3", "0.9", "0.999", "1", "1.5", "-0.2"],
    "seed": ["0", "7", "-3", "1.5", "99999999999"],
    "pruner": ["magnitude", "random", "unit", "imp", "snip", "grasp", "synflow", "agp", "gradual", "none", "bogus"],
    "init": ["default", "xavier_normal", "kaiming_uniform", "orthogonal", "sparsity_aware", "nope"],
    "train.lr": ["0.01", "1e-6", "0", "-1", "1e30"],
    "train.epochs": ["0", "1", "2"],
    "train.batch_size": ["1", "16", "0", "4096"],
    "pruner.rate": ["0.2", "0", "0.99", "1"],
    "measure": ["cheap", "slim", "latency", "fast"],
    "log_every": ["auto", "0", "3", "-2"],
    "train.lrr": ["0.1"],  # a typo'd key
    "+extra": ["1"],  # a key that is not in the schema
}
override = st.sampled_from(sorted(VALUES)).flatmap(
    lambda key: st.sampled_from(VALUES[key] + BAD).map(lambda value: f"{key}={value}"))
counter = itertools.count()


def check(tmp_path: Path, overrides: list[str]) -> None:
    folder = tmp_path / f"run{next(counter)}"
    done = run_cli(f"hydra.run.dir={folder}", *BASE, *overrides, cwd=tmp_path, timeout=300)
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    if done.returncode == 0:
        record, problem = inspect(folder)
        assert record is not None, f"{overrides}: exit 0 but {problem or 'no results.json'}"
        return
    assert done.returncode == 2, f"{overrides}: exit {done.returncode}\n{done.stderr[-3000:]}"
    assert len(lines) == 1 and lines[0].startswith("prune_lab: error: "), f"{overrides}:\n{done.stderr[-3000:]}"
    assert not (folder / "results.json").exists(), overrides


@pytest.mark.parametrize("overrides", [
    ["pruner=unit", "sparsity=0.5"],  # between two whole-unit targets: refused, the nearest named
    ["train.lr=1e30"],  # diverges: one line, kind diverged
    ["sparsity=0.5,0.6"],  # a sweep without -m
    ["init=null"],  # found by the fuzzer: a group set to null was Hydra's ValueError traceback, exit 1
    ["init=[1,2]"],  # found by the fuzzer: a group set to a list of numbers was Hydra's TypeError traceback
])
def test_known_edges_end_in_a_record_or_one_line(tmp_path: Path, overrides: list[str]):
    check(tmp_path, overrides)


@settings(max_examples=4, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(overrides=st.lists(override, min_size=1, max_size=4, unique_by=lambda o: o.split("=")[0]))
def test_fuzzed_command_lines_end_in_a_record_or_one_line(tmp_path: Path, overrides: list[str]):
    check(tmp_path, overrides)


@pytest.mark.slow  # 40 random command lines, about 4 s each: CI's budget (each is a fresh process)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                  HealthCheck.too_slow])
@given(overrides=st.lists(override, min_size=1, max_size=5, unique_by=lambda o: o.split("=")[0]))
def test_many_fuzzed_command_lines_end_in_a_record_or_one_line(tmp_path: Path, overrides: list[str]):
    check(tmp_path, overrides)
