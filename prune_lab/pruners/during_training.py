"""Pruning during training, without reset: the mask tightens at scheduled steps of one training phase.

The trainer calls the pruner's step hook after every optimizer step; at a scheduled step the hook
returns a new mask (the score's selection among the live weights, already-pruned weights staying pruned)
and training goes on with the same optimizer. The schedule is a function of the step alone, and the hook
gets the mask in force from the trainer (a resumed phase: the checkpoint's), so a resumed run prunes at the
same steps to the same masks. A score that accumulates (movement) observes the whole phase, and its state
is the hook's, saved in every checkpoint.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from torch import nn

from prune_lab.data.splits import Splits
from prune_lab.distillation import Distillation
from prune_lab.errors import UserError
from prune_lab.masks import Mask
from prune_lab.pruners.base import Pruner, check_scored, check_sparsity
from prune_lab.pruners.scores import Score
from prune_lab.pruners.selection import Selection, Shapes
from prune_lab.pruners.teacher import teacher_before_pruning
from prune_lab.training import StepHook, combine, per_epoch

if TYPE_CHECKING:
    from prune_lab.job import Job


def check_fraction(value: object, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise UserError(f"{key}={value!r} must be a fraction of training in [0, 1], e.g. 0.5 for half way")
    return float(value)


class ScheduledPruning(StepHook):
    """The step hook of pruning during training: at each step the schedule names, select to its target by the
    score, among the weights of the mask in force. Stateless: a score's observer runs beside it (`combine`)."""

    def __init__(self, pruner: PruneWhileTraining, job: Job):
        self.pruner, self.job = pruner, job

    def after_step(self, step: int, total: int, model: nn.Module, mask: Mask) -> Mask | None:
        target = self.pruner.target_at(step, total)
        if target is None:
            return None
        return self.pruner.select.select(self.pruner.score, self.job.score_inputs("prune", step, mask=mask), target)


@dataclass
class PruneWhileTraining(Pruner):
    """Train once for `epochs`; at the steps `target_at` names, prune to the sparsity it gives."""

    score: Score
    select: Selection
    epochs: int
    distill: Distillation = field(default_factory=Distillation)

    # What to set for one pruning step straight to the target (a selection that lands only on some targets)
    single_step_hint: ClassVar[str] = ""

    @abstractmethod
    def target_at(self, step: int, total: int) -> float | None:
        """The sparsity to prune to after optimizer step `step` of `total` (0: before the first), or None."""

    @property
    @abstractmethod
    def final_sparsity(self) -> float:
        """Where the schedule ends."""

    def schedule(self, total: int) -> list[tuple[int, float]]:
        """Every (step, sparsity) at which the run prunes, for the record."""
        targets = ((s, self.target_at(s, total)) for s in range(total + 1))
        return [(s, t) for s, t in targets if t is not None]

    def final_selection(self) -> Selection:
        return self.select

    @property
    def target(self) -> float:
        return self.final_sparsity

    def check(self, shapes: Shapes, data: Splits) -> None:
        # A schedule that prunes (to more than 0) before its first step scores an untrained network.
        trains = not self.target_at(0, 1000)
        # The steps of a nominal 1000-step run: gradual's events do not depend on the length, agp's cubic
        # passes between k/m targets at any length with more than one pruning step.
        check_scored(self.score, self.select, self.final_sparsity, shapes, data, trains_before_scoring=trains,
                     schedule=f"pruner {type(self).__name__}" + ("" if trains else " (pruning at step 0)"),
                     steps=[t for _, t in self.schedule(1000)], hint=self.single_step_hint)

    def run(self, job: Job) -> None:
        teacher = teacher_before_pruning(job, self.distill, self.epochs)
        total = self.epochs * per_epoch(len(job.data.train), job.settings.batch_size)

        first = self.target_at(0, total)  # a schedule may start before the first step
        if first:
            job.set_mask(self.select.select(self.score, job.score_inputs("prune", 0), first))
        # The observer first: its after_backward has added this step before the pruning hook reads the scores.
        hook = combine(self.score.observer(job.model, job.prunable), ScheduledPruning(self, job))
        job.train("pruning", self.epochs, on_step=hook, loss_fn=self.distill.loss_fn(teacher))
        steps = [s for s, _ in self.schedule(total)]
        job.evaluate("pruned", self.final_sparsity, total_steps=total, prune_events=len(steps),
                     prune_steps=[steps[0], steps[-1]] if steps else [])


