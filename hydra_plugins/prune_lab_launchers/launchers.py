"""hydra-submitit-launcher's launchers, made to keep a sweep's results when some of its jobs fail.

The stock launcher (hydra_plugins.hydra_submitit_launcher) collects results in submission order and
raises at the first failed job, so the user loses sight of every job after it and never learns where the
failed job's log is. These launchers wait for every job, report each failure with the job's log files and
run folder, print a one-line summary, and only then fail the sweep (exit status 1; 2 when every failure is
bad input, as a single run exits), naming all failures.
Each run's results are in its own folder whatever happens to the others. `BasicLauncher` (the default,
one process: conf/hydra/launcher/one_process.yaml) does the same for Hydra's in-process launcher, which
stops the sweep at the first job that exits (a config error) and reports only the first failure.

Before submitting, they leave out the runs whose folder already holds a results.json with the run's config
hash (a relaunched 500-run sweep queues only what is missing; the run would skip itself anyway, but only
after waiting for a slot). They add to the local launcher a cap on how many runs run at once
(`parallelism`), which submitit's local executor lacks, and they submit from a clean environment
(submitit.helpers.clean_env), so a sweep launched from inside a SLURM job (slurm/submit_sweep.sh) does not
pass its own allocation to its runs.
The runs themselves are unchanged: a requeued job reruns the same arguments, and prune_lab resumes it from
its run folder.

Many short runs (prune_lab_launchers._warm): `LocalLauncher` runs a sweep in a pool of warm workers
(`warm: true`, the default; `warm: false` is a process per run as before), and `SlurmLauncher` with
`runs_per_task: K` packs K runs into each array task (`Pack`), run by such a pool across the task's CPUs;
submitit's checkpoint/requeue reruns the pack, whose finished runs are skipped and interrupted ones resumed.
Every launcher composes a sweep's job configs through prune_lab_launchers._compose (Hydra's composition,
reused for jobs that differ only in plain values).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hydra._internal.core_plugins.basic_launcher import BasicLauncher as _HydraBasicLauncher
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

from hydra_plugins.prune_lab_launchers import _config  # noqa: F401  (registers hydra/launcher=prune_lab_slurm)

log = logging.getLogger(__name__)


class SweepJobsFailed(RuntimeError):
    """Some jobs of a sweep failed; the message lists each with its log file.

    `exit_code`: 2 when every failure is bad input (as a single run exits), else 1."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


class Failure(NamedTuple):  # not a dataclass: Hydra's plugin scan runs this module outside sys.modules
    index: int  # the job's number in the sweep
    job_id: str
    overrides: list[str]
    reason: str
    logs: list[Path]
    run_dir: Path | None
    config_error: bool = False  # the run refused its input (prune_lab's exit status 2), rather than crashed

    def describe(self) -> str:
        lines = [f"job {self.job_id} (#{self.index}: {' '.join(self.overrides) or 'no overrides'}): {self.reason}"]
        lines += [f"    log: {path}" for path in self.logs]
        if self.run_dir is not None:
            lines.append(f"    run folder: {self.run_dir}")
        return "\n".join(lines)


def _last_line(path: Path, marker: str = "prune_lab: error:") -> str | None:
    """The run's own error line in a log, else its last non-blank line (the exception, usually)."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
    except OSError:
        return None
    ours = [line for line in lines if line.startswith(marker)]
    return (ours or lines or [None])[-1]


def _where(sweep_dir: Path) -> None:
    """Tell prune_lab's Ctrl-C handler which sweep folder a resume must name."""
    try:
        from prune_lab.guard import WHERE

        WHERE["sweep_dir"] = str(sweep_dir)
    except ImportError:  # prune_lab not importable here: the message names no folder
        pass


def _report(failures: list[Failure], total: int, sweep_dir: Path) -> SweepJobsFailed:
    done = total - len(failures)
    return SweepJobsFailed(
        f"{len(failures)} of {total} sweep job(s) failed; the other {done} finished and kept their "
        f"results in {sweep_dir}.\n" + "\n".join(f.describe() for f in failures)
        + "\nFix the cause and rerun the same command: finished runs are skipped, interrupted ones resume.",
        exit_code=2 if all(f.config_error for f in failures) else 1,
    )


