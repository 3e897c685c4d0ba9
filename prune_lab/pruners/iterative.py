"""Iterative pruning with rewinding: the Lottery Ticket procedure (Frankle & Carbin 2019), with any score.

Round 0 trains the dense network. Each round r >= 1 prunes `rate` of the weights still there (by magnitude
unless `pruner/score=` names another score; a score that accumulates over training observes each round's
training, round 0's included) (so a
layer with rate p is at sparsity 1 - (1 - p)^r), gives the survivors their fate (rewind them to
initialisation, or to iteration k: "late rewinding", Frankle et al. 2020), and retrains. The last round
stops exactly at the target: it is a fractional round t in (R-1, R] with the same per-layer law
1 - (1 - p)^t, so layers with their own rate keep their proportions. A last round worth less than a
quarter of a round, or one that would prune fewer weights than there are layers, is merged into the
round before it (which then goes straight to the target): no retraining is spent on a sliver. Every
round is a level.

Controls (`controls`), as the papers ran them, at every round and without retraining the ticket (OpenLTH's
branches of a lottery level): `randomly_reinitialize` trains the ticket's own mask from a fresh random
init (Frankle & Carbin 2019, Figs. 1 and 3); `randomly_prune` trains a random mask with the ticket's
per-layer sparsities from the ticket's rewind point. Their levels carry `branch` and the round's target.
`reinit=redraw_each_round` is a different procedure (each round's mask is found on a redrawn, retrained
network, so its masks drift from the ticket's); it is kept under that name for the reinit study.
"""

from __future__ import annotations

import fnmatch
import math
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from prune_lab.data.splits import Splits
from prune_lab.distillation import Distillation
from prune_lab.errors import UserError
from prune_lab.evaluation import error_barrier
from prune_lab.job import copy_state
from prune_lab.masks import Mask
from prune_lab.pruners.base import Pruner, check_scored, check_sparsity
from prune_lab.pruners.scores import Magnitude, Score
from prune_lab.pruners.selection import Selection, Shapes, Unstructured
from prune_lab.pruners.survivors import apply_fate
from prune_lab.pruners.teacher import dense_teacher
from prune_lab.training import FunctionHook, StepHook, combine, per_epoch

if TYPE_CHECKING:
    from prune_lab.job import Job, State

REWIND = re.compile(r"^(init|(epoch|step):(\d+))$")
SNAPSHOT = "rewind-point"  # the late-rewinding target, stored so a resumed run finds it
# Survivors after each round's pruning: rewind (the ticket), keep the trained values, or redraw them.
REINITS = {"original": "original", "keep": "keep", "redraw_each_round": "random"}  # -> prune_lab.pruners.survivors
CONTROLS = ("randomly_reinitialize", "randomly_prune")
MERGE_BELOW = 0.25  # a last round smaller than this share of a round joins the round before


def parse_rewind(rewind: str) -> tuple[str, int]:
    """'init' -> ('step', 0); 'epoch:K' / 'step:K' -> (unit, K)."""
    match = REWIND.match(str(rewind))
    if match is None:
        raise UserError(f"pruner.rewind={rewind!r} must be init, epoch:K or step:K, e.g. epoch:2")
    return ("step", 0) if match.group(1) == "init" else (match.group(2), int(match.group(3)))