@dataclass
class Gradual(PruneWhileTraining):
    """The dynamic-pruning study's schedule: at each of `events` prune the same share of the remaining
    weights, the share that ends exactly at `sparsity`: rate = 1 - (1 - sparsity)^(1 / events)."""

    sparsity: float = 0.3
    events: list[float] = field(default_factory=lambda: [1 / 3, 2 / 3])
    single_step_hint: ClassVar[str] = "set pruner.events=[0.5] (one event straight to the target)"

    def __post_init__(self) -> None:
        self.sparsity = check_sparsity(self.sparsity)
        if not self.events:
            raise UserError("pruner.events=[] never prunes; give fractions of training, e.g. [0.3333,0.6667]")
        self.events = sorted(check_fraction(e, "pruner.events[]") for e in self.events)

    @property
    def rate(self) -> float:
        """The share of the remaining weights pruned at each event."""
        return 1.0 - (1.0 - self.sparsity) ** (1.0 / len(self.events))

    @property
    def final_sparsity(self) -> float:
        return self.sparsity

    def event_steps(self, total: int) -> list[int]:
        return [max(1, round(e * total)) if total else 0 for e in self.events]

    def target_at(self, step: int, total: int) -> float | None:
        steps = self.event_steps(total)
        if step not in steps:
            return None
        done = sum(s <= step for s in steps)  # events at or before this step (several may share one)
        return self.sparsity if done == len(steps) else 1.0 - (1.0 - self.rate) ** done


@dataclass
class Cubic(PruneWhileTraining):
    """Automated gradual pruning (Zhu & Gupta 2017): s_t = s_f + (s_i - s_f) (1 - (t - t_0) / (t_end - t_0))^3
    every `every` steps from t_0 = start to t_end = end (fractions of training); s_f is reached at t_end."""

    sparsity: float = 0.5
    single_step_hint: ClassVar[str] = ("agp's cubic passes through every sparsity on the way: use pruner=gradual "
                                       "'pruner.events=[0.5]' or pruner=magnitude")
    initial_sparsity: float = 0.0
    start: float = 0.1
    end: float = 0.75
    every: int = 10

    def __post_init__(self) -> None:
        self.sparsity = check_sparsity(self.sparsity)
        self.initial_sparsity = check_sparsity(self.initial_sparsity, "pruner.initial_sparsity")
        if self.initial_sparsity > self.sparsity:
            raise UserError(f"pruner.initial_sparsity={self.initial_sparsity} is above the final sparsity "
                            f"{self.sparsity}; the schedule only prunes more, so lower it")
        self.start = check_fraction(self.start, "pruner.start")
        self.end = check_fraction(self.end, "pruner.end")
        if self.start > self.end:
            raise UserError(f"pruner.start={self.start} is after pruner.end={self.end}; swap them")
        if isinstance(self.every, bool) or not isinstance(self.every, int) or self.every < 1:
            raise UserError(f"pruner.every={self.every!r} must be a positive number of steps, e.g. 10")

    @property
    def final_sparsity(self) -> float:
        return self.sparsity

    def sparsity_at(self, step: int, total: int) -> float:
        """The cubic curve: 0 before t_0 (nothing pruned yet), s_i at t_0, s_f from t_end on, monotone."""
        t0, t_end = round(self.start * total), round(self.end * total)
        if step < t0:
            return 0.0
        progress = 1.0 if t_end <= t0 else min(1.0, (step - t0) / (t_end - t0))
        return self.sparsity + (self.initial_sparsity - self.sparsity) * (1.0 - progress) ** 3

    def target_at(self, step: int, total: int) -> float | None:
        t0, t_end = round(self.start * total), round(self.end * total)
        if step < t0 or step > t_end or ((step - t0) % self.every and step != t_end):
            return None
        return self.sparsity_at(step, total)
