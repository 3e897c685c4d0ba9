"""The simplest schedules: no pruning, and one-shot pruning after training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prune_lab.data.splits import Splits
from prune_lab.distillation import Distillation
from prune_lab.pruners.base import Pruner, check_scored, check_sparsity
from prune_lab.pruners.scores import Score
from prune_lab.pruners.selection import Selection, Shapes
from prune_lab.pruners.survivors import apply_fate, check_fate
from prune_lab.pruners.teacher import dense_teacher

if TYPE_CHECKING:
    from prune_lab.job import Job


@dataclass
class Dense(Pruner):
    """`pruner=none`: train the dense network; its one level is the baseline at sparsity 0."""

    @property
    def target(self) -> float:
        return 0.0

    def run(self, job: Job) -> None:
        job.train("dense", job.settings.epochs)
        job.evaluate("dense", 0.0)


@dataclass
class OneShot(Pruner):
    """Train dense, score, select to `sparsity` in one step, give survivors their fate, fine-tune (optionally
    against the dense network's soft labels). A score that accumulates over training observes the dense phase."""

    score: Score
    select: Selection
    sparsity: float
    finetune_epochs: int
    reinit: str = "keep"
    distill: Distillation = field(default_factory=Distillation)

    def __post_init__(self) -> None:
        self.sparsity = check_sparsity(self.sparsity)
        check_fate(self.reinit)

    def final_selection(self) -> Selection:
        return self.select

    @property
    def target(self) -> float:
        return self.sparsity

    def check(self, shapes: Shapes, data: Splits) -> None:
        check_scored(self.score, self.select, self.sparsity, shapes, data, trains_before_scoring=True,
                     schedule="one-shot pruning")

    def run(self, job: Job) -> None:
        job.train("dense", job.settings.epochs, on_step=self.score.observer(job.model, job.prunable))
        job.evaluate("dense", 0.0)
        teacher = dense_teacher(job, self.distill)
        job.set_mask(self.select.select(self.score, job.score_inputs("prune"), self.sparsity))
        before = job.score_test()
        apply_fate(job, self.reinit)
        job.train("finetune", self.finetune_epochs, loss_fn=self.distill.loss_fn(teacher))
        job.evaluate("pruned", self.sparsity, before_finetune=before, finetune_epochs=self.finetune_epochs)
