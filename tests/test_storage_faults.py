"""The pieces that make faults heal, one by one (fast): build_once across processes, corrupt checkpoints,
leftovers, IDX checks, layer collapse. tests/test_faults.py drives them end to end with real runs."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import torch
from conftest import ROOT
from torch import nn

from prune_lab.collapse import certain_collapse
from prune_lab.data.torchvision_sets import idx_problem
from prune_lab.evaluation import Score, measure_level
from prune_lab.pruners.selection import Units, Unstructured
from prune_lab.storage import PhaseStore, _process_start, clean_leftovers, stale_temp_files

BUILDER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from prune_lab.storage import atomic_write_bytes, build_once
    target = Path(sys.argv[1])
    def load(locked):
        return target.read_text() if target.exists() else None
    def build():
        with open(target.parent / "builds.log", "a") as f:
            f.write("built\\n")
        time.sleep(1.0)  # long enough that the others find the lock taken
        atomic_write_bytes(target, b"product")
        return "product"
    print(build_once(target.with_name(".lock"), load, build, "waiting for the builder")[0])
""")


def test_build_once_builds_once_when_three_processes_start_together(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", BUILDER, str(tmp_path / "product")], env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    assert [out.strip() for out, _ in outs] == ["product"] * 3
    assert (tmp_path / "builds.log").read_text() == "built\n"  # the others waited and reused it


def test_a_checkpoint_that_does_not_load_is_set_aside_and_counts_as_absent(tmp_path: Path, capsys) -> None:
    store = PhaseStore(tmp_path / "checkpoints", "abc")
    store.save("dense", "done", {"model": {"w": torch.ones(3)}})
    assert store.load("dense", "done")["model"]["w"].sum() == 3
    path = tmp_path / "checkpoints" / "dense.done.pt"
    path.write_bytes(os.urandom(200))
    assert store.load("dense", "done") is None
    assert not path.exists() and len(list(path.parent.glob("dense.done.pt.corrupt-*"))) == 1
    assert f"checkpoint {path} does not load" in capsys.readouterr().err
    store.save("dense", "done", {"model": {}})  # the phase trains again and saves as usual
    assert store.load("dense", "done") == {"model": {}}


def test_a_checkpoint_with_a_flipped_byte_fails_its_checksum(tmp_path: Path, capsys) -> None:
    store = PhaseStore(tmp_path / "checkpoints", "abc")
    store.save("dense", "partial", {"model": {"w": torch.arange(1000.0)}, "epoch": 3})
    path = tmp_path / "checkpoints" / "dense.partial.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # one bit, inside the tensor's bytes: torch alone may not notice
    path.write_bytes(bytes(data))
    assert store.load("dense", "partial") is None
    assert "fail their sha256 check" in capsys.readouterr().err


def test_clean_leftovers_removes_temp_files_and_checkpoints_unless_kept(tmp_path: Path) -> None:
    (tmp_path / ".masks.json.x1.tmp").write_text("{")
    os.utime(tmp_path / ".masks.json.x1.tmp", (time.time() - 700, time.time() - 700))  # an earlier process's
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "dense.done.pt").write_bytes(b"x")
    (tmp_path / "results.json").write_text("{}")
    clean_leftovers(tmp_path, keep_checkpoints=True)
    assert (tmp_path / "checkpoints" / "dense.done.pt").exists() and not list(tmp_path.glob(".*.tmp"))
    clean_leftovers(tmp_path)
    assert not (tmp_path / "checkpoints").exists() and (tmp_path / "results.json").exists()


def test_a_temp_file_is_stale_when_old_or_older_than_this_process_and_open_nowhere(tmp_path: Path) -> None:
    fresh, older, ancient, held = (tmp_path / f".{name}.pt.x.tmp" for name in ("fresh", "older", "ancient", "held"))
    for path in (fresh, older, ancient, held):
        path.write_bytes(b"x")
    before_us = _process_start() - 5
    for path, mtime in ((older, before_us), (ancient, time.time() - 700), (held, before_us)):
        os.utime(path, (mtime, mtime))
    with held.open("ab"):  # a live writer on this machine has it open
        stale = set(stale_temp_files(tmp_path))
    assert fresh not in stale  # written since this process started: maybe a concurrent writer's
    assert held not in stale
    assert older in stale and ancient in stale


def test_idx_problem_checks_the_size_the_header_promises(tmp_path: Path) -> None:
    good = bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes(5)
    (tmp_path / "ok").write_bytes(good)
    (tmp_path / "short").write_bytes(good[:-2])
    (tmp_path / "empty").write_bytes(b"")
    (tmp_path / "other").write_bytes(b"\x89PNG" + bytes(20))
    assert idx_problem(tmp_path / "ok") is None
    assert idx_problem(tmp_path / "short") == "truncated (11 of 13 bytes)"
    assert idx_problem(tmp_path / "empty") == "truncated (0 bytes)"
    assert "header" in idx_problem(tmp_path / "other")


def test_layer_collapse_is_refused_only_when_the_sizes_make_it_certain() -> None:
    shapes = {"net.0.weight": (12, 12), "net.2.weight": (3, 12)}  # the penguin MLP: 180 prunable weights
    layerwise, global_ = Unstructured("layerwise"), Unstructured("global")
    assert "fewer than the 2 prunable layers" in certain_collapse(shapes, 0.999, global_)
    assert "net.2.weight" in certain_collapse(shapes, 0.99, layerwise)  # round(0.99 * 36) = 36
    assert certain_collapse(shapes, 0.99, global_) is None
    assert certain_collapse(shapes, 0.9, layerwise) is None
    assert certain_collapse(shapes, 0.99, None) is None  # per-layer targets of the pruner's own (imp's layer_rates)
    assert certain_collapse(shapes, 0.99, Units()) is None  # every layer keeps a unit (max_sparsity refuses)
    assert certain_collapse(shapes, 0.0, layerwise) is None  # a pruner that ends dense


def test_a_level_names_its_collapsed_layers() -> None:
    model = nn.Sequential(nn.Linear(4, 3), nn.ReLU(), nn.Linear(3, 2))
    with torch.no_grad():
        model[2].weight.zero_()
    level = measure_level(model, ["0.weight", "2.weight"], "pruned", 0.5, Score(1.0, 0.1), Score(1.0, 0.1))
    assert level.collapsed_layers == ["2.weight"]
    assert level.to_json()["collapsed_layers"] == ["2.weight"]
