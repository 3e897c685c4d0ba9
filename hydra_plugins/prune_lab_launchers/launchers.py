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
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from hydra._internal.core_plugins.basic_launcher import BasicLauncher as _HydraBasicLauncher
from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, configure_log, filter_overrides, run_job, setup_globals
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf, open_dict

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
    import json

    try:
        return str(json.loads((run_dir / "error.json").read_text())["error"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


class BasicLauncher(_HydraBasicLauncher):
    """Hydra's one-process launcher, but every job runs and every failure is reported at the end.

    A job that exits (prune_lab exits with status 2 on a config error) or raises is recorded as failed
    and the sweep goes on; Ctrl-C still stops the whole sweep."""

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
            sweep_config = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
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
    def executor(self) -> tuple[Any, int | None]:
        """submitit's executor set up from the profile (as the plugin does), and the cap on parallel local runs."""
        import submitit  # lazy, as in the plugin: keeps Hydra's plugin discovery fast

        params = dict(self.params)
        parallelism = params.pop("parallelism", None)
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

    def _complete(self, overrides: Sequence[str]) -> bool:
        """Whether the run's folder already holds its results (prune_lab's own test, done before submitting).

        The job would find them too and skip, but only after waiting in the queue and starting Python."""
        try:
            from prune_lab.config import config_hash
            from prune_lab.results import read_results

            assert self.hydra_context is not None and self.config is not None
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
            run_dir = Path(str(cfg.hydra.sweep.dir)) / str(cfg.hydra.sweep.subdir)
            done = read_results(run_dir)
            if done is None:
                return False
            with open_dict(cfg):
                del cfg["hydra"]  # as Hydra hands the task its config
            if done.get("config_hash") != config_hash(OmegaConf.to_container(cfg, resolve=True)):
                return False
            from prune_lab.storage import clean_leftovers

            clean_leftovers(run_dir, keep_checkpoints=cfg.get("keep_checkpoints") is True)
            return True
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
            cfg = self.hydra_context.config_loader.load_sweep_config(self.config, list(overrides))
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


class SlurmLauncher(_Collecting):
    _EXECUTOR = "slurm"


class LocalLauncher(_Collecting):
    _EXECUTOR = "local"
