"""The launchers' one core: a sweep's jobs as JobOutcomes, where the sweep stands, and the one end-of-sweep report.

Every launcher (one process, local warm workers or a process per run, SLURM one run or K runs per array task)
turns each job into a `JobOutcome` (completed / skipped as already complete / failed, with the run's folder,
logs, reason and Hydra's contract fields), shows where the sweep stands with `Progress`, and ends through
`finish`: the summary table, the JobReturns Hydra's sweeper gets, and for failures one `SweepJobsFailed`.

Not a plugin module (its name starts with "_"): launchers.py imports it. prune_lab is imported only inside
functions (the launchers also serve other Hydra apps, and Hydra's plugin scan must stay fast).
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import pickle
import shlex
import sys
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, NamedTuple

from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job
from omegaconf import OmegaConf, open_dict

from hydra_plugins.prune_lab_launchers import _hydra
from hydra_plugins.prune_lab_launchers._compose import composer

log = logging.getLogger("hydra_plugins.prune_lab_launchers.launchers")
ERROR = "prune_lab: error: "  # how a run says it refused its input (then it exits with status 2)


class SweepJobsFailed(RuntimeError):
    """Some jobs of a sweep failed. The message is one line (each failure was reported once, as it ended);
    `failures` holds each failed job's description (reason, logs, folder) for a caller in Python.

    `exit_code`: 2 when every failure is bad input (as a single run exits), else 1."""

    def __init__(self, message: str, exit_code: int = 1, failures: Sequence[str] = ()):
        super().__init__(message)
        self.exit_code, self.failures = exit_code, list(failures)


class Task(NamedTuple):
    idx: int  # the job's number in the sweep (hydra.job.num)
    overrides: list[str]
    job_id: Any  # hydra.job.id: the number (one process), "N" (warm workers), "<array task>/N" (packed)


@dataclass
class JobOutcome:
    """What became of one job, in every launcher; plain data (it crosses pipes and SLURM's result files)."""

    idx: int
    overrides: list[str]
    job_id: str
    status: str = "failed"  # completed / skipped (already complete) / absent (its data, under size=debug) / failed
    run_dir: str | None = None
    reason: str | None = None
    config_error: bool = False  # the run refused its input (prune_lab's exit status 2), rather than crashed
    logs: list[str] = field(default_factory=list)
    value: Any = None  # the task function's return value (a failed job: None; finish() sets the report)
    cfg: Any = None  # Hydra's JobReturn contract: the task's config, Hydra's, the working dir, the task name
    hydra_cfg: Any = None
    working_dir: str | None = None
    task_name: str | None = None
    worker: int | None = None  # warm workers: which one, its pid, and where the time went
    worker_pid: int | None = None
    compose_s: float = 0.0
    task_s: float = 0.0
    job_s: float = 0.0

    def record(self) -> dict[str, Any]:
        """The outcome without configs and value: a line of .workers/outcomes.jsonl (tests, benchmarks)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("value", "cfg", "hydra_cfg")}

    def job_return(self) -> JobReturn:
        return _hydra.job_return(status=JobStatus.FAILED if self.status == "failed" else JobStatus.COMPLETED,
                                 value=self.value, overrides=self.overrides, cfg=self.cfg, hydra_cfg=self.hydra_cfg,
                                 working_dir=self.working_dir, task_name=self.task_name)

    def describe(self) -> str:
        shown = " ".join(filter_overrides(self.overrides)) or "no overrides"
        lines = [f"job {self.job_id} (#{self.idx}: {shown}): {self.reason}"]
        lines += [f"    log: {path}" for path in self.logs if Path(path).exists()]
        if self.run_dir is not None:
            lines.append(f"    run folder: {self.run_dir}")
        return "\n".join(lines)


# --- one job ------------------------------------------------------------------------------------------------

def sweep_config(launcher: Any, task: Task) -> Any:
    """The job's config as Hydra's load_sweep_config composes it (fast for jobs differing in values only)."""
    cfg = composer(launcher.hydra_context.config_loader, launcher.config).compose(task.overrides)
    with open_dict(cfg):
        cfg.hydra.job.id = task.job_id
        cfg.hydra.job.num = task.idx
    return cfg


def planned(launcher: Any, task: Task, cfg: Any = None, reason: str | None = None) -> JobOutcome:
    """The outcome of a job that has not run (yet): its folder and logs from its config (failed, with `reason`)."""
    outcome = JobOutcome(task.idx, list(task.overrides), str(task.job_id), reason=reason)
    try:
        cfg = cfg if cfg is not None else sweep_config(launcher, task)
    except Exception:  # the folder is only a hint for the report; the job says why it does not compose
        return outcome
    run_dir = Path(str(cfg.hydra.sweep.dir)).absolute() / str(cfg.hydra.sweep.subdir)
    name = str(cfg.hydra.job.name)
    outcome.run_dir, outcome.task_name = str(run_dir), name
    outcome.logs = [str(run_dir / f"{name}.out"), str(run_dir / f"{name}.log")]
    return outcome


def skipped(launcher: Any, task: Task, cfg: Any) -> JobOutcome:
    """The outcome of a run already complete, not run again: Hydra's JobReturn fields as run_job would set them."""
    outcome = planned(launcher, task, cfg)
    outcome.status = "skipped"
    task_cfg = copy.deepcopy(cfg)
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    outcome.cfg, outcome.hydra_cfg = task_cfg, OmegaConf.masked_copy(cfg, ["hydra"])
    with open_dict(outcome.hydra_cfg):
        outcome.hydra_cfg.hydra.runtime.output_dir = outcome.run_dir
    outcome.working_dir = outcome.run_dir if cfg.hydra.job.chdir else os.getcwd()
    return outcome


def complete_run(cfg: Any) -> bool:
    """Whether the folder of the run composed as `cfg` (a sweep config) holds its results.json, same config hash.

    Leftovers of a kill during the run's last writes are removed, as the run itself would."""
    try:
        from prune_lab.config import config_hash
        from prune_lab.record import complete
        from prune_lab.storage import clean_leftovers

        run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        if not (run_dir / "results.json").exists():
            return False
        task = copy.deepcopy(cfg)
        with open_dict(task):
            del task["hydra"]  # as Hydra hands the task its config
        # the one skip check (prune_lab.record.complete): a record that passes, artifacts verified, this config
        if complete(run_dir, config_hash(OmegaConf.to_container(task, resolve=True))) is None:
            return False
        clean_leftovers(run_dir, keep_checkpoints=task.get("keep_checkpoints") is True)
        return True
    except Exception:  # cannot tell here (not prune_lab's app...): the run decides
        return False


def last_line(path: Path | str | None, marker: str = ERROR) -> str | None:
    """The run's own error line in a log, else its last non-blank line (the exception, usually)."""
    try:
        lines = [line.strip() for line in Path(str(path)).read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    ours = [line for line in lines if line.startswith(marker)]
    return (ours or lines or [None])[-1]


def _error_json(run_dir: Path) -> str | None:
    """The reason prune_lab recorded in the run's error.json, if it wrote one."""
    try:
        return str(json.loads((run_dir / "error.json").read_text())["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def settle(outcome: JobOutcome) -> JobOutcome:
    """A job that returned normally but skipped its run because its data is absent (skip_absent_data, which
    size=debug sets: error.json with status "skipped") is `absent`, with that reason, not `completed`."""
    if outcome.status != "completed" or outcome.run_dir is None:
        return outcome
    try:
        error = json.loads((Path(outcome.run_dir) / "error.json").read_text())
    except (OSError, ValueError):
        return outcome
    if isinstance(error, dict) and error.get("status") == "skipped" and error.get("kind") == "data_absent":
        outcome.status, outcome.reason = "absent", str(error.get("error"))
    return outcome


@contextlib.contextmanager
def _console(path: Path | None, header: str | None) -> Iterator[None]:
    """The job's console output appended to `path` (a warm worker's job: <run>/<job name>.out), else unchanged."""
    if path is None:
        yield
        return
    with path.open("a") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        print(header, flush=True)
        yield


@contextlib.contextmanager
def _launcher_reports() -> Iterator[None]:
    """While a job shares the launcher's console, its failure is printed once, by the launcher (the run keeps
    its own line for its .log file: prune_lab.__main__.say)."""
    try:
        from prune_lab.guard import WHERE
    except ImportError:  # another Hydra app: nothing to tell
        yield
        return
    WHERE["reporter"] = "launcher"
    WHERE.pop("said", None)
    try:
        yield
    finally:
        WHERE.pop("reporter", None)


def _said() -> str | None:
    """The line a run in this process said about its failure while the launcher reports (prune_lab's say())."""
    try:
        from prune_lab.guard import WHERE
    except ImportError:
        return None
    return WHERE.pop("said", None)


def run_here(launcher: Any, task: Task, skip_complete: bool, header: str | None = None) -> JobOutcome:
    """One job in this process, as Hydra's BasicLauncher runs it (run_job); a failure is an outcome, not a raise.

    `skip_complete`: a run already complete is not run at all (its folder untouched). `header`: the job's console
    output goes to its .out file, starting with this line (warm workers). Ctrl-C (exit 130) still propagates."""
    t0 = time.perf_counter()
    cfg = sweep_config(launcher, task)
    compose_s, already = time.perf_counter() - t0, complete_run(cfg)
    if already and skip_complete:  # no job at all: not even its .hydra folder or log is touched
        outcome = skipped(launcher, task, cfg)
        outcome.compose_s = compose_s
        return outcome
    outcome = planned(launcher, task, cfg)
    outcome.compose_s = compose_s
    run_dir, out_file = Path(str(outcome.run_dir)), Path(outcome.logs[0]) if header is not None else None
    if out_file is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
    else:
        outcome.logs = outcome.logs[1:]  # no console file: Hydra's log only
    cwd, t1 = os.getcwd(), time.perf_counter()
    reporter = contextlib.nullcontext() if out_file is not None else _launcher_reports()
    with _console(out_file, header), reporter:
        try:
            ret = run_job(hydra_context=launcher.hydra_context, task_function=launcher.task_function, config=cfg,
                          job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            outcome.cfg, outcome.hydra_cfg, outcome.task_name = ret.cfg, ret.hydra_cfg, ret.task_name
            outcome.working_dir, outcome.overrides = ret.working_dir, list(ret.overrides or task.overrides)
            if ret.status == JobStatus.FAILED:
                error = _hydra.value(ret)
                outcome.reason = f"{type(error).__name__}: {error}"
                if out_file is not None:
                    traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
            else:
                outcome.value = _hydra.value(ret)
        except SystemExit as e:  # prune_lab exits 2 on a config error (one line; error.json in the folder)
            if e.code == 130:  # Ctrl-C: stop the sweep
                raise
            sys.stdout.flush()
            sys.stderr.flush()
            line = last_line(out_file) if out_file is not None else _said()  # the run's own line (say())
            line = line[len(ERROR):] if line is not None and line.startswith(ERROR) else None
            outcome.reason = line or _error_json(run_dir) or f"exited with status {e.code}"
            outcome.config_error = e.code == 2
        except Exception as e:  # outside the task (Hydra saving the config...): the job failed, the sweep goes on
            outcome.reason = f"{type(e).__name__}: {e}"
            traceback.print_exc()
        finally:
            os.chdir(cwd)
            configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)  # the launcher's own
    outcome.task_s = time.perf_counter() - t1
    outcome.status = "failed" if outcome.reason else "skipped" if already else "completed"
    return settle(outcome)


def sendable(outcome: JobOutcome) -> JobOutcome:
    """The outcome, made to cross a pipe: what cannot be pickled (a value, a config holding objects) is dropped."""
    for name in ("value", "cfg", "hydra_cfg"):
        try:
            pickle.dumps(outcome)
            break
        except Exception:
            setattr(outcome, name, None)
    return outcome


def from_job_return(launcher: Any, task: Task, ret: JobReturn, logs: Sequence[str]) -> JobOutcome:
    """The outcome of a job run in its own process (submitit), from the JobReturn it sent back."""
    outcome = planned(launcher, task)
    outcome.logs, outcome.job_id = list(logs), str(task.job_id)
    outcome.cfg, outcome.hydra_cfg, outcome.task_name = ret.cfg, ret.hydra_cfg, ret.task_name
    outcome.working_dir, outcome.overrides = ret.working_dir, list(ret.overrides or task.overrides)
    if ret.status == JobStatus.FAILED:  # the run raised; prune_lab wrote error.json in its folder
        error = _hydra.value(ret)
        outcome.reason = f"{type(error).__name__}: {error}"
        if ret.hydra_cfg is not None:
            outcome.run_dir = str(ret.hydra_cfg.hydra.runtime.output_dir)
    else:
        outcome.status, outcome.value = "completed", _hydra.value(ret)
    return settle(outcome)


# --- where the sweep stands -----------------------------------------------------------------------------------

def clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"


class Progress:
    """`[sweep: 5 ended, 1 running, 6 left; 0 failed]  ETA 0:01:12` as jobs start or end (ended: failed ones too).

    The ETA is the mean wall time of the runs that ran to an end × the runs not finished / the workers running
    them at once ("ETA ?" until one has ended). A launcher that cannot time each job (submitit's) estimates from
    the time since the sweep started and the jobs ended so far."""

    def __init__(self, workers: int, timed: bool = True):
        self.workers, self.timed = max(1, workers), timed
        self.started, self.seconds, self.ended, self.failed = time.monotonic(), [], 0, 0

    def end(self, outcome: JobOutcome) -> None:
        settle(outcome)
        if outcome.status == "absent":
            log.info(f"\t#{outcome.idx} skipped, its data is absent (size=debug): {outcome.reason}")
        self.failed += outcome.status == "failed"
        if outcome.status != "skipped":  # a skipped run took no time: it says nothing of the others'
            self.ended += 1
            if outcome.job_s > 0:
                self.seconds.append(outcome.job_s)

    def eta(self, remaining: int) -> str:
        if remaining <= 0:
            return clock(0)
        if self.timed and self.seconds:
            return clock(sum(self.seconds) / len(self.seconds) * remaining / self.workers)
        if not self.timed and self.ended:
            return clock((time.monotonic() - self.started) / self.ended * remaining)
        return "?"

    def status(self, done: int, running: int, left: int) -> str:
        return (f"[sweep: {done} ended, {running} running, {left} left; {self.failed} failed]  "
                f"ETA {self.eta(running + left)}")

    def ended_line(self, outcome: JobOutcome, done: int, running: int, left: int) -> None:
        """The line of a job that ended: done / already complete / FAILED with its reason and logs."""
        self.end(outcome)
        if outcome.status == "absent":  # end() said it
            return
        what = {"completed": "done", "skipped": "already complete, skipped"}.get(outcome.status, "FAILED")
        where = f", worker {outcome.worker}" if outcome.worker is not None else ""
        line = f"\t#{outcome.idx} {what} ({outcome.job_s:.1f} s{where})  {self.status(done, running, left)}"
        if outcome.status == "failed":
            log.error(f"{line}\n\tFAILED {outcome.describe()}")
        else:
            log.info(line)


# --- the end of a sweep -------------------------------------------------------------------------------------

def summary(outcomes: Sequence[JobOutcome], sweep_dir: Path) -> list[str]:
    """The table printed at the end of every sweep: counts, the folder, each failed run, what to run next."""
    count = {s: sum(o.status == s for o in outcomes) for s in ("completed", "skipped", "absent", "failed")}
    lines = ["Sweep summary:",
             f"  runs done                    {count['completed']}",
             f"  skipped (already complete)   {count['skipped']}"]
    if count["absent"]:
        lines.append(f"  skipped (data absent)        {count['absent']}   (size=debug; the full size refuses them)")
    lines += [f"  failed                       {count['failed']}",
              f"  sweep folder                 {sweep_dir}"]
    failed = [o for o in outcomes if o.status == "failed"]
    if failed:  # each reason was printed once, as its job ended; it is in the folder's error.json too
        lines.append("  failed runs (why: above, and in each folder's error.json):")
        lines += [f"    {o.run_dir or f'#{o.idx} (no folder)'}" for o in failed]
        lines.append("  fix them and rerun the same command: finished runs are skipped, interrupted ones resume")
    if count["completed"] + count["skipped"]:
        folder = shlex.quote(str(sweep_dir))
        lines.append(f"  next: python -m multirun_analysis {folder}")
    return lines


def _report(failures: Sequence[JobOutcome], total: int, sweep_dir: Path) -> SweepJobsFailed:
    done = total - len(failures)
    return SweepJobsFailed(
        f"{len(failures)} of {total} sweep job(s) failed; the other {done} finished and kept their "
        f"results in {sweep_dir}. Each failure is reported above; fix the cause and rerun the same command: "
        "finished runs are skipped, interrupted ones resume.",
        exit_code=2 if all(f.config_error for f in failures) else 1, failures=[f.describe() for f in failures],
    )


def finish(outcomes: Sequence[JobOutcome], sweep_dir: Path) -> list[JobReturn]:
    """The one end of every launcher: the summary, and the JobReturns for Hydra's sweeper, in the jobs' order.

    Hydra's sweeper raises the first failed job's value: every failed job's is the whole report."""
    outcomes = [settle(o) for o in outcomes]
    total, failures = len(outcomes), [o for o in outcomes if o.status == "failed"]
    skipped = sum(o.status == "skipped" for o in outcomes)
    absent = sum(o.status == "absent" for o in outcomes)
    complete = total - len(failures) - absent
    log.info(f"Sweep finished: {complete} of {total} run(s) complete ({skipped} were already"
             + (f"; {absent} skipped, their data absent" if absent else "") + f"); results in {sweep_dir}/<overrides>/")
    for line in summary(outcomes, sweep_dir):
        log.info(line)
    returns = [o.job_return() for o in outcomes]
    if failures:
        error = _report(failures, total, sweep_dir)
        for ret in returns:
            if ret.status == JobStatus.FAILED:
                _hydra.set_value(ret, error)
    return returns


def open_sweep(config: Any) -> Path:
    """The sweep folder, made (with hydra.sweep.mode when set), and named to prune_lab's Ctrl-C handler."""
    sweep_dir = Path(str(config.hydra.sweep.dir)).absolute()
    sweep_dir.mkdir(parents=True, exist_ok=True)
    if config.hydra.sweep.get("mode") is not None:
        os.chmod(sweep_dir, mode=int(str(config.hydra.sweep.mode), 8))
    with contextlib.suppress(ImportError):  # prune_lab not importable here: the Ctrl-C message names no folder
        from prune_lab.guard import WHERE

        WHERE["sweep_dir"] = str(sweep_dir)
    return sweep_dir
