"""What happens to the weights that survive pruning (`pruner.reinit`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from prune_lab.errors import UserError

if TYPE_CHECKING:
    from prune_lab.job import Job, State

# keep: fine-tune the trained values; original: rewind to their initial values (Lottery Ticket);
# random: a fresh draw from the same init scheme (the Lottery Ticket paper's control).
FATES = ("keep", "original", "random")


def check_fate(reinit: str) -> str:
    if reinit not in FATES:
        raise UserError(f"pruner.reinit={reinit!r} is not one of {FATES}")
    return reinit


def apply_fate(job: Job, reinit: str, *stream: object, to: State | None = None) -> None:
    """Give the surviving weights their fate; pruned weights stay zero either way. `original` rewinds to `to`
    (imp's rewind point: the initial weights, or iteration k's), by default the initial weights; `random`
    draws from the stream `stream` names."""
    if reinit == "original":
        job.rewind(job.initial_state if to is None else to)
    elif reinit == "random":
        job.reinitialize(*stream)
