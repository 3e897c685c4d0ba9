"""How many CPU threads torch may use in one run.

torch defaults to one thread per core of the machine. That is right for one run alone, and ruinous for
several at once: parallel local runs, or SLURM jobs sharing a node without CPU binding, each spin up every
core and their OpenMP threads fight (a tiny MLP measured 15x slower here with a second busy process).
`threads: auto` follows what the run was given instead: $PRUNE_LAB_THREADS (set by the local parallel
launcher to cores / parallelism), else $SLURM_CPUS_PER_TASK, else torch's default.
"""

from __future__ import annotations

import os

import torch

from prune_lab.errors import UserError

ENV_VARS = ("PRUNE_LAB_THREADS", "SLURM_CPUS_PER_TASK")


def resolve_threads(threads: object) -> int | None:
    """The thread count to set, or None for torch's default."""
    if threads == "auto":
        for var in ENV_VARS:
            value = os.environ.get(var, "")
            if value.isdigit() and int(value) > 0:
                return int(value)
        return None
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        raise UserError(f"threads={threads!r} must be a positive integer or auto")
    return threads


def apply_threads(threads: object) -> int:
    count = resolve_threads(threads)
    if count is not None and count != torch.get_num_threads():
        torch.set_num_threads(count)
    return torch.get_num_threads()
