"""The dense teacher of distillation: the one place a schedule gets it from."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from prune_lab.distillation import Distillation, frozen_copy

if TYPE_CHECKING:
    from prune_lab.job import Job


def dense_teacher(job: Job, distill: Distillation) -> nn.Module | None:
    """With distillation on, a frozen copy of the network just trained dense (one-shot, imp); else None."""
    return frozen_copy(job.model) if distill.active else None


def teacher_before_pruning(job: Job, distill: Distillation, epochs: int) -> nn.Module | None:
    """With distillation on, train the dense network first (phase and level "dense"), keep it as the teacher,
    and rewind to the initial weights so the method starts where it would have. Without it: nothing, None.

    A rerun replays the stored "dense" phase, so the teacher comes back from the store, not from training.
    """
    if not distill.active:
        return None
    job.train("dense", epochs)
    job.evaluate("dense", 0.0)
    teacher = frozen_copy(job.model)
    job.rewind(job.initial_state)
    return teacher
