"""Pruning at initialisation: score the untrained network, prune to the target, then train it sparse.

Any score fits except those that accumulate over training. One round scores once (SNIP, GraSP). Several
rounds (SynFlow's 100) follow an exponential schedule: after round k of R the sparsity is
1 - (1 - sparsity)^(k / R), each round scoring the network as masked so far. The target is reached before
the first training step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prune_lab.data.splits import Splits
from prune_lab.distillation import Distillation
from prune_lab.errors import UserError
from prune_lab.masks import Mask
from prune_lab.pruners.base import Pruner, check_scored, check_sparsity
from prune_lab.pruners.scores import Score
from prune_lab.pruners.selection import Selection, Shapes
from prune_lab.pruners.survivors import apply_fate, check_fate
from prune_lab.pruners.teacher import teacher_before_pruning

if TYPE_CHECKING:
    from prune_lab.job import Job


def round_sparsity(sparsity: float, k: int, rounds: int) -> float:
    """The exponential schedule: after round k of `rounds`, keep (1 - sparsity)^(k / rounds)."""
    return 1.0 - (1.0 - sparsity) ** (k / rounds)


@dataclass
class AtInit(Pruner):
    """Prune the initial network by `score` to `sparsity` in `rounds`, then train it for `epochs`."""

    score: Score
    select: Selection
    sparsity: float
    epochs: int
    rounds: int = 1
    reinit: str = "original"
    distill: Distillation = field(default_factory=Distillation)

    def __post_init__(self) -> None:
        self.sparsity = check_sparsity(self.sparsity)
        check_fate(self.reinit)
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise UserError(f"pruner.rounds={self.rounds!r} must be a positive number of scoring rounds")

    def final_selection(self) -> Selection:
        return self.select

    @property
    def target(self) -> float:
        return self.sparsity

    def check(self, shapes: Shapes, data: Splits) -> None:
        check_scored(self.score, self.select, self.sparsity, shapes, data, trains_before_scoring=False,
                     schedule="pruning at initialization",
                     steps=[round_sparsity(self.sparsity, k, self.rounds) for k in range(1, self.rounds)],
                     hint="set pruner.rounds=1 (one round straight to the target)")

    def prune(self, job: Job) -> Mask:
        """The mask at the target, computed from the current (initial) weights; the model is not changed."""
        mask = job.mask
        for k in range(1, self.rounds + 1):
            target = round_sparsity(self.sparsity, k, self.rounds)
            mask = self.select.select(self.score, job.score_inputs("saliency", k, mask=mask), target)
        return mask

    def run(self, job: Job) -> None:
        mask = self.prune(job)  # from the initial weights, before any training (a teacher's included)
        teacher = teacher_before_pruning(job, self.distill, self.epochs)  # ends rewound to the initial weights
        job.set_mask(mask)
        before = job.score_test()
        # The survivors still hold their initial values, so keep and original agree; rewinding anyway hands
        # the mask to a mask-aware init (init=sparsity_aware). random: a fresh draw (Frankle et al. 2021).
        apply_fate(job, "random" if self.reinit == "random" else "original")
        job.train("sparse", self.epochs, loss_fn=self.distill.loss_fn(teacher))
        job.evaluate("pruned", self.sparsity, before_training=before, rounds=self.rounds)
