"""hydra-submitit-launcher's launchers, made to keep a sweep's results when some of its jobs fail.

The stock launcher (hydra_plugins.hydra_submitit_launcher) collects results in submission order and
raises at the first failed job, so the user loses sight of every job after it and never learns where the
failed job's log is. These launchers wait for every job, report each failure with the job's log files and
run folder, print a summary table, and only then fail the sweep (exit status 1; 2 when every failure is
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
reused for jobs that differ only in plain values), makes each job a JobOutcome and ends through one report
(prune_lab_launchers._core); the Hydra internals they need are in prune_lab_launchers._hydra.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, configure_log, filter_overrides, setup_globals
from hydra.plugins.launcher import Launcher
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import BaseSubmititLauncher
from omegaconf import OmegaConf

# _config registers hydra/launcher=prune_lab_slurm, prune_lab_local and prune_lab_one_process
from hydra_plugins.prune_lab_launchers import _config, _core, _hydra  # noqa: F401
from hydra_plugins.prune_lab_launchers._compose import composer, make_fast
from hydra_plugins.prune_lab_launchers._core import JobOutcome, Progress, Task, finish, planned, sweep_config
from hydra_plugins.prune_lab_launchers._warm import WarmPool, pool_size, usable_cores

__all__ = ["BasicLauncher", "LocalLauncher", "Pack", "SlurmLauncher", "SweepJobsFailed", "complete_run"]

log = logging.getLogger(__name__)
SweepJobsFailed, complete_run = _core.SweepJobsFailed, _core.complete_run  # prune_lab.guard knows the first by name
WAITING = ("PENDING", "REQUEUED", "CONFIGURING", "UNKNOWN")  # SLURM states of a job not yet running


def _setup(hydra_context: Any) -> None:
    """Every launcher's setup: the Hydra it was written for, and every sweep config composed fast."""
    _hydra.check_version()
    with contextlib.suppress(Exception):  # not Hydra's own loader: it composes as it does
        make_fast(hydra_context.config_loader)


def _warm_job(launcher: Any, task: Task, info: dict[str, Any]) -> JobOutcome:
    """One job in a warm worker: as the one-process launcher runs it, its console output in its folder."""
    header = (f"prune_lab: warm worker {info['number']} (pid {os.getpid()}) runs job #{task.idx}: "
              f"{' '.join(filter_overrides(task.overrides))}")
    return _core.sendable(_core.run_here(launcher, task, skip_complete=True, header=header))


def run_pool(launcher: Any, tasks: list[Task], workers: int, threads: int, log_dir: Path,
             env: dict[str, str] | None = None, stopping: Callable[[], bool] | None = None) -> list[JobOutcome]:
    """A list of a sweep's jobs run in a pool of warm workers (prune_lab_launchers._warm), in the order given."""
    progress = Progress(workers)

    def lost(task: Task, reason: str, worker_log: Path) -> JobOutcome:
        outcome = planned(launcher, task, reason=reason)
        outcome.logs = [*outcome.logs[:1], str(worker_log)]  # the run's console output, then the worker's
        return outcome

    def ended(outcome: JobOutcome, done: int, running: int, left: int) -> None:
        with contextlib.suppress(OSError, TypeError, ValueError):  # where each job ran and its time went
            log_dir.mkdir(parents=True, exist_ok=True)
            with (log_dir / "outcomes.jsonl").open("a") as f:
                f.write(json.dumps(outcome.record(), default=str) + "\n")
        progress.ended_line(outcome, done, running, left)

    # The workers inherit the first composition, checked against Hydra's; a job whose config does not
    # compose fails in its worker, with its own message.
    with contextlib.suppress(Exception):
        composer(launcher.hydra_context.config_loader, launcher.config).prepare([task.overrides for task in tasks])
    visible = os.environ.get("CUDA_VISIBLE_DEVICES") or ""
    pool = WarmPool(functools.partial(_warm_job, launcher), workers, threads, log_dir, lost,
                    [g for g in visible.split(",") if g.strip()], env, stopping)
    outcomes = pool.run(tasks, ended)
    return [o if o is not None else planned(launcher, t, reason="never ran (the sweep was stopping)")
            for t, o in zip(tasks, outcomes)]


