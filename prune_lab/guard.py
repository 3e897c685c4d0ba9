"""The process around Hydra: problems Hydra would report as tracebacks or pages become one line.

`guarded(hydra_main)` is what `python -m prune_lab` runs:

- before Hydra starts, the run folder (`hydra.run.dir`) or sweep folder (`hydra.sweep.dir`, with -m) must be
  a folder this process can write, else one line names the path (Hydra would fail configuring its log file);
- Hydra's composition errors (an unknown option `pruner=nonexistent`, a typo'd key `train.lrr=0.1`, bad
  override syntax) become one line naming the closest valid choices or keys (difflib), instead of Hydra's
  multi-line message that suggests `+train.lrr=0.1` (which would add the typo'd key);
- Ctrl-C prints one line saying the run was interrupted and the command that resumes it (exit 130);
- a sweep with failed jobs prints the launcher's report of every failure and exits 1 (2 when every failure
  was bad input, as a single run exits).

Hydra re-raises errors to us (instead of printing them itself) because `HYDRA_FULL_ERROR=1` is set for this
process; a user who sets it themselves gets Hydra's full tracebacks as before.
"""

from __future__ import annotations

import difflib
import os
import re
import shlex
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path

from prune_lab.errors import UserError

EXIT_USER, EXIT_INTERRUPTED = 2, 130
# Where the current run or sweep writes: set by the task and the launchers, read when Ctrl-C arrives.
WHERE: dict[str, str] = {}


def _err(message: str) -> None:
    print(f"prune_lab: error: {message}", file=sys.stderr, flush=True)


def _argv_value(args: list[str], key: str) -> str | None:
    """`key=VALUE` as given on the command line (quotes removed), or None."""
    values = [arg.split("=", 1)[1].strip("'\"") for arg in args if arg.startswith(f"{key}=")]
    return values[-1] if values else None  # Hydra takes the last


def _static_part(path: str) -> str:
    """The part of a path before its first interpolation (`multirun/${now:...}` -> `multirun`)."""
    if "${" not in path:
        return path
    head = path.split("${", 1)[0]
    return head.rsplit("/", 1)[0] if "/" in head else "."


def folder_problem(path: Path) -> str | None:
    """Why `path` cannot be (created as) a writable folder, or None when it can."""
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        if probe.is_symlink():  # a dangling link: mkdir would fail on it
            return f"{probe} is a broken link"
        probe = probe.parent
    if not probe.is_dir():
        return f"{probe} is a file, not a folder" if probe != path else f"{path} is a file, not a folder"
    try:
        fd, tmp = tempfile.mkstemp(dir=probe, prefix=".prune_lab_write_test.")
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        return f"{probe} is not writable ({e.strerror or e})"
    return None


def output_folder(args: list[str]) -> tuple[str, Path]:
    """The Hydra key and the folder this command line writes to (its static part when it interpolates)."""
    multirun = "-m" in args or "--multirun" in args
    key = "hydra.sweep.dir" if multirun else "hydra.run.dir"
    value = _argv_value(args, key) or ("multirun" if multirun else "outputs")
    return key, Path(_static_part(value)).expanduser()


def preflight(args: list[str]) -> None:
    """One line naming the run or sweep folder when it cannot be written: before Hydra configures its logs."""
    if any(a in ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "--shell-completion", "-sc") for a in args):
        return
    key, folder = output_folder(args)
    problem = folder_problem(folder)
    if problem is not None:
        raise UserError(f"{key}={folder} cannot be written: {problem}; choose a writable folder "
                        f"({key}=/path/you/can/write)")


def resume_command(args: list[str]) -> str:
    """The command that resumes what `args` started: the same overrides, into the same folder."""
    key = "hydra.sweep.dir" if ("-m" in args or "--multirun" in args) else "hydra.run.dir"
    folder = WHERE.get("sweep_dir" if key == "hydra.sweep.dir" else "run_dir")
    kept = [a for a in args if not a.startswith(f"{key}=")]
    if folder:
        kept.append(f"{key}={folder}")
    return " ".join(["python -m prune_lab", *(shlex.quote(a) for a in kept)])


def _closest(word: str, choices: list[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(word, choices, n=3, cutoff=0.5)
    return f"did you mean {' or '.join(prefix + c for c in close)}? " if close else ""


def describe_hydra_error(error: BaseException) -> str | None:
    """One line for a Hydra composition error, or None when `error` is not one."""
    from hydra.errors import CompactHydraException, MissingConfigException, OverrideParseException

    text = str(error)
    if isinstance(error, MissingConfigException):
        found = re.search(r"Could not find '([^']+)'", text)
        options = sorted(error.options or [])
        if found and "/" in found.group(1) and options:
            group, name = found.group(1).rsplit("/", 1)
            return (f"{group}={name} is not an option of {group}: {_closest(name, options)}"
                    f"choose one of {', '.join(options)}")
        return text.strip().splitlines()[0]
    if isinstance(error, OverrideParseException):
        return f"cannot read the override {error.override!r}: {error.message.splitlines()[0]}"
    if not isinstance(error, CompactHydraException):
        return None
    cause = error.__cause__
    full_key, parent = getattr(cause, "full_key", None), getattr(cause, "parent_node", None)
    if text.startswith("Could not override") and full_key and parent is not None:
        key = str(getattr(cause, "key", full_key.rsplit(".", 1)[-1]))
        keys = sorted(str(k) for k in parent if k != "hydra")
        where = full_key.rsplit(".", 1)[0] + "." if "." in full_key else ""
        return (f"{full_key} is not a setting: {_closest(key, keys, where)}"
                f"{'keys under ' + where.rstrip('.') if where else 'top-level keys and groups'}: "
                f"{', '.join(where + k for k in keys)}")
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines[:3]) if lines else type(error).__name__


def guarded(hydra_main: Callable[[], None]) -> None:
    """Run Hydra's entry point with the checks and one-line reports above."""
    args = sys.argv[1:]
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    try:
        preflight(args)
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors to us instead of printing them
        hydra_main()
    except KeyboardInterrupt:
        print(f"prune_lab: interrupted; finished work is kept. Resume with: {resume_command(args)}",
              file=sys.stderr, flush=True)
        sys.exit(EXIT_INTERRUPTED)
    except UserError as e:
        _err(str(e))
        sys.exit(EXIT_USER)
    except Exception as e:
        if type(e).__name__ == "SweepJobsFailed":  # the launcher's report of every failed job
            print(f"prune_lab: {e}", file=sys.stderr, flush=True)
            sys.exit(getattr(e, "exit_code", 1))  # 2 when every failure was bad input
        line = None if full_error else describe_hydra_error(e)
        if line is None:
            traceback.print_exc()
            sys.exit(1)
        _err(line)
        sys.exit(EXIT_USER)