def _error_json(run_dir: Path) -> str | None:
    """The reason prune_lab recorded in the run's error.json, if it wrote one."""
    try:
        return str(json.loads((run_dir / "error.json").read_text())["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _compose(launcher: Any, overrides: Sequence[str]) -> Any:
    """The job's sweep config, as Hydra's load_sweep_config composes it (fast for jobs differing in values only)."""
    from hydra_plugins.prune_lab_launchers._compose import composer

    return composer(launcher.hydra_context.config_loader, launcher.config).compose(overrides)


def complete_run(cfg: Any) -> bool:
    """Whether the folder of the run composed as `cfg` (a sweep config) holds its results.json, same config hash.

    Leftovers of a kill during the run's last writes are removed, as the run itself would."""
    try:
        from prune_lab.config import config_hash
        from prune_lab.record import complete

        run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
        if not (run_dir / "results.json").exists():
            return False
        import copy

        task = copy.deepcopy(cfg)
        with open_dict(task):
            del task["hydra"]  # as Hydra hands the task its config
        # the one skip check (prune_lab.record.complete): a record that passes, artifacts verified, this config
        if complete(run_dir, config_hash(OmegaConf.to_container(task, resolve=True))) is None:
            return False
        from prune_lab.storage import clean_leftovers

        clean_leftovers(run_dir, keep_checkpoints=task.get("keep_checkpoints") is True)
        return True
    except Exception:  # cannot tell here: the run decides
        return False


def run_warm_job(launcher: Any, task: tuple[int, list[str], str], info: dict[str, Any]) -> dict[str, Any]:
    """One job in a warm worker, as BasicLauncher runs it (Hydra's run_job), its console output in its folder.

    Returns a plain dict (it crosses a pipe): status completed / skipped (already complete) / failed, the
    reason, the run folder and logs, and where the time went (compose_s, task_s, job_s)."""
    from hydra.core.singleton import Singleton  # noqa: F401  (state inherited through the fork)

    t0 = time.perf_counter()
    idx, overrides, job_id = task
    assert launcher.hydra_context is not None and launcher.config is not None
    sweep_config = _compose(launcher, overrides)
    with open_dict(sweep_config):
        sweep_config.hydra.job.id = job_id
        sweep_config.hydra.job.num = idx
    run_dir = Path(str(sweep_config.hydra.sweep.dir)).absolute() / str(sweep_config.hydra.sweep.subdir)
    name = str(sweep_config.hydra.job.name)
    log_file, out_file = run_dir / f"{name}.log", run_dir / f"{name}.out"
    outcome: dict[str, Any] = {"idx": idx, "run_dir": str(run_dir), "logs": [str(out_file), str(log_file)],
                               "compose_s": time.perf_counter() - t0}
    if complete_run(sweep_config):  # no job at all: not even its .hydra folder or log is touched
        return {**outcome, "status": "skipped", "task_s": 0.0}
    run_dir.mkdir(parents=True, exist_ok=True)
    reason, config_error, value = None, False, None
    cwd = os.getcwd()
    t1 = time.perf_counter()
    with out_file.open("a") as out, contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        print(f"prune_lab: warm worker {info['number']} (pid {os.getpid()}) runs job #{idx}: "
              f"{' '.join(filter_overrides(overrides))}", flush=True)
        try:
            ret = run_job(hydra_context=launcher.hydra_context, task_function=launcher.task_function,
                          config=sweep_config, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
            if ret.status == JobStatus.FAILED:
                error = ret._return_value
                reason = f"{type(error).__name__}: {error}"
                traceback.print_exception(type(error), error, error.__traceback__, file=out)
            else:
                value = ret._return_value
        except SystemExit as e:  # prune_lab exits 2 on a config error (its one line is in the .out file)
            out.flush()
            error_line = _last_line(out_file)
            if error_line is not None and error_line.startswith("prune_lab: error: "):
                error_line = error_line[len("prune_lab: error: "):]
            else:
                error_line = None
            reason = _error_json(run_dir) or error_line or f"exited with status {e.code}"
            config_error = e.code == 2
        except Exception as e:  # outside the task (Hydra saving the config...): the job failed, the worker lives
            reason = f"{type(e).__name__}: {e}"
            traceback.print_exc(file=out)
        finally:
            os.chdir(cwd)
    task_s = time.perf_counter() - t1
    configure_log(launcher.config.hydra.hydra_logging, launcher.config.hydra.verbose)  # the worker's own again
    try:
        import pickle

        pickle.dumps(value)
    except Exception:  # it crosses a pipe: a value that cannot is dropped, not the job
        value = None
    return {**outcome, "status": "failed" if reason else "completed", "reason": reason,
            "config_error": config_error, "value": value, "task_s": task_s}


def _outcome_returns(launcher: Any, tasks: Sequence[tuple[int, list[str], str]], outcomes: Sequence[dict[str, Any]],
                     extra_logs: Sequence[Sequence[Path]] | None = None) -> tuple[list[JobReturn], list[Failure], int]:
    """JobReturns for the sweeper, the failures with each run's own logs, and how many runs were already complete."""
    returns, failures, skipped = [], [], 0
    for n, ((idx, overrides, job_id), outcome) in enumerate(zip(tasks, outcomes)):
        ret = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
        ret._return_value = outcome.get("value")
        skipped += outcome.get("status") == "skipped"
        if outcome.get("status") == "failed":
            ret.status = JobStatus.FAILED
            logs = [Path(p) for p in outcome.get("logs", []) if Path(p).exists()]
            logs += [p for p in (extra_logs[n] if extra_logs else []) if p not in logs]
            run_dir = Path(outcome["run_dir"]) if outcome.get("run_dir") else launcher._run_dir(overrides)
            failures.append(Failure(idx, str(outcome.get("job_id", job_id)), list(filter_overrides(overrides)),
                                    str(outcome.get("reason")), logs, run_dir, bool(outcome.get("config_error"))))
        returns.append(ret)
    return returns, failures, skipped


def _finish(returns: list[JobReturn], failures: list[Failure], skipped: int, sweep_dir: Path) -> list[JobReturn]:
    total = len(returns)
    log.info(f"Sweep finished: {total - len(failures)} of {total} run(s) complete ({skipped} were already); "
             f"results in {sweep_dir}/<overrides>/")
    if failures:
        error = _report(failures, total, sweep_dir)
        for ret in returns:  # Hydra's sweeper raises the first failed job's value: make it the whole report
            if ret.status == JobStatus.FAILED:
                ret._return_value = error
    return returns


def _visible_gpus() -> list[str]:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return [g for g in visible.split(",") if g.strip()] if visible else []


class WarmMixin:
    """Running a list of a sweep's jobs in a pool of warm workers (prune_lab_launchers._warm)."""

    hydra_context: Any
    config: Any

    def _run_warm(self, tasks: list[tuple[int, list[str], str]], workers: int, threads: int, log_dir: Path,
                  env: dict[str, str] | None = None,
                  stopping: Callable[[], bool] | None = None) -> list[dict[str, Any]]:
        import functools

        from hydra_plugins.prune_lab_launchers._warm import WarmPool

        failed = 0

        def lost(task: tuple[int, list[str], str], reason: str, worker_log: Path) -> dict[str, Any]:
            run_dir = self._run_dir(task[1])  # type: ignore[attr-defined]
            name = str(self.config.hydra.job.name)
            logs = [str(run_dir / f"{name}.out"), str(worker_log)] if run_dir else [str(worker_log)]
            return {"idx": task[0], "status": "failed", "reason": reason, "logs": logs,
                    "run_dir": str(run_dir) if run_dir else None}

        def progress(outcome: dict[str, Any], done: int, running: int, left: int) -> None:
            nonlocal failed
            failed += outcome.get("status") == "failed"
            record = {k: v for k, v in outcome.items() if k != "value"}
            try:  # where each job ran and where its time went (tests, benchmarks)
                log_dir.mkdir(parents=True, exist_ok=True)
                with (log_dir / "outcomes.jsonl").open("a") as f:
                    f.write(json.dumps(record, default=str) + "\n")
            except (OSError, TypeError, ValueError):
                pass
            idx = outcome.get("idx")
            what = {"completed": "done", "skipped": "already complete, skipped"}.get(outcome.get("status", ""),
                                                                                      "FAILED")
            line = (f"\t#{idx} {what} ({outcome.get('job_s', 0):.1f} s, worker {outcome.get('worker')})  "
                    f"[sweep: {done} done, {running} running, {left} left; {failed} failed]")
            if what == "FAILED":
                logs = " ".join(p for p in outcome.get("logs", []) if Path(p).exists())
                log.error(f"{line}\n\t    {outcome.get('reason')}\n\t    log: {logs}")
            else:
                log.info(line)

        from hydra_plugins.prune_lab_launchers._compose import composer

        # The workers inherit the first composition, checked against Hydra's; a job whose config does not
        # compose fails in its worker, with its own message.
        with contextlib.suppress(Exception):
            composer(self.hydra_context.config_loader, self.config).prepare([task[1] for task in tasks])
        pool = WarmPool(functools.partial(run_warm_job, self), workers, threads, log_dir, lost, _visible_gpus())
        if stopping is not None:
            pool.stopping = stopping
        if env:
            base = pool._env
            pool._env = lambda number: {**base(number), **env}  # type: ignore[method-assign]
        return pool.run(tasks, progress)


def _fast_setup(hydra_context: Any) -> None:
    """Every sweep config of this run composed through the fast composer, Hydra's validation included."""
    from hydra_plugins.prune_lab_launchers._compose import make_fast

    with contextlib.suppress(Exception):  # not Hydra's own loader: it composes as it does
        make_fast(hydra_context.config_loader)


class BasicLauncher(_HydraBasicLauncher):
    """Hydra's one-process launcher, but every job runs and every failure is reported at the end.

    A job that exits (prune_lab exits with status 2 on a config error) or raises is recorded as failed
    and the sweep goes on; Ctrl-C still stops the whole sweep."""

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        _fast_setup(hydra_context)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        _where(sweep_dir)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        runs: list[JobReturn] = []
        failures: list[Failure] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            shown = list(filter_overrides(overrides))
            started = idx - initial_job_idx
            log.info(f"\t#{idx} : {' '.join(shown)}  [sweep: {started} done, 1 running, "
                     f"{len(job_overrides) - started - 1} left; {len(failures)} failed]")
            sweep_config = _compose(self, overrides)
            with open_dict(sweep_config):
                sweep_config.hydra.job.id = idx
                sweep_config.hydra.job.num = idx
            run_dir = Path(str(sweep_config.hydra.sweep.dir)).absolute() / str(sweep_config.hydra.sweep.subdir)
            logs = [run_dir / f"{sweep_config.hydra.job.name}.log"]
            config_error = False
            try:
                ret = run_job(hydra_context=self.hydra_context, task_function=self.task_function,
                              config=sweep_config, job_dir_key="hydra.sweep.dir", job_subdir_key="hydra.sweep.subdir")
                reason = None if ret.status != JobStatus.FAILED else \
                    f"{type(ret._return_value).__name__}: {ret._return_value}"
            except SystemExit as e:  # prune_lab exits 2 on a config error (one line, error.json in the folder)
                if e.code == 130:  # Ctrl-C: stop the sweep
                    raise
                ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
                reason = _error_json(run_dir) or f"exited with status {e.code}"
                config_error = e.code == 2
            finally:
                configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
            if reason is not None:
                ret.status = JobStatus.FAILED
                failures.append(Failure(idx, str(idx), shown, reason, [p for p in logs if p.exists()], run_dir,
                                        config_error))
                log.error(f"FAILED {failures[-1].describe()}")
            runs.append(ret)
        log.info(f"Sweep finished: {len(runs) - len(failures)} of {len(runs)} run(s) complete; results in "
                 f"{sweep_dir}/<overrides>/")
        if failures:
            error = _report(failures, len(runs), sweep_dir)
            for ret in runs:  # Hydra's sweeper raises the first failed job's value: make it the whole report
                if ret.status == JobStatus.FAILED:
                    ret._return_value = error
        return runs


class _Collecting(BaseSubmititLauncher):
    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        _fast_setup(hydra_context)

    def executor(self) -> tuple[Any, int | None]:
        """submitit's executor set up from the profile (as the plugin does), and the cap on parallel local runs."""
        import submitit  # lazy, as in the plugin: keeps Hydra's plugin discovery fast

        params = dict(self.params)
        parallelism = params.pop("parallelism", None)
        for ours in ("warm", "runs_per_task", "workers_per_task"):  # prune_lab's settings, not submitit's
            params.pop(ours, None)
        if parallelism == "auto":
            from hydra_plugins.prune_lab_launchers._warm import usable_cores

            parallelism = usable_cores()
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor, parallelism

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        import submitit  # lazy, as in the plugin: keeps Hydra's plugin discovery fast

        assert self.config is not None
        executor, parallelism = self.executor()
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        _where(sweep_dir)
        complete: dict[int, JobReturn] = {}
        todo: list[tuple[int, Sequence[str]]] = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            if self._complete(overrides):  # no job at all: a slot on the cluster costs queue time
                complete[idx] = JobReturn(overrides=list(overrides), status=JobStatus.COMPLETED)
            else:
                todo.append((idx, overrides))
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
        if complete:
            log.info(f"Skipped {len(complete)} complete run(s) (results.json with the same config hash in their "
                     f"folders); submitting {len(todo)}")
        if todo and self._packed(len(todo)) > 1:
            returns = dict(zip([idx for idx, _ in todo], self._launch_packed(executor, todo, len(complete),
                                                                             sweep_dir)))
            return [complete[idx] if idx in complete else returns[idx]
                    for idx in range(initial_job_idx, initial_job_idx + len(job_overrides))]
        state = Singleton.get_state()
        job_params = [(list(ov), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state) for idx, ov in todo]
        jobs = []
        if job_params:
            with submitit.helpers.clean_env():  # no SLURM_* of a surrounding job leaks into the runs' allocations
                if parallelism and self._EXECUTOR == "local" and "PRUNE_LAB_THREADS" not in os.environ:
                    # Parallel runs share the cores: each gets its part (prune_lab.threads), not all of them.
                    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
                    os.environ["PRUNE_LAB_THREADS"] = str(max(1, (cores or 1) // int(parallelism)))
                if parallelism:
                    jobs = _bounded(executor, self, job_params, int(parallelism))
                else:
                    jobs = executor.map_array(self, *zip(*job_params))
            logs = Path(str(self.params["submitit_folder"])).parent
            log.info(f"Submitted {len(jobs)} job(s) (first: {jobs[0].job_id}); their logs are under {logs}")
        returns = dict(zip([idx for idx, _ in todo], self._collect(jobs, todo, len(complete), sweep_dir)))
        return [complete[idx] if idx in complete else returns[idx]
                for idx in range(initial_job_idx, initial_job_idx + len(job_overrides))]

    def _packed(self, runs: int) -> int:
        """Runs per array task (1: one task per run, as submitit's launcher does)."""
        return 1

    def _launch_packed(self, executor: Any, todo: list[tuple[int, Sequence[str]]], skipped: int,
                       sweep_dir: Path) -> list[JobReturn]:
        raise NotImplementedError

    def _complete(self, overrides: Sequence[str]) -> bool:
        """Whether the run's folder already holds its results (prune_lab's own test, done before submitting).

        The job would find them too and skip, but only after waiting in the queue and starting Python."""
        try:
            assert self.hydra_context is not None and self.config is not None
            cfg = _compose(self, overrides)
            return complete_run(cfg)
        except Exception:  # cannot tell here: the job decides
            return False

    def _collect(self, jobs: list[Any], todo: list[tuple[int, Sequence[str]]], skipped: int,
                 sweep_dir: Path) -> list[JobReturn]:
        """Wait for every job (in order: each wait is short once earlier ones are done) and report failures."""
        returns, failures = [], []
        for job, (idx, overrides) in zip(jobs, todo):
            logs = [job.paths.stdout, job.paths.stderr]
            try:
                ret = job.results()[0]
            except Exception as e:  # no result came back: exit 2 (config error), cancelled, out of memory, node lost
                state = getattr(job, "state", "?")  # SLURM's: FAILED, CANCELLED, OUT_OF_MEMORY, TIMEOUT, NODE_FAIL...
                detail = _last_line(job.paths.stderr) or f"{type(e).__name__}"
                reason = f"ended without a result (state {state}): {detail}"
                ret = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
                failures.append(Failure(idx, job.job_id, list(filter_overrides(overrides)), reason, logs,
                                        self._run_dir(overrides), bool(detail.startswith("prune_lab: error:"))))
            else:
                if ret.status == JobStatus.FAILED:  # the run raised; prune_lab wrote error.json in its folder
                    error = ret._return_value
                    run_dir = Path(str(ret.hydra_cfg.hydra.runtime.output_dir)) if ret.hydra_cfg else None
                    failures.append(Failure(idx, job.job_id, list(filter_overrides(overrides)),
                                            f"{type(error).__name__}: {error}", logs, run_dir))
            if failures and failures[-1].index == idx:
                log.error(f"FAILED {failures[-1].describe()}")
            returns.append(ret)
            log.info(_progress(jobs, skipped, len(failures)))
        total, done = len(jobs) + skipped, len(jobs) + skipped - len(failures)
        log.info(f"Sweep finished: {done} of {total} run(s) complete ({skipped} were already); results in "
                 f"{sweep_dir}/<overrides>/")
        if failures:
            error = _report(failures, total, sweep_dir)
            failed = {f.index for f in failures}
            for (idx, _), ret in zip(todo, returns):  # Hydra's sweeper raises the first failed job's value
                if idx in failed:
                    ret.status, ret._return_value = JobStatus.FAILED, error
        return returns

    def _run_dir(self, overrides: Sequence[str]) -> Path | None:
        """The run folder a job would have written (its config as the job composed it)."""
        try:
            assert self.hydra_context is not None and self.config is not None
            cfg = _compose(self, overrides)
            return Path(str(cfg.hydra.sweep.dir)).absolute() / str(cfg.hydra.sweep.subdir)
        except Exception:  # only a hint for the report
            return None


WAITING = ("PENDING", "REQUEUED", "CONFIGURING", "UNKNOWN")  # SLURM states of a job not yet running


def _progress(jobs: list[Any], skipped: int, failed: int) -> str:
    """"sweep: 7 done, 2 running, 31 left; 1 failed": where the sweep stands as each job is collected."""
    done = sum(bool(j.done()) for j in jobs)
    waiting = sum(not j.done() and str(getattr(j, "state", "")).upper() in WAITING for j in jobs)
    return (f"sweep: {done + skipped} done, {len(jobs) - done - waiting} running, {waiting} left; "
            f"{failed} failed")


def _bounded(executor: Any, fn: Any, job_params: list[tuple[Any, ...]], limit: int) -> list[Any]:
    """Submit at most `limit` jobs at a time, the next as soon as one ends (runs until all have started)."""
    jobs: list[Any] = [None] * len(job_params)
    pending, running = list(range(len(job_params))), []
    while pending:
        running = [i for i in running if not jobs[i].done()]
        while pending and len(running) < limit:
            i = pending.pop(0)
            jobs[i] = executor.submit(fn, *job_params[i])
            running.append(i)
        if pending:
            time.sleep(0.5)
    return jobs


class Pack(WarmMixin):
    """What one packed array task runs: its K runs in a pool of warm workers across the task's CPUs.

    submitit calls it in the task, and on the time-limit warning (SIGUSR2) calls `checkpoint`, which
    resubmits the same pack: after the requeue, finished runs are skipped, interrupted ones resume from the
    checkpoints in their folders, and the rest start. Preemption and `scontrol requeue` rerun it the same way."""

    def __init__(self, launcher: _Collecting, workers: object):
        self.launcher, self.workers = launcher, workers

    @property
    def hydra_context(self) -> Any:  # type: ignore[override]
        return self.launcher.hydra_context

    @property
    def config(self) -> Any:  # type: ignore[override]
        return self.launcher.config

    @property
    def task_function(self) -> Any:
        return self.launcher.task_function

    def _run_dir(self, overrides: Sequence[str]) -> Path | None:
        return self.launcher._run_dir(overrides)

    def __call__(self, tasks: list[tuple[int, list[str], str]],
                 singleton_state: dict[Any, Any]) -> list[dict[str, Any]]:
        import submitit

        from hydra_plugins.prune_lab_launchers._warm import pool_size, usable_cores

        Singleton.set_state(singleton_state)
        setup_globals()
        environment = submitit.JobEnvironment()
        cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
        cores = int(cpus) if cpus.isdigit() and int(cpus) > 0 else usable_cores()
        workers = pool_size(self.workers, len(tasks), cores)
        threads = max(1, cores // workers)
        tasks = [(idx, overrides, f"{environment.job_id}/{idx}") for idx, overrides, _ in tasks]
        print(f"prune_lab: packed task {environment.job_id} (restart {os.environ.get('SLURM_RESTART_COUNT', '0')}): "
              f"{len(tasks)} run(s) on {workers} warm worker(s), {threads} thread(s) each", flush=True)
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        # Preemption and `scontrol requeue` SIGTERM every process of the task, then SIGKILL it. The workers die
        # at once; this process (submitit ignores SIGTERM) must not then report their runs as failed: the
        # requeued task runs the pack again, and its result is the one the launcher collects.
        stopped: list[int] = []
        previous = signal.getsignal(signal.SIGTERM)

        def on_term(signum: int, frame: Any) -> None:
            stopped.append(signum)
            if callable(previous):
                previous(signum, frame)

        signal.signal(signal.SIGTERM, on_term)
        outcomes = self._run_warm(tasks, workers, threads, sweep_dir / ".workers" / str(environment.job_id),
                                  stopping=lambda: bool(stopped))
        if stopped:
            print("prune_lab: this task is being stopped (preempted or requeued); it reports nothing, and its "
                  "requeued run skips the finished runs and resumes the others", flush=True)
            deadline = time.monotonic() + 300  # SLURM's SIGKILL comes KillWait seconds after the SIGTERM
            while time.monotonic() < deadline:
                time.sleep(1)
        for outcome in outcomes:
            outcome["job_id"] = environment.job_id
        return outcomes

    def checkpoint(self, *args: Any, **kwargs: Any) -> Any:
        """Requeue the same pack (submitit calls this on SIGUSR2, before the time limit)."""
        import submitit

        return submitit.helpers.DelayedSubmission(self, *args, **kwargs)


class SlurmLauncher(_Collecting):
    _EXECUTOR = "slurm"

    def _workers_per_task(self) -> int:
        setting = self.params.get("workers_per_task", "auto")
        if setting in (None, "auto"):
            return max(1, int(self.params.get("cpus_per_task") or 1))
        return max(1, int(setting))

    def _packed(self, runs: int) -> int:
        """`runs_per_task`: K, or auto = as many as keeps the whole sweep within array_parallelism tasks running
        at once (ceil(runs / array_parallelism)), and at least one per worker of a task (workers_per_task)."""
        setting = self.params.get("runs_per_task", 1)
        if setting in (None, "auto"):
            parallel = int(self.params.get("array_parallelism") or 256)
            return max(self._workers_per_task(), math.ceil(runs / parallel))
        if isinstance(setting, bool) or not str(setting).isdigit() or int(setting) < 1:
            from prune_lab.errors import UserError

            raise UserError(f"hydra.launcher.runs_per_task={setting!r} must be a positive integer or auto")
        return int(setting)

    def _launch_packed(self, executor: Any, todo: list[tuple[int, Sequence[str]]], skipped: int,
                       sweep_dir: Path) -> list[JobReturn]:
        import submitit

        size = self._packed(len(todo))
        packs = [[(idx, list(ov), str(idx)) for idx, ov in todo[i:i + size]] for i in range(0, len(todo), size)]
        state = Singleton.get_state()
        with submitit.helpers.clean_env():
            jobs = executor.map_array(Pack(self, self.params.get("workers_per_task", "auto")), packs,
                                      [state] * len(packs))
        logs = Path(str(self.params["submitit_folder"])).parent
        log.info(f"Submitted {len(todo)} run(s) as {len(jobs)} packed task(s) of up to {size} (array "
                 f"{jobs[0].job_id.split('_')[0]}); task logs under {logs}, each run's own log in its folder")
        returns: list[JobReturn] = []
        failures: list[Failure] = []
        already = 0
        for n, (job, pack) in enumerate(zip(jobs, packs)):
            task_logs = [Path(job.paths.stdout), Path(job.paths.stderr)]
            try:
                outcomes = job.results()[0]
            except Exception as e:  # the task ended without a result: out of memory, cancelled, node lost
                state_now = getattr(job, "state", "?")
                detail = _last_line(job.paths.stderr) or type(e).__name__
                outcomes = []
                for idx, overrides, _ in pack:
                    run_dir = self._run_dir(overrides)
                    if self._complete(overrides):  # it finished before its task died
                        outcomes.append({"idx": idx, "status": "completed", "run_dir": str(run_dir)})
                        continue
                    name = str(self.config.hydra.job.name) if self.config is not None else "prune_lab"
                    outcomes.append({"idx": idx, "status": "failed", "run_dir": str(run_dir) if run_dir else None,
                                     "reason": f"its packed task {job.job_id} ended without a result (state "
                                               f"{state_now}): {detail}",
                                     "logs": [str(run_dir / f"{name}.out")] if run_dir else [], "job_id": job.job_id})
            rets, fails, skip = _outcome_returns(self, pack, outcomes, [task_logs] * len(pack))
            returns += rets
            failures += fails
            already += skip
            for failure in fails:
                log.error(f"FAILED {failure.describe()}")
            done_runs = sum(len(p) for j, p in zip(jobs, packs) if j.done())
            waiting = sum(len(p) for j, p in zip(jobs, packs)
                          if not j.done() and str(getattr(j, "state", "")).upper() in WAITING)
            log.info(f"sweep: {done_runs + skipped} done, {len(todo) - done_runs - waiting} running, {waiting} left; "
                     f"{len(failures)} failed  (task {n + 1} of {len(jobs)} collected)")
        total = len(returns) + skipped
        log.info(f"Sweep finished: {total - len(failures)} of {total} run(s) complete ({skipped + already} were "
                 f"already); results in {sweep_dir}/<overrides>/")
        if failures:
            error = _report(failures, total, sweep_dir)
            for ret in returns:
                if ret.status == JobStatus.FAILED:
                    ret._return_value = error
        return returns


class LocalLauncher(_Collecting, WarmMixin):
    """Parallel local runs: by default in warm workers (`warm: true`), else one process per run (submitit)."""

    _EXECUTOR = "local"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if not self.params.get("warm", True):
            return super().launch(job_overrides, initial_job_idx)
        from hydra_plugins.prune_lab_launchers._warm import pool_size, usable_cores

        assert self.config is not None
        setup_globals()
        sweep_dir = Path(str(self.config.hydra.sweep.dir)).absolute()
        sweep_dir.mkdir(parents=True, exist_ok=True)
        _where(sweep_dir)
        cores = usable_cores()
        workers = pool_size(self.params.get("parallelism", "auto"), len(job_overrides), cores)
        threads = max(1, cores // workers)
        log.info(f"Launching {len(job_overrides)} jobs on {workers} warm worker(s), {threads} torch thread(s) each "
                 f"({cores} core(s)); each run's log is in its folder, the workers' own in {sweep_dir}/.workers/")
        tasks = [(idx, list(ov), str(idx)) for idx, ov in enumerate(job_overrides, start=initial_job_idx)]
        env = {"CUDA_VISIBLE_DEVICES": ""} if self.params.get("gpus_per_node") == 0 else None
        outcomes = self._run_warm(tasks, workers, threads, sweep_dir / ".workers", env)
        returns, failures, skipped = _outcome_returns(self, tasks, outcomes)
        return _finish(returns, failures, skipped, sweep_dir)
