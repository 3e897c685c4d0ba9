"""The training path imports no plotting, pandas or torchvision unless the chosen dataset needs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

HEAVY = ("pandas", "matplotlib", "seaborn", "torchvision", "sklearn", "scipy", "multirun_analysis")
PROBE = """
import json, runpy, sys
sys.argv = ["prune_lab", *sys.argv[1:]]
try:
    runpy.run_module("prune_lab", run_name="__main__")
except SystemExit as e:
    assert not e.code, e.code
print(json.dumps(sorted(m for m in {heavy} if m in sys.modules)))
"""


def imported_after_run(*args: str) -> list[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_default_penguins_run_imports_nothing_heavy(tmp_path: Path) -> None:
    assert imported_after_run(f"hydra.run.dir={tmp_path}/run", "train.epochs=1", "train.finetune_epochs=1",
                              "cache_dir=null") == []


# scikit-learn (for its digits) pulls scipy and pandas in itself.
@pytest.mark.parametrize("dataset,needs", [("digits", ["scipy", "sklearn", "pandas"])])
def test_a_dataset_imports_only_what_it_needs(tmp_path: Path, dataset: str, needs: list[str]) -> None:
    heavy = imported_after_run(f"dataset={dataset}", f"hydra.run.dir={tmp_path}/run", "train.epochs=1",
                               "train.finetune_epochs=1", "cache_dir=null")
    assert set(heavy) <= set(needs), heavy