class BasicLauncher(Launcher):
    """Hydra's one-process launcher, but every job runs and every failure is reported at the end.

    A job that exits (prune_lab exits with status 2 on a config error) or raises is recorded as failed
    and the sweep goes on; Ctrl-C still stops the whole sweep."""

    def __init__(self) -> None:
        self.config: Any = None
        self.task_function: Any = None
        self.hydra_context: Any = None

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        self.config, self.hydra_context, self.task_function = config, hydra_context, task_function
        _setup(hydra_context)

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        setup_globals()
        assert self.hydra_context is not None and self.config is not None and self.task_function is not None
        configure_log(self.config.hydra.hydra_logging, self.config.hydra.verbose)
        sweep_dir = _core.open_sweep(self.config)
        log.info(f"Launching {len(job_overrides)} jobs locally")
        progress, outcomes = Progress(1), []
        for started, overrides in enumerate(job_overrides):
            idx = initial_job_idx + started
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}  "
                     f"{progress.status(started, 1, len(job_overrides) - started - 1)}")
            t0 = time.perf_counter()
            outcome = _core.run_here(self, Task(idx, list(overrides), idx), skip_complete=False)
            outcome.job_s = time.perf_counter() - t0
            progress.end(outcome)
            if outcome.status == "failed":
                log.error(f"FAILED {outcome.describe()}")
            outcomes.append(outcome)
        return finish(outcomes, sweep_dir)


