"""`--help`'s option list: every user-facing config group with each option's one-line description.

The description is the first comment line of the option's YAML (after any `# @package` header), so writing
an option documents it. The groups under size/ (size/<study>/, chosen by the study presets themselves) are
internal and not listed; other nested groups (pruner/score) are. Hydra substitutes this text through the
`prune_lab_options` resolver in conf/config.yaml's help template.
"""

from __future__ import annotations

from pathlib import Path

import yaml

WIDTH = 118  # characters per line: a description longer than the line is cut with "..."
# The groups of one experiment first, then the rest alphabetically.
FIRST = ("dataset", "model", "init", "pruner", "train", "logger", "objective", "experiment", "size")


def description(path: Path) -> str:
    """The first comment line of a YAML file that is not a `# @package` header; "" if there is none."""
    for line in path.read_text().splitlines():
        stripped = line.strip()
        if not stripped.startswith("#"):
            return ""
        text = stripped.lstrip("#").strip()
        if text and not text.startswith("@"):
            return text
    return ""


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


def options_help(conf_dir: str) -> str:
    conf = Path(conf_dir)
    chosen = defaults(conf)
    lines = []
    found = groups(conf)
    order = [g for g in FIRST if g in found] + sorted(g for g in found if g not in FIRST)
    for group in order:
        options = found[group]
        default = chosen.get(group, "None")
        lines.append(f"{group}: {group}=NAME" + (f" (default: {default})" if default != "None" else ""))
        width = max(len(p.stem) for p in options)
        for path in options:
            line = f"  {path.stem:<{width}}  {description(path)}".rstrip()
            lines.append(line if len(line) <= WIDTH else line[: WIDTH - 3] + "...")
        lines.append("")
    return "\n".join(lines).rstrip()
