"""`--help`'s option list: every user-facing config group with each option's description.

The description is the first sentence of the comment block that opens the option's YAML (after any
`# @package` header), so writing an option documents it; it is wrapped, never cut. The groups under size/
(size/<study>/, chosen by the study presets themselves) and recipe/ (chosen by model= and pruner=) are
internal and not listed; other nested groups (pruner/score) are. Options in the user's `--config-dir` are
listed too, marked as theirs. Hydra substitutes this text through the `prune_lab_options` resolver in
conf/config.yaml's help template, which passes `hydra.runtime.config_sources` (where Hydra looks).
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

WIDTH = 118  # characters per line; a longer description wraps onto indented lines
# The groups of one experiment first, then the rest alphabetically.
FIRST = ("dataset", "model", "init", "pruner", "train", "logger", "objective", "experiment", "size")
YOURS = " [your --config-dir]"
# A full stop after these is not a sentence's end ("Frankle et al. 2019", "e.g. resnet50").
_ABBREVIATIONS = ("al", "e.g", "i.e", "etc", "vs", "cf", "Fig", "Eq", "No")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z0-9`(\"'])")


def comment(path: Path) -> str:
    """The comment block that opens a YAML file, as one line: its lines up to the first line that is not a
    comment, is an empty comment or an indented example; `# @package` headers are skipped. "" if the file
    opens with no comment."""
    words: list[str] = []
    for line in path.read_text().splitlines():
        stripped = line.strip()
        text = stripped.lstrip("#").strip()
        indented = stripped.lstrip("#")[1:2].isspace()  # "#   python -m prune_lab ...": an example, not prose
        if not stripped.startswith("#") or (words and (not text or indented)):
            break
        if text and not text.startswith("@"):
            words.append(text)
    return " ".join(words)


def first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (one followed by a capital, a digit, a quote or a bracket)."""
    for end in _SENTENCE_END.finditer(text):
        before = text[: end.start()]
        if not before.endswith(tuple(f"{a}." for a in _ABBREVIATIONS)):
            return before
    return text


def description(path: Path) -> str:
    """What --help says about an option: the first sentence of its YAML's opening comment."""
    return first_sentence(comment(path))


def groups(conf: Path) -> dict[str, list[Path]]:
    """{"dataset": [cifar10.yaml, ...], "pruner/score": [...]}: folders of YAML files, minus the internal ones
    (inside size/, and the recipes, which follow model=)."""
    found: dict[str, list[Path]] = {}
    for folder in sorted(p for p in conf.rglob("*") if p.is_dir()):
        options = sorted(folder.glob("*.yaml"))
        top = folder.relative_to(conf).parts[:1]
        # size/<study>/ is chosen by the presets, recipe/ follows model= (and pruner=): neither is a user's choice
        internal = (top == ("size",) and folder != conf / "size") or top == ("recipe",)
        if options and not internal:
            found[folder.relative_to(conf).as_posix()] = options
    return found


def defaults(conf: Path) -> dict[str, str]:
    """The option each group starts with, from config.yaml's defaults list."""
    entries = yaml.safe_load((conf / "config.yaml").read_text()).get("defaults", [])
    return {k: str(v) for entry in entries if isinstance(entry, dict) for k, v in entry.items()}


def user_dirs(sources: Iterable[Any] | None) -> list[Path]:
    """The folders given with --config-dir: Hydra's config sources whose provider is the command line."""
    return [Path(str(s["path"])) for s in sources or () if s["provider"] == "command-line" and s["schema"] == "file"]


def options_help(conf_dir: str, sources: Iterable[Any] | None = None) -> str:
    conf = Path(conf_dir)
    chosen = defaults(conf)
    found = groups(conf)
    theirs: set[Path] = set()
    for folder in user_dirs(sources):
        for group, options in groups(folder).items():
            known = {p.stem for p in found.get(group, [])}
            # a file named like a packaged option is never read (the guard warns): not listed as a choice
            mine = [p for p in options if p.stem not in known]
            theirs.update(mine)
            found[group] = sorted(found.get(group, []) + mine, key=lambda p: p.stem)
    lines = []
    order = [g for g in FIRST if g in found] + sorted(g for g in found if g not in FIRST)
    for group in order:
        options = found[group]
        default = chosen.get(group, "None")
        lines.append(f"{group}: {group}=NAME" + (f" (default: {default})" if default != "None" else ""))
        width = max(len(p.stem) for p in options)
        for path in options:
            said = description(path) + (YOURS if path in theirs else "")
            lines += textwrap.wrap(said, WIDTH, initial_indent=f"  {path.stem:<{width}}  ",
                                   subsequent_indent=" " * (width + 4), break_on_hyphens=False) or [f"  {path.stem}"]
        lines.append("")
    return "\n".join(lines).rstrip()
