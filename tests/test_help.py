"""--help lists every user-facing option with its YAML's one-line description; tab completion knows them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT, run_cli

from prune_lab.options import WIDTH, description, groups

CONF = ROOT / "conf"


def test_help_describes_every_option_and_hides_internal_groups(tmp_path: Path) -> None:
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    shown = groups(CONF)
    assert {"dataset", "model", "init", "pruner", "train", "logger", "objective", "experiment", "size",
            "hparams_search", "hydra/launcher"} <= set(shown)
    for group, options in shown.items():
        assert f"\n{group}: {group}=NAME" in text
        section = text.split(f"\n{group}: {group}=NAME", 1)[1].split("\n\n", 1)[0]
        for path in options:
            line = next(line for line in section.splitlines() if line.startswith(f"  {path.stem} "))
            said = description(path)
            assert said, f"conf/{group}/{path.name} has no description comment on its first line"
            assert said.startswith(line.split(None, 1)[1].removesuffix("...")), (line, said)
            assert len(line) <= WIDTH
    # size/<study>/ are chosen by the presets themselves: not options to list.
    assert not any(g.startswith("size/") for g in shown) and "size/init_robustness" not in text
    assert "model: model=NAME (default: penguin_mlp)" in text and "logger: logger=NAME (default: none)" in text
    assert "  torchvision " in text and "  checkpoint " in text


def test_shell_completion_offers_the_options(tmp_path: Path) -> None:
    def complete(line: str) -> list[str]:
        env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line))}
        out = subprocess.run([sys.executable, "-m", "prune_lab", "-sc", "query=bash"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()

    assert complete("prune-lab model=res") == ["model=resnet18", "model=resnet20"]
    assert set(complete("prune-lab logger=")) == {f"logger={p.stem}" for p in (CONF / "logger").glob("*.yaml")}
