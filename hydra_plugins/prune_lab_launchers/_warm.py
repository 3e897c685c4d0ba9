"""Warm workers: a pool of processes that import torch and Hydra once, then run many of a sweep's jobs in turn.

A prune_lab run of a small model trains for about a second and spends 3-4 s importing torch, Hydra and
`torch._dynamo`; a process per job pays that per job, a warm worker once. The pool forks its workers from
the launching process, which has imported all of that (prune_lab's task function is imported with it) and
has run no torch op yet (so no OpenMP thread pool is copied across the fork). Each worker gets its share of
the cores as `PRUNE_LAB_THREADS` (prune_lab.threads), and, when several GPUs are visible, one of them.

Between jobs a worker resets what a job leaves behind in a process (see `fresh_job_state`); the job itself
seeds every generator, sets its thread count and gets its Hydra config, log handlers and working directory
from Hydra's `run_job`, exactly as in the one-process launcher. A worker that dies (segfault, `kill -9`,
out of memory) fails only the job it was running; a new worker takes its place for the rest.

The module's name starts with "_" so that Hydra's plugin scan does not import it; the launchers do.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

Work = Callable[[Any, dict[str, Any]], Any]  # (task, worker info) -> the task's outcome (it crosses a pipe)
Lost = Callable[[Any, str, Path], Any]  # (task, reason, worker log) -> the outcome of a task that never returned


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a SLURM task's allocation, taskset...)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def pool_size(setting: object, jobs: int, cores: int) -> int:
    """Workers to start: `auto` is one per core (no oversubscription with one thread each), never more than jobs."""
    if setting in (None, "auto"):
        wanted = cores
    elif isinstance(setting, int) and not isinstance(setting, bool) and setting > 0:
        wanted = setting
    elif isinstance(setting, str) and setting.isdigit() and int(setting) > 0:
        wanted = int(setting)
    else:
        raise ValueError(f"the number of workers must be a positive integer or auto, got {setting!r}")
    return max(1, min(wanted, jobs))


def prewarm() -> None:
    """Import in the launching process, once, what every job would import on its own before forking workers.

    torch.optim's first step imports torch._dynamo (1-2 s): paid here once, not once per worker. Importing
    starts no thread; nothing here runs a torch op (which would start OpenMP threads a fork cannot copy)."""
    if "torch" in sys.modules:
        import torch._dynamo  # noqa: F401


def fresh_job_state() -> None:
    """Undo what a finished job leaves in the process that a fresh process would not have.

    torch.compile's caches (a new model per job would hit dynamo's recompile limit after a few jobs) and
    CUDA's peak-memory counter (results.json's peak_cuda_mb is per run). The rest is set by the job:
    seeds (prune_lab.seeding), threads (prune_lab.threads), Hydra's config, logging and cwd (run_job)."""
    torch = sys.modules.get("torch")
    if torch is None:
        return
    dynamo = sys.modules.get("torch._dynamo")
    if dynamo is not None and getattr(dynamo, "reset", None) is not None:
        dynamo.reset()
    if torch.cuda.is_initialized():
        torch.cuda.reset_peak_memory_stats()


def _die_with_parent() -> None:
    """SIGTERM this worker when the launcher dies (kill -9 of a sweep must not leave orphans training)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux/glibc: the worker ends when its pipe closes
        pass


def _serve(conn: Any, work: Work, lost: Lost, info: dict[str, Any], log_path: str) -> None:
    """A worker's life: set up once, then run the tasks it is sent until it is sent None."""
    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT):
        # SIGINT: Ctrl-C is the launcher's to handle (it stops the workers). SIGUSR1/2: a SLURM time-limit or
        # preemption warning goes to every process of the task; submitit's handler (inherited through the
        # fork) must run only in the task's main process, which requeues the task once.
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)  # killed where it stands: the run resumes from its checkpoint
    _die_with_parent()
    os.environ.update(info["env"])
    fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(fd, 1)  # what is not a job's own output (C-level warnings, a crash's last words) goes here
    os.dup2(fd, 2)
    os.close(fd)
    while True:
        try:
            task = conn.recv()
        except EOFError:  # the launcher is gone
            return
        if task is None:
            return
        try:
            outcome = work(task, info)
        except BaseException as e:  # a bug of the work function itself: report it as the job's failure
            outcome = lost(task, f"{type(e).__name__}: {e} (in the warm worker)", Path(log_path))
        fresh_job_state()
        conn.send(outcome)


class _Worker:
    def __init__(self, number: int, process: Any, conn: Any, log_path: Path):
        self.number, self.process, self.conn, self.log_path = number, process, conn, log_path
        self.task: int | None = None  # index of the task it runs
        self.started = 0.0


