"""Pruning at initialisation: score the untrained network, prune to the target, then train it sparse.

Any score fits except those that accumulate over training. One round scores once (SNIP, GraSP). Several
rounds (SynFlow's 100) follow an exponential schedule: after round k of R the sparsity is
1 - (1 - sparsity)^(k / R), each round scoring the network as masked so far. The target is reached before
the first training step.

Controls (`controls`), the sanity checks of pruning at initialisation, each a level of the same run beside the
method's own, with `branch` = its name: the same training budget and loss from the same initial weights, its own
phase, its own random stream. Frankle et al. 2021 ("Pruning Neural Networks at Initialization: Why are We
Missing the Mark?", ICLR), Section 5, ablate each method three ways, at the method's sparsity:
- `layerwise_shuffle` ("randomly shuffling"): the method's mask shuffled at random within each layer, trained from
  the same initial weights (their code's `--randomize_layerwise`: the mask of each layer permuted, the network
  loaded from the same initialisation): each layer keeps its count of weights, not their places.
- `reinitialize` ("reinitialization"): the method's own mask, the weights sampled anew from the initialisation
  distribution (their `--reinitialize`: a fresh network from the model's initialiser).
- `invert_scores` ("inversion"): the method's own selection and rounds with the scores' order reversed: the
  highest-scored weights go (their `--prune_highest`; with global selection the per-layer ratios change too).
And Su et al. 2020 ("Sanity-Checking Pruning Methods: Random Tickets can Win the Jackpot", NeurIPS): a random
mask with given layerwise ratios trained from initialisation ("random tickets"), here with the method's ratios:
- `random_ratios`: random pruning of each layer to the method's per-layer sparsity, the same initial weights.
  A layer's random subset of a given size is what `layerwise_shuffle` draws too: the two have the same
  distribution (through different code: the `random` score with layerwise targets) and differ only by chance.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prune_lab.data.splits import Splits
from prune_lab.distillation import Distillation
from prune_lab.errors import UserError
from prune_lab.masks import Mask
from prune_lab.pruners.base import Pruner, check_scored, check_sparsity
from prune_lab.pruners.iterative import shuffled
from prune_lab.pruners.scores import Inverted, Random, Score
from prune_lab.pruners.selection import Selection, Shapes, Unstructured
from prune_lab.pruners.survivors import apply_fate, check_fate
from prune_lab.pruners.teacher import teacher_before_pruning

if TYPE_CHECKING:
    from prune_lab.job import Job


def round_sparsity(sparsity: float, k: int, rounds: int) -> float:
    """The exponential schedule: after round k of `rounds`, keep (1 - sparsity)^(k / rounds)."""
    return 1.0 - (1.0 - sparsity) ** (k / rounds)


@dataclass(frozen=True)
class Control:
    """A sanity check of a mask found at initialisation: `mask(pruner, job, method_mask)` is the control's mask,
    computed from the initial weights before any training; `fate` what its survivors start from (`original`:
    the run's initial weights; `random`: a fresh draw from the init scheme, prune_lab.pruners.survivors)."""

    mask: Callable[[AtInit, Job, Mask], Mask]
    fate: str
    source: str


def _shuffled_within_layers(pruner: AtInit, job: Job, mask: Mask) -> Mask:
    return shuffled(mask, job.generator("control", "layerwise_shuffle"))


def _same_mask(pruner: AtInit, job: Job, mask: Mask) -> Mask:
    return mask


def _inverted_scores(pruner: AtInit, job: Job, mask: Mask) -> Mask:
    # the same scoring inputs (batches) as the method's, round by round: the method's scores, reversed
    return pruner.prune(job, Inverted(pruner.score))


def _random_at_method_ratios(pruner: AtInit, job: Job, mask: Mask) -> Mask:
    ratios = {n: float((~keep).sum()) / keep.numel() for n, keep in mask.tensors.items()}  # pruned share per layer
    return Unstructured("layerwise").select(Random(), job.score_inputs("control", "random_ratios"), ratios)


# The controls of pruning at initialisation, by name (`pruner.controls=[...]`): see the module's docstring.
CONTROLS: dict[str, Control] = {
    "layerwise_shuffle": Control(_shuffled_within_layers, "original", "Frankle et al. 2021, Section 5"),
    "reinitialize": Control(_same_mask, "random", "Frankle et al. 2021, Section 5"),
    "invert_scores": Control(_inverted_scores, "original", "Frankle et al. 2021, Section 5"),
    "random_ratios": Control(_random_at_method_ratios, "original", "Su et al. 2020"),
}


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
    controls: list[str] = field(default_factory=list)  # of CONTROLS, each a level beside the method's

    def __post_init__(self) -> None:
        self.sparsity = check_sparsity(self.sparsity)
        check_fate(self.reinit)
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise UserError(f"pruner.rounds={self.rounds!r} must be a positive number of scoring rounds")
        self.controls = list(self.controls or [])
        for control in self.controls:
            if control not in CONTROLS:
                raise UserError(f"pruner.controls has {control!r}; choose from {list(CONTROLS)}")
        if len(set(self.controls)) < len(self.controls):
            raise UserError(f"pruner.controls={self.controls} names a control twice; each runs once")
        if self.controls and self.reinit != "original":
            raise UserError(f"pruner.controls are controls of the method's mask on its initial weights, which needs "
                            f"pruner.reinit=original (got {self.reinit}); reinitialize is one of the controls")
        if self.controls and self.select.granularity != "weight":
            raise UserError("pruner.controls shuffle and draw single weights: they need single-weight selection "
                            "(pruner.select: Unstructured), not whole units")

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

    def prune(self, job: Job, score: Score | None = None) -> Mask:
        """The mask at the target by `score` (default: the method's), computed from the current (initial) weights
        and the job's mask (all ones before the method prunes); the model is not changed."""
        mask = job.mask
        for k in range(1, self.rounds + 1):
            target = round_sparsity(self.sparsity, k, self.rounds)
            mask = self.select.select(score or self.score, job.score_inputs("saliency", k, mask=mask), target)
        return mask

    def run(self, job: Job) -> None:
        mask = self.prune(job)  # from the initial weights, before any training (a teacher's included)
        controls = {c: CONTROLS[c].mask(self, job, mask) for c in self.controls}  # also at init, untrained
        teacher = teacher_before_pruning(job, self.distill, self.epochs)  # ends rewound to the initial weights
        job.set_mask(mask)
        before = job.score_test()
        # The survivors still hold their initial values, so keep and original agree; rewinding anyway hands
        # the mask to a mask-aware init (init=sparsity_aware). random: a fresh draw (Frankle et al. 2021).
        apply_fate(job, "random" if self.reinit == "random" else "original")
        budget = job.epochs_trained  # before the sparse training: a control's level has the method's budget
        job.train("sparse", self.epochs, loss_fn=self.distill.loss_fn(teacher))
        job.evaluate("pruned", self.sparsity, before_training=before, rounds=self.rounds)
        for name, control_mask in controls.items():
            with job.branch():  # the method's weights, mask and budget come back: the run ends as the method
                job.epochs_trained = budget  # trained from the initial weights, as the method was
                job.set_mask(control_mask)
                apply_fate(job, CONTROLS[name].fate, "control", name)  # the initial weights, or a fresh draw
                before = job.score_test()
                job.train(name, self.epochs, loss_fn=self.distill.loss_fn(teacher))
                job.evaluate(name, self.sparsity, branch=name, before_training=before, rounds=self.rounds)
