"""The dense teacher of distillation, for methods that would not otherwise train a dense network."""

from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

from prune_lab.distillation import Distillation, frozen_copy

if TYPE_CHECKING:
    from prune_lab.job import Job


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
