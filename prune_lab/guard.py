"""The process around Hydra: problems Hydra would report as tracebacks or pages become one line.

`guarded(hydra_main)` is what `python -m prune_lab` runs:

- before Hydra starts, the run folder (`hydra.run.dir`) or sweep folder (`hydra.sweep.dir`, with -m) must be
  a folder this process can write, else one line names the path (Hydra would fail configuring its log file);
- Hydra's composition errors (an unknown option `pruner=nonexistent`, a typo'd key `train.lrr=0.1`, bad
  override syntax) become one line naming the closest valid choices or keys (difflib), instead of Hydra's
  multi-line message that suggests `+train.lrr=0.1` (which would add the typo'd key);
- Ctrl-C (exit 130) and SIGTERM (exit 143) print one line saying what was kept and the command that resumes
  it, quoted for the shell and for Hydra's override grammar (folders with spaces or non-ASCII characters);
- a full disk or no inodes left in the run folder (at start, mid-training, at the end) is one line naming the
  folder (exit 1); a log handler that fails (Hydra's `.log` file on that disk) prints no "--- Logging error
  ---" blocks: the first failure is kept and reported once, as a warning, if the run otherwise succeeds;
- a package shadowed by a folder named `prune_lab` in the current folder, a `--config-dir` file hidden by a
  packaged option of the same name, and a comma list without -m get one line saying what to do;
- a sweep with failed jobs prints the launcher's report of every failure and exits 1 (2 when every failure
  was bad input, as a single run exits).

Hydra re-raises errors to us (instead of printing them itself) because `HYDRA_FULL_ERROR=1` is set for this
process; a user who sets it themselves gets Hydra's full tracebacks as before.
"""

from __future__ import annotations

import difflib
import errno
import logging
import os
import re
import shlex
import signal
import sys
import tempfile
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prune_lab.errors import UserError

EXIT_FAULT, EXIT_USER, EXIT_INTERRUPTED, EXIT_TERMINATED = 1, 2, 130, 128 + signal.SIGTERM
# Where the current run or sweep writes: set by the task and the launchers, read when Ctrl-C arrives.
WHERE: dict[str, str] = {}
FULL = (errno.ENOSPC, errno.EDQUOT)  # no space or no inodes left (both ENOSPC on Linux), over quota
# The first failure of each logging handler (its file or stream -> the exception), kept instead of printed.
LOG_FAULTS: dict[str, BaseException | None] = {}


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the process stands like Ctrl-C's KeyboardInterrupt, so the same code unwinds it."""


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def _quiet_handle_error(self: logging.Handler, record: logging.LogRecord) -> None:
    """Instead of logging's "--- Logging error ---" block and traceback on stderr at every record (a full disk
    under Hydra's .log file printed one per progress line): remember the first failure of each handler."""
    where = str(getattr(self, "baseFilename", None) or getattr(getattr(self, "stream", None), "name", self))
    LOG_FAULTS.setdefault(where, sys.exc_info()[1])


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
        if e.errno in FULL:
            return f"{probe} is full ({e.strerror}: no free space or inodes left there); free some space"
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


def hydra_quote(value: str) -> str:
    """`value` as Hydra's override grammar reads it back unchanged: bare when it holds only plain ASCII path
    characters, else quoted (spaces, non-ASCII, `,` which would mean a sweep, `=`, brackets...)."""
    if re.fullmatch(r"[A-Za-z0-9_/.+@%~-]+", value):
        return value
    if '"' not in value:  # double quotes: shlex.quote's single quotes around them stay readable
        return f'"{value}"'
    if "'" not in value:
        return f"'{value}'"
    return "'" + re.sub(r"(\\*)'", lambda m: m.group(1) * 2 + "\\'", value) + "'"


def resume_command(args: list[str]) -> str:
    """The command that resumes what `args` started: the same overrides, into the same folder, quoted for
    Hydra (the folder) and then for the shell (every argument), so bash gives Hydra back what it read."""
    key = "hydra.sweep.dir" if ("-m" in args or "--multirun" in args) else "hydra.run.dir"
    folder = WHERE.get("sweep_dir" if key == "hydra.sweep.dir" else "run_dir")
    kept = [a for a in args if not a.startswith(f"{key}=")] if folder else list(args)
    if folder:
        kept.append(f"{key}={hydra_quote(folder)}")
    return " ".join(["python -m prune_lab", *(shlex.quote(a) for a in kept)])