def check_rate(rate: object, key: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate < 1:
        raise UserError(f"{key}={rate!r} must be a fraction in [0, 1) of the remaining weights, e.g. 0.2")
    return float(rate)


def shuffled(mask: Mask, generator: torch.Generator) -> Mask:
    """Each layer's mask randomly permuted: the same number of survivors per layer, at random places."""
    out = {}
    for n, keep in mask.tensors.items():
        flat = keep.reshape(-1)
        perm = torch.randperm(flat.numel(), generator=generator).to(flat.device)
        out[n] = flat[perm].view_as(keep)
    return Mask(out)


def layer_sparsity(rate: float, t: float) -> float:
    """Sparsity after t rounds that each prune `rate` of what remains."""
    return 1.0 - (1.0 - rate) ** t


def final_round(rates: dict[str, float], sizes: dict[str, int], target: float) -> float:
    """The (fractional) round count t at which the weighted sparsity of all layers reaches `target`."""
    total = sum(sizes.values())

    def overall(t: float) -> float:
        return sum(sizes[n] * layer_sparsity(rates[n], t) for n in sizes) / total

    hi = 1.0
    while overall(hi) < target:
        hi *= 2
    lo = 0.0
    for _ in range(100):  # bisection: overall() is increasing in t
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if overall(mid) < target else (lo, mid)
    return hi


@dataclass
class Iterative(Pruner):
    """Rounds of train -> prune `rate` of the remaining weights -> rewind -> retrain, until `sparsity`."""

    sparsity: float
    epochs: int  # per round, round 0 (dense) included
    score: Score = field(default_factory=Magnitude)  # the paper's
    select: Selection = field(default_factory=Unstructured)  # layerwise, as the paper's LeNet and Conv-N
    rate: float = 0.2
    layer_rates: dict[str, float] | None = None  # shell pattern on parameter names -> rate (None: none)
    rewind: str = "init"
    reinit: str = "original"
    controls: list[str] = field(default_factory=list)  # of CONTROLS, run beside every round
    start_at_step_zero: bool = False  # randomly_reinitialize from step 0, not the rewind step (OpenLTH's flag)
    distill: Distillation = field(default_factory=Distillation)
    stability: bool = False  # instability of every level: a second copy from the rewind point (Frankle et al. 2020)

    def __post_init__(self) -> None:
        self.sparsity = check_sparsity(self.sparsity)
        self.rate = check_rate(self.rate, "pruner.rate")
        if self.rate == 0:
            raise UserError("pruner.rate=0 never prunes; use a fraction in (0, 1), e.g. pruner.rate=0.2")
        self.layer_rates = {str(k): check_rate(v, f"pruner.layer_rates.{k}")
                            for k, v in (self.layer_rates or {}).items()}
        if self.layer_rates and not self.select.takes_layer_targets():
            raise UserError("pruner.layer_rates needs pruner/select=layerwise (uniform unstructured; global, er, erk, "
                            "nm and unit selection set the layers' shares themselves); or drop them with "
                            "pruner.layer_rates=null")
        if self.reinit == "random":
            raise UserError("pruner=imp pruner.reinit=random is not the Lottery Ticket control: the paper retrains "
                            "the ticket's mask from a fresh init (pruner.controls=[randomly_reinitialize]); "
                            "for a fresh draw before each round's retraining say pruner.reinit=redraw_each_round")
        if self.reinit not in REINITS:
            raise UserError(f"pruner.reinit={self.reinit!r} is not one of {tuple(REINITS)}")
        self.controls = list(self.controls or [])
        for control in self.controls:
            if control not in CONTROLS:
                raise UserError(f"pruner.controls has {control!r}; choose from {list(CONTROLS)}")
        if self.controls and self.reinit != "original":
            raise UserError(f"pruner.controls are controls of the winning ticket, which needs "
                            f"pruner.reinit=original (got {self.reinit})")
        self.rewind_at = parse_rewind(self.rewind)
        if self.rewind_at != ("step", 0) and self.reinit != "original":
            raise UserError(f"pruner.rewind={self.rewind} rewinds survivors, which needs "
                            f"pruner.reinit=original (got {self.reinit}); or set pruner.rewind=init")
        if not isinstance(self.start_at_step_zero, bool):
            raise UserError(f"pruner.start_at_step_zero={self.start_at_step_zero!r} must be true or false")
        if not isinstance(self.stability, bool):
            raise UserError(f"pruner.stability={self.stability!r} must be true or false")
        if self.stability and self.reinit != "original":
            raise UserError(f"pruner.stability=true trains two copies of each level from the rewind point, which "
                            f"needs pruner.reinit=original (got {self.reinit})")
        if isinstance(self.epochs, bool) or not isinstance(self.epochs, int) or self.epochs < 0:
            raise UserError(f"pruner.epochs={self.epochs!r} must be a whole number of epochs per round")

    def final_selection(self) -> Selection | None:
        return None if self.layer_rates else self.select  # layer_rates: each layer has its own target

    @property
    def target(self) -> float:
        return self.sparsity

    def check(self, shapes: Shapes, data: Splits) -> None:
        plan = self.plan({n: math.prod(s) for n, s in shapes.items()})  # refuses what it cannot reach
        check_scored(self.score, self.select, self.sparsity, shapes, data, trains_before_scoring=True,
                     schedule="pruner imp", steps=[overall for overall, _ in plan],
                     hint=f"set pruner.rate={self.sparsity:g} (one round straight to the target)")

    # --- the plan: every number is decided before training, from sizes alone --------------------------
    def rates_for(self, names: list[str]) -> dict[str, float]:
        for pattern in self.layer_rates:
            if not any(fnmatch.fnmatchcase(n, pattern) for n in names):
                raise UserError(f"pruner.layer_rates pattern {pattern!r} matches no prunable weight; "
                                f"the prunable weights are {names}")
        return {n: next((r for p, r in self.layer_rates.items() if fnmatch.fnmatchcase(n, p)), self.rate)
                for n in names}

    def plan(self, sizes: dict[str, int]) -> list[tuple[float, dict[str, float]]]:
        """(overall target, per-layer target) of each round 1..R; the last one is exactly `sparsity`."""
        if self.sparsity == 0:
            return []
        rates = self.rates_for(list(sizes))
        reachable = sum(s for n, s in sizes.items() if rates[n] > 0) / sum(sizes.values())
        if self.sparsity >= reachable:
            raise UserError(f"sparsity={self.sparsity} cannot be reached: layers with rate 0 hold "
                            f"{1 - reachable:.1%} of the prunable weights; lower it or raise their rate")
        t_end = final_round(rates, sizes, self.sparsity)
        ts = [float(r) for r in range(1, math.ceil(t_end - 1e-9))] + [t_end]  # full rounds, then the last

        def pruned(t: float) -> int:  # weights pruned after t rounds, as each layer rounds its count
            return sum(round(layer_sparsity(rates[n], t) * sizes[n]) for n in sizes)

        if len(ts) > 1 and (ts[-1] - ts[-2] < MERGE_BELOW or pruned(ts[-1]) - pruned(ts[-2]) < len(sizes)):
            del ts[-2]  # the sliver joins the round before, which goes straight to the target
        total = sum(sizes.values())
        out = []
        for t in ts:
            per_layer = {n: layer_sparsity(rates[n], t) for n in sizes}
            overall = self.sparsity if t == t_end else sum(sizes[n] * per_layer[n] for n in sizes) / total
            out.append((overall, per_layer))
        return out

    def prune(self, job: Job, r: int, overall: float, per_layer: dict[str, float]) -> Mask:
        """Round r's mask: each layer to its own target (layerwise), else the overall one."""
        target = per_layer if self.select.takes_layer_targets() else overall
        return self.select.select(self.score, job.score_inputs("prune", r), target)

    def observe(self, job: Job, *hooks: StepHook | None) -> StepHook | None:
        """The hooks of one training phase whose weights a round prunes: the score's observer, and `hooks`."""
        return combine(self.score.observer(job.model, job.prunable), *hooks)

    # --- the schedule -----------------------------------------------------------------------------
    def run(self, job: Job) -> None:
        plan = self.plan({n: w.numel() for n, w in job.weights().items()})
        rewind_step = self.rewind_step(job)
        job.train("dense", self.epochs, on_step=self.observe(job, self.snapshot_at(job, rewind_step)))
        rewind_point = job.initial_state if rewind_step == 0 else job.load_snapshot(SNAPSHOT)
        job.evaluate("dense", 0.0, round=0, **self.instability(job, 0, rewind_point, rewind_step, None))
        teacher = dense_teacher(job, self.distill)
        for r, (overall, per_layer) in enumerate(plan, start=1):
            job.set_mask(self.prune(job, r, overall, per_layer))
            before = job.score_test()
            apply_fate(job, REINITS[self.reinit], "round", r, to=rewind_point)
            # Late rewinding retrains steps k..end of the same schedule (OpenLTH), not a fresh phase from step 0.
            start = rewind_step if self.reinit == "original" else 0
            job.train(f"round-{r}", self.epochs, loss_fn=self.distill.loss_fn(teacher), start_step=start,
                      on_step=self.observe(job) if r < len(plan) else None)  # the last round prunes no more
            targets = {"layer_targets": per_layer} if self.select.takes_layer_targets() else {}
            targets.update(self.instability(job, r, rewind_point, rewind_step, teacher))
            job.evaluate(f"round-{r}", overall, round=r, before_retrain=before, rewind=self.rewind, **targets)
            self.run_controls(job, r, overall, rewind_point, rewind_step, teacher)

    def run_controls(self, job: Job, r: int, overall: float, rewind_point: State, rewind_step: int,
                     teacher: nn.Module | None) -> None:
        """Each control of round r beside the ticket just evaluated; the job ends as the ticket."""
        for control in self.controls:
            with job.branch():  # the ticket, its mask and its budget come back for the next round
                if control == "randomly_reinitialize":  # the ticket's mask, a fresh random init
                    job.reinitialize("control", r)
                else:  # randomly_prune: the ticket's per-layer sparsities at random places, the rewind point
                    job.set_mask(shuffled(job.mask, job.generator("randomly_prune", r)))
                    job.rewind(rewind_point)
                # OpenLTH's branches: both start at the ticket's rewind step (randomly_reinitialize at step 0
                # only with start_at_step_zero), so a control has the ticket's training budget.
                start = 0 if control == "randomly_reinitialize" and self.start_at_step_zero else rewind_step
                job.train(f"{control}-{r}", self.epochs, loss_fn=self.distill.loss_fn(teacher), start_step=start)
                job.evaluate(f"{control}-{r}", overall, round=r, branch=control, rewind=self.rewind)

    def instability(self, job: Job, r: int, rewind_point: State, rewind_step: int,
                    teacher: nn.Module | None) -> dict[str, float]:
        """{"instability": the error barrier between the level just trained and a copy of it trained from the
        same rewind point with the same mask and budget, but another data order and dropout (phase
        `stability-r` draws its own: prune_lab.seeding); {} unless pruner.stability. Frankle et al. 2020: a
        level is stable (barrier about 0) from the rewind point on which IMP finds matching tickets."""
        if not self.stability:
            return {}
        trained = copy_state(job.model)
        with job.branch():  # the level's weights, mask and budget come back for its evaluation
            job.rewind(rewind_point)
            job.train(f"stability-{r}", self.epochs, loss_fn=self.distill.loss_fn(teacher), start_step=rewind_step)
            barrier = error_barrier(job.model, trained, copy_state(job.model), job.data.test,
                                    job.settings.eval_batch_size)
        return {"instability": barrier}

    def rewind_step(self, job: Job) -> int:
        unit, k = self.rewind_at
        steps_per_epoch = per_epoch(len(job.data.train), job.settings.batch_size)
        step = k * steps_per_epoch if unit == "epoch" else k
        if step > self.epochs * steps_per_epoch:
            raise UserError(f"pruner.rewind={self.rewind} is past the end of dense training ({self.epochs} "
                            f"epochs = {self.epochs * steps_per_epoch} steps); rewind to an earlier point")
        return step

    @staticmethod
    def snapshot_at(job: Job, step: int) -> StepHook | None:
        """A step hook that stores the weights after `step` optimizer steps (late rewinding's target)."""
        if step == 0:
            return None

        def hook(done: int, total: int, model: object) -> None:
            if done == step:
                job.save_snapshot(SNAPSHOT)

        return FunctionHook(hook)