class WarmPool:
    """`size` forked workers running `work(task, info)` for each task, `threads` torch threads each.

    `info` holds the worker's number, pid and environment (`env` added to each's); `lost(task, reason, log_path)`
    makes the outcome of a task whose worker died. An outcome gets the `worker`, `worker_pid` and `job_s` (wall
    seconds) of its run; `progress(outcome, done, running, left)` is called as each task ends. `stopping()` true:
    start nothing more (the process is being stopped)."""

    def __init__(self, work: Work, size: int, threads: int, log_dir: Path, lost: Lost,
                 gpus: Sequence[str] | None = None, env: dict[str, str] | None = None,
                 stopping: Callable[[], bool] | None = None):
        self.work, self.size, self.threads, self.log_dir, self.lost = work, size, threads, Path(log_dir), lost
        self.gpus, self.extra_env = list(gpus or []), dict(env or {})
        self.stopping = stopping or (lambda: False)
        self.context = multiprocessing.get_context("fork")
        self.workers: list[_Worker] = []
        self.numbers = iter(range(10**9))

    def _env(self, number: int) -> dict[str, str]:
        env = {"PRUNE_LAB_THREADS": os.environ.get("PRUNE_LAB_THREADS") or str(self.threads),
               "PRUNE_LAB_WARM_WORKER": str(number)}
        if len(self.gpus) > 1:  # several GPUs: the workers take turns (one GPU shared by all when there is one)
            env["CUDA_VISIBLE_DEVICES"] = self.gpus[number % len(self.gpus)]
        return {**env, **self.extra_env}

    def _start(self) -> _Worker:
        number = next(self.numbers)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"worker-{number}.log"
        ours, theirs = self.context.Pipe()
        info = {"number": number, "env": self._env(number), "log": str(log_path)}
        sys.stdout.flush()
        sys.stderr.flush()
        process = self.context.Process(target=_serve, args=(theirs, self.work, self.lost, info, str(log_path)),
                                       name=f"prune_lab-warm-{number}")
        process.start()
        theirs.close()
        worker = _Worker(number, process, ours, log_path)
        self.workers.append(worker)
        return worker

    def _give(self, worker: _Worker) -> None:
        if self.pending and not self.stopping():
            worker.task, worker.started = self.pending.popleft(), time.perf_counter()
            worker.conn.send(self.tasks[worker.task])

    def _finish(self, worker: _Worker, outcome: Any) -> None:
        assert worker.task is not None
        outcome.worker, outcome.worker_pid = worker.number, worker.process.pid
        outcome.job_s = time.perf_counter() - worker.started
        self.outcomes[worker.task], worker.task = outcome, None
        if self.progress is not None:
            done = sum(o is not None for o in self.outcomes)
            self.progress(outcome, done, sum(w.task is not None for w in self.workers), len(self.pending))

    def _received(self, worker: _Worker) -> Any:
        try:
            return worker.conn.recv() if worker.conn.poll() else None
        except (EOFError, OSError):
            return None

    def _replace(self, worker: _Worker) -> None:
        """The worker died in the middle of its job: that job failed; a fresh worker takes the rest."""
        assert worker.task is not None
        worker.process.join()
        code = worker.process.exitcode
        how = f"killed by signal {-code}" if code is not None and code < 0 else f"exit status {code}"
        reason = f"the warm worker running it (pid {worker.process.pid}) died ({how})"
        self._finish(worker, self.lost(self.tasks[worker.task], reason, worker.log_path))
        self.workers.remove(worker)
        worker.conn.close()
        if self.pending and not self.stopping():
            self._give(self._start())

    def _stop(self) -> None:
        """Every worker ends (terminated if it must: runs resume from their checkpoints)."""
        for worker in self.workers:
            with contextlib.suppress(OSError):
                worker.conn.send(None)
        for worker in self.workers:
            worker.process.join(timeout=30 if worker.task is None else 0)
            if worker.process.is_alive():
                worker.process.terminate()
                worker.process.join(timeout=10)
            if worker.process.is_alive():
                worker.process.kill()
                worker.process.join()

    def run(self, tasks: Sequence[Any], progress: Callable[[Any, int, int, int], None] | None = None) -> list[Any]:
        """Every task's outcome, in the order of `tasks` (None for a task never started: the pool was stopping)."""
        self.tasks, self.progress = list(tasks), progress
        self.outcomes: list[Any] = [None] * len(self.tasks)
        self.pending = deque(range(len(self.tasks)))
        prewarm()
        try:
            for _ in range(min(self.size, len(self.tasks))):
                self._give(self._start())
            while any(w.task is not None for w in self.workers):
                busy = [w for w in self.workers if w.task is not None]
                wait([w.conn for w in busy] + [w.process.sentinel for w in busy])
                for worker in busy:
                    outcome = self._received(worker)
                    if outcome is not None:
                        self._finish(worker, outcome)
                        self._give(worker)
                    elif not worker.process.is_alive():
                        self._replace(worker)
        finally:  # also on Ctrl-C or an error here
            self._stop()
        return self.outcomes