def kept_work() -> str:
    """What an interrupted run or sweep leaves for its resume: finished runs, checkpointed phases, or nothing."""
    sweep, run = WHERE.get("sweep_dir"), WHERE.get("run_dir")
    if sweep and Path(sweep).is_dir():
        finished = sum(1 for _ in Path(sweep).glob("*/results.json"))
        started = sum(1 for _ in Path(sweep).glob("*/checkpoints/*.pt"))
        if finished or started:
            return (f"{finished} finished run(s) kept in {sweep}"
                    + (" and the checkpoints of unfinished ones" if started else ""))
    elif run and (Path(run) / "checkpoints").is_dir():
        phases = []
        for path in sorted((Path(run) / "checkpoints").glob("*.pt"), key=lambda p: p.stat().st_mtime):
            phase, kind = path.name.split(".")[:2]
            phases.append(f"{phase} ({'finished' if kind == 'done' else 'part-way'})")
        if phases:
            return f"kept the checkpointed phases {', '.join(phases)} in {Path(run) / 'checkpoints'}"
    return "nothing was finished yet, so nothing was kept"


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
    if isinstance(error, (TypeError, ValueError)) and _raised_in_defaults_list(error):  # group=null, init=[1,2]
        def not_a_name(value: str) -> bool:  # null, or a number where an option name belongs
            return value.lower() in ("null", "none", "") or bool(re.search(r"(^|[\[,])\s*[-+\d.e]+\s*([,\]]|$)", value))

        odd = [a for a in sys.argv[1:]
               if "=" in a and "." not in a.split("=", 1)[0] and not_a_name(a.split("=", 1)[1].strip())]
        given = " ".join(odd) or "a config group override"
        return (f"{given}: a config group takes an option name (group=NAME; logger=[csv,tensorboard] for several), "
                "one of those python -m prune_lab --help lists")
    ambiguous = re.match(r"Ambiguous value for argument '(.*)'", text)
    if ambiguous:  # Hydra's advice (a list, a quoted string, --multirun) leads with the wrong one here
        override = ambiguous.group(1)
        return f"{override} is a sweep: add -m (python -m prune_lab -m {override})"
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


def _raised_in_defaults_list(error: BaseException) -> bool:
    """Whether Hydra's defaults-list code raised `error` (a config group given something that is not an option
    name: found by the fuzzer as a ValueError for `init=null` and a TypeError for `init=[1,2]`)."""
    tb = error.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(os.path.join("hydra", "_internal", "defaults_list.py")):
            return True
        tb = tb.tb_next
    return False


def _chain(error: BaseException | None):
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _is_full(folder: Path) -> bool:
    """Whether the filesystem under `folder` has (almost) no space or no inodes left."""
    probe = folder
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    try:
        st = os.statvfs(probe)
    except OSError:
        return False
    return st.f_bavail * st.f_frsize < 2**20 or (st.f_files > 0 and st.f_favail == 0)


def describe_full_disk(error: BaseException, args: list[str]) -> str | None:
    """One line for a write that failed because the run's disk is full (no space, no inodes, over quota),
    or None. OSError carries ENOSPC; torch.save reports it as a RuntimeError ("file write failed")."""
    key, static = output_folder(args)
    folder = Path(WHERE.get("sweep_dir" if key == "hydra.sweep.dir" else "run_dir") or static)
    for e in _chain(error):
        if isinstance(e, OSError) and e.errno in FULL:
            strerror, filename = e.strerror, e.filename
        elif isinstance(e, RuntimeError) and "write failed" in str(e) and _is_full(folder):
            strerror, filename = "No space left on device", None
        else:
            continue
        writing = f" writing {filename}" if filename else ""
        return (f"{key}={folder} is full ({strerror}{writing}: no free space or inodes left there); free some "
                f"space and rerun the same command to resume, or choose another folder ({key}=/path/with/space)")
    return None


def _log_faults() -> str | None:
    """The warning for logging handlers that failed during a run that otherwise succeeded."""
    if not LOG_FAULTS:
        return None
    where, error = next(iter(LOG_FAULTS.items()))
    reason = getattr(error, "strerror", None) or error or "unknown error"
    return f"prune_lab: warning: could not write the log {where} ({reason}); its lines from then on are missing"


