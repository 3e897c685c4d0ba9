"""How many CPU threads torch may use in one run.

torch defaults to one thread per core of the machine. That is right for one run alone, and ruinous for
several at once: parallel local runs, or SLURM jobs sharing a node without CPU binding, each spin up every
core and their OpenMP threads fight (a tiny MLP measured 15x slower here with a second busy process).
`threads: auto` follows what the run was given instead: $PRUNE_LAB_THREADS (set by the local parallel
launchers to usable cores / parallelism: the run's share), else $SLURM_CPUS_PER_TASK, else $OMP_NUM_THREADS
(torch's own variable), each capped at the cores this process may use (its CPU affinity); with none of them,
the usable cores minus the machine's current load (os.getloadavg), at least 1, so a busy machine gets fewer
threads instead of every core fighting the other work. The choice is printed once per process.

A count above the usable cores is kept (it is what was asked for) with a one-line warning, once.
"""

from __future__ import annotations

import os
import sys

import torch

from prune_lab.errors import UserError

ENV_VARS = ("PRUNE_LAB_THREADS", "SLURM_CPUS_PER_TASK")
_SAID: set[str] = set()  # what was printed already: once per process, not once per job of a sweep


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity: a SLURM allocation, taskset, a container's cpuset)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _load() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _from_env(var: str) -> int | None:
    """$var as a thread count, None when unset; anything else than a positive whole number is refused."""
    value = os.environ.get(var, "").strip()
    if not value:
        return None
    if value.isdigit() and int(value) > 0:
        return int(value)
    raise UserError(f"{var}={value!r} (environment variable) must be a positive whole number of threads, e.g. "
                    f"export {var}=2, or unset it (unset {var}) to let threads=auto choose")


def auto_threads() -> tuple[int, str]:
    """threads=auto's count and why (for the line that reports it)."""
    cores = usable_cores()
    for var in ENV_VARS:
        count = _from_env(var)
        if count is not None:
            return min(count, cores), f"{var}={count}, {cores} usable core{'s' * (cores != 1)}"
    omp = os.environ.get("OMP_NUM_THREADS", "").strip()
    if omp.isdigit() and int(omp) > 0:  # other forms ("4,2") are OpenMP's own: left to torch's reading
        return min(int(omp), cores), f"OMP_NUM_THREADS={omp}, {cores} usable core{'s' * (cores != 1)}"
    load = _load()
    if load is None:
        return cores, f"{cores} usable core{'s' * (cores != 1)}"
    # The load counts runnable processes (this one, just started, adds almost nothing yet): what is left free.
    return max(1, min(cores, cores - round(load))), f"{cores} usable core{'s' * (cores != 1)}, load {load:.1f}"


def resolve_threads(threads: object) -> int:
    """The thread count to set (auto: see the module's docstring)."""
    if threads == "auto":
        return auto_threads()[0]
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"threads={threads!r} must be a positive integer or auto")
    return threads


def _once(line: str) -> None:
    if line not in _SAID:
        _SAID.add(line)
        print(line, file=sys.stderr if "warning" in line else sys.stdout, flush=True)


def apply_threads(threads: object) -> int:
    if threads == "auto":
        count, why = auto_threads()
        _once(f"prune_lab: threads=auto -> {count} ({why})")
    else:
        count = resolve_threads(threads)
        cores = usable_cores()
        if count > cores:
            _once(f"prune_lab: warning: threads={count} exceeds the {cores} usable core{'s' * (cores != 1)} "
                  f"(CPU affinity): oversubscribed threads are slower; keeping it (threads=auto fits the cores)")
    if count != torch.get_num_threads():
        torch.set_num_threads(count)
    return torch.get_num_threads()