class _Collecting(BaseSubmititLauncher):
    """submitit's launcher, collecting every job (one process each) into JobOutcomes."""

    _EXECUTOR: str

    def setup(self, *, hydra_context: Any, task_function: Any, config: Any) -> None:
        super().setup(hydra_context=hydra_context, task_function=task_function, config=config)
        _setup(hydra_context)

    def executor(self) -> tuple[Any, int | None]:
        """submitit's executor set up from the profile (as the plugin does), and the cap on parallel local runs."""
        import submitit  # lazy, as in the plugin: keeps Hydra's plugin discovery fast

        params = dict(self.params)
        parallelism = params.pop("parallelism", None)
        for ours in ("warm", "runs_per_task", "workers_per_task"):  # prune_lab's settings, not submitit's
            params.pop(ours, None)
        if parallelism == "auto":
            parallelism = usable_cores()
        init = {"folder": params.pop("submitit_folder")}
        if "max_num_timeout" in params:
            init[f"{self._EXECUTOR}_max_num_timeout"] = params.pop("max_num_timeout")
        executor = submitit.AutoExecutor(cluster=self._EXECUTOR, **init)
        shared = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(**{k if k in shared else f"{self._EXECUTOR}_{k}": v for k, v in params.items()})
        return executor, parallelism

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        assert self.config is not None
        executor, parallelism = self.executor()
        sweep_dir = _core.open_sweep(self.config)
        log.info(f"Submitit '{self._EXECUTOR}' sweep output dir : {sweep_dir}")
        tasks = [Task(idx, list(ov), str(idx)) for idx, ov in enumerate(job_overrides, start=initial_job_idx)]
        outcomes: dict[int, JobOutcome] = {}
        for task in tasks:
            cfg = sweep_config(self, task)
            if complete_run(cfg):  # no job at all: a slot on the cluster costs queue time
                outcomes[task.idx] = _core.skipped(self, task, cfg)
            else:
                log.info(f"\t#{task.idx} : {' '.join(filter_overrides(task.overrides))}")
        todo = [task for task in tasks if task.idx not in outcomes]
        if outcomes:
            log.info(f"Skipped {len(outcomes)} complete run(s) (results.json with the same config hash in their "
                     f"folders); submitting {len(todo)}")
        if todo and self._packed(len(todo)) > 1:
            collected = self._launch_packed(executor, todo, len(outcomes))
        else:
            collected = self._launch_each(executor, todo, len(outcomes), parallelism)
        outcomes.update((o.idx, o) for o in collected)
        return finish([outcomes[task.idx] for task in tasks], sweep_dir)

    def _launch_each(self, executor: Any, todo: list[Task], skipped: int, parallelism: int | None) -> list[JobOutcome]:
        """One submitit job per run (warm: false, SLURM runs_per_task: 1), each waited for in turn."""
        import submitit  # lazy, as in the plugin: keeps Hydra's plugin discovery fast

        if not todo:
            return []
        state = Singleton.get_state()
        job_params = [(task.overrides, "hydra.sweep.dir", task.idx, f"job_id_for_{task.idx}", state) for task in todo]
        with submitit.helpers.clean_env():  # no SLURM_* of a surrounding job leaks into the runs' allocations
            if parallelism and self._EXECUTOR == "local" and "PRUNE_LAB_THREADS" not in os.environ:
                # Parallel runs share the cores: each gets its part (prune_lab.threads), not all of them.
                os.environ["PRUNE_LAB_THREADS"] = str(max(1, usable_cores() // int(parallelism)))
            if parallelism:
                jobs = _bounded(executor, self, job_params, int(parallelism))
            else:
                jobs = executor.map_array(self, *zip(*job_params))
        log.info(f"Submitted {len(jobs)} job(s) (first: {jobs[0].job_id}); their logs are under "
                 f"{Path(str(self.params['submitit_folder'])).parent}")
        progress, outcomes = Progress(int(parallelism or len(jobs)), timed=False), []
        for job, task in zip(jobs, todo):
            logs = [str(job.paths.stdout), str(job.paths.stderr)]
            try:
                outcome = _core.from_job_return(self, task._replace(job_id=job.job_id), job.results()[0], logs)
            except Exception as e:  # no result came back: exit 2 (config error), cancelled, out of memory, node lost
                detail = _core.last_line(job.paths.stderr) or f"{type(e).__name__}"
                outcome = planned(self, task._replace(job_id=job.job_id),
                                  reason=f"ended without a result (state {getattr(job, 'state', '?')}): {detail}")
                outcome.logs, outcome.config_error = logs, detail.startswith("prune_lab: error:")
            progress.end(outcome)
            if outcome.status == "failed":
                log.error(f"FAILED {outcome.describe()}")
            log.info(progress.status(*_counts([(j, 1) for j in jobs], skipped)))
            outcomes.append(outcome)
        return outcomes

    def _packed(self, runs: int) -> int:
        """Runs per array task (1: one task per run, as submitit's launcher does)."""
        return 1

    def _launch_packed(self, executor: Any, todo: list[Task], skipped: int) -> list[JobOutcome]:
        raise NotImplementedError


def _counts(jobs: Sequence[tuple[Any, int]], skipped: int) -> tuple[int, int, int]:
    """Runs done, running and waiting, from the submitit jobs running them (each with its number of runs)."""
    done = sum(n for j, n in jobs if j.done())
    waiting = sum(n for j, n in jobs if not j.done() and str(getattr(j, "state", "")).upper() in WAITING)
    return done + skipped, sum(n for _, n in jobs) - done - waiting, waiting


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


class Pack:
    """What one packed array task runs: its K runs in a pool of warm workers across the task's CPUs.

    submitit calls it in the task, and on the time-limit warning (SIGUSR2) calls `checkpoint`, which
    resubmits the same pack: after the requeue, finished runs are skipped, interrupted ones resume from the
    checkpoints in their folders, and the rest start. Preemption and `scontrol requeue` rerun it the same way."""

    def __init__(self, launcher: _Collecting, workers: object):
        self.launcher, self.workers = launcher, workers

    def __call__(self, tasks: list[Task], singleton_state: dict[Any, Any]) -> list[JobOutcome]:
        import submitit

        Singleton.set_state(singleton_state)
        setup_globals()
        environment = submitit.JobEnvironment()
        cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
        cores = int(cpus) if cpus.isdigit() and int(cpus) > 0 else usable_cores()
        workers = pool_size(self.workers, len(tasks), cores)
        threads = max(1, cores // workers)
        tasks = [Task(t.idx, t.overrides, f"{environment.job_id}/{t.idx}") for t in tasks]
        print(f"prune_lab: packed task {environment.job_id} (restart {os.environ.get('SLURM_RESTART_COUNT', '0')}): "
              f"{len(tasks)} run(s) on {workers} warm worker(s), {threads} thread(s) each", flush=True)
        sweep_dir = Path(str(self.launcher.config.hydra.sweep.dir)).absolute()
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
        outcomes = run_pool(self.launcher, tasks, workers, threads, sweep_dir / ".workers" / str(environment.job_id),
                            stopping=lambda: bool(stopped))
        if stopped:
            print("prune_lab: this task is being stopped (preempted or requeued); it reports nothing, and its "
                  "requeued run skips the finished runs and resumes the others", flush=True)
            deadline = time.monotonic() + 300  # SLURM's SIGKILL comes KillWait seconds after the SIGTERM
            while time.monotonic() < deadline:
                time.sleep(1)
        for outcome in outcomes:
            outcome.job_id = str(environment.job_id)
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

    def _launch_packed(self, executor: Any, todo: list[Task], skipped: int) -> list[JobOutcome]:
        import submitit

        size = self._packed(len(todo))
        packs = [todo[i:i + size] for i in range(0, len(todo), size)]
        with submitit.helpers.clean_env():
            jobs = executor.map_array(Pack(self, self.params.get("workers_per_task", "auto")), packs,
                                      [Singleton.get_state()] * len(packs))
        log.info(f"Submitted {len(todo)} run(s) as {len(jobs)} packed task(s) of up to {size} (array "
                 f"{jobs[0].job_id.split('_')[0]}); task logs under {Path(str(self.params['submitit_folder'])).parent}"
                 ", each run's own log in its folder")
        workers = int(self.params.get("array_parallelism") or len(jobs)) * self._workers_per_task()
        progress, outcomes = Progress(workers, timed=False), []
        for n, (job, pack) in enumerate(zip(jobs, packs)):
            task_logs = [str(job.paths.stdout), str(job.paths.stderr)]
            try:
                collected = job.results()[0]
            except Exception as e:  # the task ended without a result: out of memory, cancelled, node lost
                detail = _core.last_line(job.paths.stderr) or type(e).__name__
                collected = [self._lost(task, job, detail) for task in pack]
            for outcome in collected:
                outcome.logs += [p for p in task_logs if p not in outcome.logs]
                progress.end(outcome)
                if outcome.status == "failed":
                    log.error(f"FAILED {outcome.describe()}")
            outcomes += collected
            log.info(f"{progress.status(*_counts([(j, len(p)) for j, p in zip(jobs, packs)], skipped))}  "
                     f"(task {n + 1} of {len(jobs)} collected)")
        return outcomes

    def _lost(self, task: Task, job: Any, detail: str) -> JobOutcome:
        """A run of a packed task that ended without a result: complete if it finished before, else failed."""
        cfg = sweep_config(self, task)
        outcome = planned(self, task._replace(job_id=job.job_id), cfg)
        if complete_run(cfg):
            outcome.status = "completed"
        else:
            outcome.logs = outcome.logs[:1]
            outcome.reason = (f"its packed task {job.job_id} ended without a result (state "
                              f"{getattr(job, 'state', '?')}): {detail}")
        return outcome


class LocalLauncher(_Collecting):
    """Parallel local runs: by default in warm workers (`warm: true`), else one process per run (submitit)."""

    _EXECUTOR = "local"

    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        if not self.params.get("warm", True):
            return super().launch(job_overrides, initial_job_idx)
        assert self.config is not None
        setup_globals()
        sweep_dir = _core.open_sweep(self.config)
        cores = usable_cores()
        workers = pool_size(self.params.get("parallelism", "auto"), len(job_overrides), cores)
        threads = max(1, cores // workers)
        log.info(f"Launching {len(job_overrides)} jobs on {workers} warm worker(s), {threads} torch thread(s) each "
                 f"({cores} core(s)); each run's log is in its folder, the workers' own in {sweep_dir}/.workers/")
        tasks = [Task(idx, list(ov), str(idx)) for idx, ov in enumerate(job_overrides, start=initial_job_idx)]
        env = {"CUDA_VISIBLE_DEVICES": ""} if self.params.get("gpus_per_node") == 0 else None
        return finish(run_pool(self, tasks, workers, threads, sweep_dir / ".workers", env), sweep_dir)