def shadowed_package() -> str | None:
    """One line when `prune_lab` was imported as a namespace package: a folder named prune_lab (a clone)
    in the current folder hides the installed package, and its code is found piecemeal (or not at all)."""
    import prune_lab

    if getattr(prune_lab, "__file__", None) is not None:
        return None
    where = ", ".join(str(Path(p).resolve()) for p in getattr(prune_lab, "__path__", [])) or "the current folder"
    return (f"the folder {where} (a clone named prune_lab?) hides the installed prune_lab package, because "
            "Python looks in the current folder first; cd elsewhere to use the installed one, or cd into the "
            "clone to run it")


def shadowed_configs(args: list[str], conf_dir: Path) -> str | None:
    """A warning when a file in the user's --config-dir has the group and name of a packaged option: Hydra's
    search path looks in the packaged conf/ first, so the user's file is silently never read."""
    dirs = [args[i + 1] for i, a in enumerate(args[:-1]) if a in ("--config-dir", "-cd")]
    dirs += [a.split("=", 1)[1] for a in args if a.startswith("--config-dir=")]
    hidden = []
    for folder in dirs:
        root = Path(folder).expanduser()
        for path in sorted(root.rglob("*.yaml")) if root.is_dir() else []:
            relative = path.relative_to(root)
            if len(relative.parts) > 1 and (conf_dir / relative).is_file():
                hidden.append((path, f"{'/'.join(relative.parts[:-1])}={relative.stem}"))
    if not hidden:
        return None
    files = ", ".join(f"{path} ({choice})" for path, choice in hidden)
    return (f"prune_lab: warning: {files} has the name of a packaged option, which Hydra reads instead of "
            f"yours; rename yours (e.g. {hidden[0][0].parent.name}=my_{hidden[0][0].stem})")


class _WithoutHydraJobLine:
    """sys.stderr minus Hydra's "Error executing job with overrides: [...]" (JobReturn.return_value writes it
    before re-raising a job's exception to us): every failure gets its own line here, so it is kept aside and
    printed only above a traceback."""

    PREFIX = "Error executing job with overrides:"

    def __init__(self, stream: Any):
        self.stream, self.held = stream, ""

    def write(self, text: str) -> int:
        if text.startswith(self.PREFIX):
            self.held = text
            return len(text)
        return self.stream.write(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


def guarded(hydra_main: Callable[[], None]) -> None:
    """Run Hydra's entry point with the checks and one-line reports above."""
    args = sys.argv[1:]
    full_error = os.environ.get("HYDRA_FULL_ERROR") == "1"
    logging.Handler.handleError = _quiet_handle_error  # type: ignore[method-assign]
    stderr: _WithoutHydraJobLine | None = None
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        shadow = shadowed_package()
        if shadow is not None:
            raise UserError(shadow)
        preflight(args)
        from prune_lab.config import CONF_DIR

        hidden = shadowed_configs(args, Path(CONF_DIR))
        if hidden is not None:
            print(hidden, file=sys.stderr, flush=True)
        os.environ["HYDRA_FULL_ERROR"] = "1"  # Hydra raises its errors to us instead of printing them
        sys.stderr = stderr = _WithoutHydraJobLine(sys.stderr)
        try:
            hydra_main()
        finally:
            sys.stderr = stderr.stream
    except KeyboardInterrupt as e:
        term = isinstance(e, Terminated)
        print(f"prune_lab: {'terminated (SIGTERM)' if term else 'interrupted'}; {kept_work()}. "
              f"Resume with: {resume_command(args)}", file=sys.stderr, flush=True)
        sys.exit(EXIT_TERMINATED if term else EXIT_INTERRUPTED)
    except UserError as e:
        _err(str(e))
        sys.exit(EXIT_USER)
    except SystemExit:
        raise
    except Exception as e:
        if type(e).__name__ == "SweepJobsFailed":  # the launcher's report of every failed job
            print(f"prune_lab: {e}", file=sys.stderr, flush=True)
            sys.exit(getattr(e, "exit_code", 1))  # 2 when every failure was bad input
        full = describe_full_disk(e, args)
        if full is not None:
            _err(full)
            sys.exit(EXIT_FAULT)
        line = None if full_error else describe_hydra_error(e)
        if line is None:
            print(stderr.held if stderr is not None else "", end="", file=sys.stderr)
            traceback.print_exc()
            sys.exit(1)
        _err(line)
        sys.exit(EXIT_USER)
    warning = _log_faults()
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
