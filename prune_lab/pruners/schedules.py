"""The simplest schedules: no pruning, and one-shot pruning after training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prune_lab.distillation import Distillation, frozen_copy
from prune_lab.pruners.base import Criterion, Pruner, Shapes, check_reachable, check_sparsity
from prune_lab.pruners.survivors import apply_fate, check_fate

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
    """Train dense, prune to `sparsity` in one step, give survivors their fate, fine-tune (optionally
    against the dense network's soft labels)."""

    criterion: Criterion
    sparsity: float
    finetune_epochs: int
    reinit: str = "keep"
    distill: Distillation = field(default_factory=Distillation)

    def __post_init__(self) -> None:
        self.sparsity = check_sparsity(self.sparsity)
        check_fate(self.reinit)

    @property
    def target(self) -> float:
        return self.sparsity

    def check(self, shapes: Shapes) -> None:
        check_reachable(self.sparsity, self.criterion.max_sparsity(shapes), f"pruner {type(self.criterion).__name__}")

    def run(self, job: Job) -> None:
        job.train("dense", job.settings.epochs)
        job.evaluate("dense", 0.0)
        teacher = frozen_copy(job.model) if self.distill.active else None
        mask = self.criterion.compute_mask(job.weights(), job.mask, self.sparsity, job.generator("prune"))
        job.set_mask(mask)
        before = job.score_test()
        apply_fate(job, self.reinit)
        job.train("finetune", self.finetune_epochs, loss_fn=self.distill.loss_fn(teacher))
        job.evaluate("pruned", self.sparsity, before_finetune=before, finetune_epochs=self.finetune_epochs)
