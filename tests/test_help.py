"""--help lists every user-facing option (the user's --config-dir ones too) with the first sentence of its YAML's
comment, whole; tab completion knows them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, run_cli

from prune_lab.options import WIDTH, YOURS, comment, description, first_sentence, groups

CONF = ROOT / "conf"


def shown_options(text: str, group: str) -> dict[str, str]:
    """{option: its description as --help shows it, wrapped lines joined} for one group's section."""
    section = text.split(f"\n{group}: {group}=NAME", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    found: dict[str, str] = {}
    for line in section:
        if line.startswith("  ") and not line[2].isspace():  # "  name  description"
            name, _, said = line[2:].partition("  ")
            found[name] = said.strip()
            last = name
        else:  # a wrapped description continues under its first line
            found[last] += " " + line.strip()
    return found


def test_help_describes_every_option_whole_and_hides_internal_groups(tmp_path: Path) -> None:
    proc = run_cli("--help", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    text = proc.stdout
    shown = groups(CONF)
    assert {"dataset", "model", "init", "pruner", "train", "logger", "objective", "experiment", "size",
            "hparams_search", "hydra/launcher"} <= set(shown)
    for group, options in shown.items():
        listed = shown_options(text, group)
        assert set(listed) == {p.stem for p in options}, group
        for path in options:
            said = description(path)
            assert said, f"conf/{group}/{path.name} has no description comment on its first line"
            assert listed[path.stem] == said, (group, path.stem)  # whole: never cut mid-sentence
            assert said[-1] in ".?!)", f"conf/{group}/{path.name}: {said!r} is not a sentence"
    assert all(len(line) <= WIDTH for line in text.splitlines() if "=NAME" not in line)
    assert "..." not in text.split("== The composed config", 1)[0]
    assert len(text.splitlines()) <= 200, "--help grew past 200 lines: shorten the longest first sentences"
    # size/<study>/ are chosen by the presets themselves, recipe/ follows model=: not options to list.
    assert not any(g.startswith(("size/", "recipe")) for g in shown) and "size/init_robustness" not in text
    assert "\nrecipe" not in text
    assert "model: model=NAME (default: penguin_mlp)" in text and "logger: logger=NAME (default: none)" in text
    assert "  torchvision " in text and "  checkpoint " in text


def test_help_lists_the_options_of_a_users_config_dir(tmp_path: Path) -> None:
    mine = tmp_path / "my_conf"
    (mine / "train").mkdir(parents=True)
    (mine / "widget").mkdir()
    (mine / "train" / "my_adam.yaml").write_text("# Adam as I like it. More.\ndefaults:\n  - adam\n")
    (mine / "train" / "sgd.yaml").write_text("# Hides the packaged sgd (the guard warns).\nlr: 1\n")
    (mine / "widget" / "w1.yaml").write_text("# A widget of my own.\na: 1\n")
    text = run_cli("--config-dir", str(mine), "--help", cwd=tmp_path).stdout
    train, widget = shown_options(text, "train"), shown_options(text, "widget")
    assert train["my_adam"] == "Adam as I like it." + YOURS
    assert train["sgd"] == description(CONF / "train" / "sgd.yaml")  # the packaged one, which Hydra reads
    assert widget == {"w1": "A widget of my own." + YOURS}
    assert "my_adam" not in run_cli("--help", cwd=tmp_path).stdout


@pytest.mark.parametrize("text, first", [
    ("Frankle et al. 2019 pruned it. Then more.", "Frankle et al. 2019 pruned it."),
    ("A schedule, e.g. Cubic, for now. 20% per round.", "A schedule, e.g. Cubic, for now."),
    ("One sentence only", "One sentence only"),
    ("Adam 1.2e-3, batch 60. (Gaussian) init.", "Adam 1.2e-3, batch 60."),
])
def test_first_sentence(text: str, first: str) -> None:
    assert first_sentence(text) == first


def test_an_indented_example_ends_the_description(tmp_path: Path) -> None:
    path = tmp_path / "x.yaml"
    path.write_text("# @package _global_\n# The study\n# on MNIST.\n#   python -m prune_lab experiment=x\n#\n"
                    "# Later text.\nseed: 0\n")
    assert comment(path) == "The study on MNIST." and description(path) == "The study on MNIST."


def test_shell_completion_offers_the_options(tmp_path: Path) -> None:
    def complete(line: str) -> list[str]:
        env = {**os.environ, "COMP_LINE": line, "COMP_POINT": str(len(line))}
        out = subprocess.run([sys.executable, "-m", "prune_lab", "-sc", "query=bash"], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr[-2000:]
        return out.stdout.split()

    assert complete("prune-lab model=res") == ["model=resnet18", "model=resnet20"]
    assert set(complete("prune-lab logger=")) == {f"logger={p.stem}" for p in (CONF / "logger").glob("*.yaml")}


def test_docs_configuration_table_names_every_option() -> None:
    """docs/configuration.md's table lists every option of the groups it covers (the first-hour retry found
    fashion_cnn and adadelta missing)."""
    text = (ROOT / "docs" / "configuration.md").read_text()
    table = text.split("# Configuration", 1)[1].split("\n\n", 2)[1]
    rows = {line.split("|")[1].strip().strip("`"): line for line in table.splitlines() if line.startswith("| `")}
    for group in ("dataset", "model", "init", "train", "train/schedule"):
        missing = [p.stem for p in groups(CONF)[group] if f"`{p.stem}`" not in rows[group]]
        assert not missing, f"docs/configuration.md's table lacks {group} options {missing}"
