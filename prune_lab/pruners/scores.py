"""Scores (importance): how much each prunable weight, or each whole unit, matters. The one scoring contract.

A `Score` reads `ScoreInputs` (the model, the mask in force, and, for scores that need them, training
batches and a random stream) and returns one number per weight, [the weight's shape]; the lowest go. For
structured selection it also scores whole output units, [out] per layer: by default the L2 norm of each
unit's surviving weight scores (torch.nn.utils.prune.ln_structured's ranking for magnitude). A score never
changes the model; which weights go is the selection's (prune_lab.pruners.selection), when is the
schedule's. Any schedule takes any score through `pruner/score=NAME` (conf/pruner/score/).

A score that accumulates over training (movement) hands the schedule a `StepHook` (`observer`) for each
phase that precedes a pruning step; what it accumulates is the hook's state, so it is in every checkpoint.

- Magnitude (Han et al. 2015): |w|.
- Random: uniform draws (the control).
- Inverted: another score negated (the inversion ablation of Frankle et al. 2021).
- SNIP (Lee et al. 2019): |g * w| on a few training batches.
- GraSP (Wang et al. 2020): w * (H g); the lowest go (the weights whose removal least reduces gradient flow).
- SynFlow (Tanaka et al. 2020): |w * dR/dw| of R = sum of the outputs of |w| on an all-ones input, float64.
- Movement (Sanh, Wolf & Rush 2020): S = -sum over steps of w * dL/dw, accumulated while training.
- LAMP (Lee et al. 2021): w_u^2 / sum of w_v^2 over the layer's weights v at least as large as u.
- Taylor (Molchanov et al. 2019): first-order Taylor importance; of a unit, the mean over batches of
  (sum over its weights of g * w)^2; of a weight, the mean of (g * w)^2.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune_lab.data.splits import Splits
from prune_lab.errors import UserError
from prune_lab.masks import Mask
from prune_lab.training import StepHook

Scores = dict[str, Tensor]  # parameter name -> one score per weight [its shape], or per unit [out]


@dataclass
class ScoreInputs:
    """What a score may read. `data` and `generator` are there for the scores that need them; `params` stands in
    for the model's weights where a score reads nothing else (tests, `select_mask`)."""

    model: nn.Module | None
    mask: Mask  # the mask in force: its names are the prunable weights, in module order
    data: Splits | None = None
    generator: torch.Generator | None = None
    params: Mapping[str, Tensor] | None = None

    def weights(self) -> dict[str, Tensor]:
        if self.params is not None:
            return {n: self.params[n].detach() for n in self.mask.names()}
        params = dict(self.network().named_parameters())
        return {n: params[n].detach() for n in self.mask.names()}

    def network(self) -> nn.Module:
        if self.model is None:
            raise ValueError("this score runs the network: ScoreInputs needs the model")
        return self.model

    def batches(self, count: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
        """`count` training batches drawn without replacement from a permutation of `generator`."""
        if self.data is None or self.generator is None:
            raise ValueError("this score reads training batches: ScoreInputs needs data and a generator")
        perm = torch.randperm(len(self.data.train), generator=self.generator).to(self.data.train.y.device)
        for i in range(count):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            if len(idx):
                yield self.data.train.x[idx], self.data.train.y[idx]


def row_norms(scores: Tensor, keep: Tensor) -> Tensor:
    """L2 norm of each unit's (output row's) surviving scores: [out] from [out, ...]."""
    return (scores * keep).reshape(scores.shape[0], -1).float().norm(dim=1)


class Score(ABC):
    """How much each weight matters; the lowest scores are pruned first."""

    needs_data: ClassVar[bool] = False  # reads training batches (and labels)
    needs_training: ClassVar[bool] = False  # accumulates while the network trains (an `observer`)

    @abstractmethod
    def weights(self, inputs: ScoreInputs) -> Scores:
        """One score per weight of each name in `inputs.mask`: [the weight's shape]."""

    def units(self, inputs: ScoreInputs) -> Scores:
        """One score per output unit of each layer: [out]. Default: the L2 norm of its live weights' scores."""
        scores = self.weights(inputs)
        return {n: row_norms(s, inputs.mask.tensors[n]) for n, s in scores.items()}

    def observer(self, model: nn.Module, names: list[str]) -> StepHook | None:
        """A fresh accumulator of the weights `names` of `model` for one training phase before a pruning step,
        or None (nothing to observe)."""
        return None

    def check(self, data: Splits, trains_before_scoring: bool, schedule: str) -> None:
        """Refuse (UserError, before any training) a pairing with this schedule or data that cannot work."""
        name = type(self).__name__.lower()
        if self.needs_training and not trains_before_scoring:
            raise UserError(f"pruner/score={name} accumulates its scores while the network trains, but {schedule} "
                            "scores before any training; use it with pruner=agp, gradual, magnitude or imp")


def _masked_copy(model: nn.Module, mask: Mask, dtype: torch.dtype | None = None) -> tuple[nn.Module, list[Tensor]]:
    """A copy of `model` with the mask applied (the model, its batch-norm statistics and gradients are left
    untouched), and its named prunable weights in mask order."""
    clone = copy.deepcopy(model)
    if dtype is not None:
        clone = clone.to(dtype)
    mask.apply_(clone)
    for p in clone.parameters():
        p.grad = None
    params = dict(clone.named_parameters())
    return clone, [params[n] for n in mask.names()]


BATCH_NORM_MODES = ("eval", "train")


def _check_batch_norm(batch_norm: object) -> None:
    if batch_norm not in BATCH_NORM_MODES:
        raise UserError(f"pruner.score.batch_norm={batch_norm!r} must be one of {BATCH_NORM_MODES}")


def _scoring_mode(clone: nn.Module, batch_norm: str) -> None:
    """Batch norm while a score runs the network: `eval` (running statistics; SNIP's authors' code scores with
    `is_train: False`) or `train` (each batch's own statistics; GraSP's authors' code leaves the model in train
    mode). Only the copy changes mode: the model's running statistics are never updated by scoring."""
    clone.train(batch_norm == "train")


def _check_batches(batches: object) -> int:
    if isinstance(batches, bool) or not isinstance(batches, int) or batches < 1:
        raise UserError(f"pruner.score.batches={batches!r} must be a positive number of training batches")
    return batches


@dataclass(frozen=True)
class Magnitude(Score):
    def weights(self, inputs: ScoreInputs) -> Scores:
        return {n: w.abs() for n, w in inputs.weights().items()}


@dataclass(frozen=True)
class Random(Score):
    def weights(self, inputs: ScoreInputs) -> Scores:
        if inputs.generator is None:
            raise ValueError("the Random score needs a generator for reproducibility")
        return {n: torch.rand(w.shape, generator=inputs.generator).to(w.device) for n, w in inputs.weights().items()}


@dataclass(frozen=True)
class Inverted(Score):
    """Another score's order reversed: its highest-scored weights (and units) go first. The inversion ablation of
    Frankle et al. 2021 (ICLR), Section 5: the method's own selection, pruning the weights it would have kept
    (their code's `--prune_highest`)."""

    score: Score

    def weights(self, inputs: ScoreInputs) -> Scores:
        return {n: -s for n, s in self.score.weights(inputs).items()}

    def units(self, inputs: ScoreInputs) -> Scores:
        return {n: -s for n, s in self.score.units(inputs).items()}


@dataclass(frozen=True)
class SNIP(Score):
    needs_data: ClassVar[bool] = True
    batches: int = 1  # SNIP scores one mini-batch
    batch_size: int = 128
    batch_norm: str = "eval"  # the authors' code (namhoonlee/snip-public) scores with is_train: False

    def __post_init__(self) -> None:
        _check_batches(self.batches)
        _check_batch_norm(self.batch_norm)

    def weights(self, inputs: ScoreInputs) -> Scores:
        clone, weights = _masked_copy(inputs.network(), inputs.mask)
        _scoring_mode(clone, self.batch_norm)
        for x, y in inputs.batches(self.batches, self.batch_size):
            F.cross_entropy(clone(x), y).backward()  # gradients add up over the batches
        return {n: (w.grad * w).detach().abs() for n, w in zip(inputs.mask.names(), weights)}


@dataclass(frozen=True)
class GraSP(Score):
    """As the authors' code (alecwangcq/GraSP, pruner/GraSP.py) computes it: each scored batch is split into two
    halves, g is the sum of the halves' gradients and H g the sum of the halves' Hessian-vector products. Without
    batch norm in train mode that is 4x the whole batch's w * (H g): the same ranking. With it, each half is
    normalised by its own statistics, as in the authors' code."""

    needs_data: ClassVar[bool] = True
    batches: int = 1
    batch_size: int = 128
    temperature: float = 200.0  # logits / T before the loss, as in the authors' code: keeps H g informative
    batch_norm: str = "train"  # the authors' code leaves the network in train mode while it scores

    def __post_init__(self) -> None:
        _check_batches(self.batches)
        _check_batch_norm(self.batch_norm)

    def weights(self, inputs: ScoreInputs) -> Scores:
        clone, weights = _masked_copy(inputs.network(), inputs.mask)
        _scoring_mode(clone, self.batch_norm)
        batches = [(x[half], y[half]) for x, y in inputs.batches(self.batches, self.batch_size)
                   for half in (slice(None, len(y) // 2), slice(len(y) // 2, None)) if len(y[half])]
        g = [torch.zeros_like(w) for w in weights]
        for x, y in batches:  # g = dL/dw, no graph
            grads = torch.autograd.grad(F.cross_entropy(clone(x) / self.temperature, y), weights)
            g = [a + b for a, b in zip(g, grads)]
        for x, y in batches:  # d(g . dL/dw)/dw = H g, accumulated in .grad
            loss = F.cross_entropy(clone(x) / self.temperature, y)
            grads = torch.autograd.grad(loss, weights, create_graph=True)
            sum((a.detach() * b).sum() for a, b in zip(g, grads)).backward()
        return {n: (w.detach() * w.grad).detach() for n, w in zip(inputs.mask.names(), weights)}


@dataclass(frozen=True)
class SynFlow(Score):
    def check(self, data: Splits, trains_before_scoring: bool, schedule: str) -> None:
        super().check(data, trains_before_scoring, schedule)
        if not data.train.x.is_floating_point():  # the dtype only: e.g. node indices into a graph
            raise UserError(f"pruner/score=synflow feeds an all-ones input tensor, but {data.info.name} samples "
                            f"are {data.train.x.dtype} indices (the features live in the model); use "
                            "pruner/score=snip or grasp for this dataset")

    def weights(self, inputs: ScoreInputs) -> Scores:
        if inputs.data is None:
            raise ValueError("SynFlow needs the data's input shape: ScoreInputs needs data")
        # float64: the products over layers overflow float32 in deep networks
        clone, weights = _masked_copy(inputs.network(), inputs.mask, torch.float64)
        clone.eval()  # batch norm uses its running statistics: no batch, no data
        with torch.no_grad():
            for p in clone.parameters():
                p.abs_()
        ones = torch.ones((1, *inputs.data.info.input_shape), dtype=torch.float64, device=weights[0].device)
        clone(ones).sum().backward()
        return {n: (w.grad * w).detach().abs() for n, w in zip(inputs.mask.names(), weights)}


@dataclass
class MovementObserver(StepHook):
    """Accumulates S -= w * dL/dw at every step of one phase, with the weights the gradient belongs to
    (before the optimizer moves them); pruned weights are zero, so they add nothing."""

    scores: dict[str, Tensor] = field(default_factory=dict)  # name -> S, [the weight's shape], float32

    def after_backward(self, model: nn.Module) -> None:
        for n, p in model.named_parameters():
            if n in self.scores and p.grad is not None:
                self.scores[n].sub_(p.grad.float() * p.detach().float())

    def state_dict(self) -> dict[str, Any]:
        return {"scores": {n: s.detach().cpu().clone() for n, s in self.scores.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for n, s in state.get("scores", {}).items():
            if n in self.scores:
                self.scores[n].copy_(s)


@dataclass
class Movement(Score):
    """Movement pruning's scores: weights moving away from zero matter, those moving towards it go.

    The scores of the phase observed last are used (a schedule observes each phase that ends in pruning:
    the dense training of one-shot, each round of imp, the one phase of agp and gradual)."""

    needs_training: ClassVar[bool] = True
    _observer: MovementObserver | None = field(default=None, init=False, repr=False, compare=False)

    def observer(self, model: nn.Module, names: list[str]) -> StepHook:
        params = dict(model.named_parameters())
        self._observer = MovementObserver({n: torch.zeros_like(params[n], dtype=torch.float32) for n in names})
        return self._observer

    def weights(self, inputs: ScoreInputs) -> Scores:
        if self._observer is None:
            raise RuntimeError("movement scores were read before any training was observed")
        return {n: self._observer.scores[n].clone() for n in inputs.mask.names()}


def lamp_scores(weight: Tensor) -> Tensor:
    """LAMP: each weight's w^2 over the sum of w^2 of the layer's weights at least as large, [weight's shape].
    Ties (pruned zeros included) rank by position, as the authors' sort does."""
    w2 = weight.detach().float().reshape(-1) ** 2
    order = torch.argsort(w2, stable=True)  # ascending: position i in `order` is the i-th smallest
    sorted_w2 = w2[order]
    tail = torch.flip(torch.cumsum(torch.flip(sorted_w2, [0]), 0), [0])  # sum over this and all larger: [n]
    out = torch.empty_like(w2)
    out[order] = sorted_w2 / tail.clamp_min(torch.finfo(torch.float32).tiny)
    return out.view_as(weight)


@dataclass(frozen=True)
class LAMP(Score):
    """Layer-adaptive magnitude scores; with global selection they set each layer's sparsity (Lee et al. 2021).
    Within a layer the order is magnitude's, so layerwise selection gives magnitude's masks."""

    def weights(self, inputs: ScoreInputs) -> Scores:
        return {n: lamp_scores(w * inputs.mask.tensors[n]) for n, w in inputs.weights().items()}


@dataclass(frozen=True)
class Taylor(Score):
    """First-order Taylor importance (Molchanov et al. 2019), from `batches` training batches: the squared
    loss change the first-order expansion predicts for removing a unit (or a weight), averaged over batches."""

    needs_data: ClassVar[bool] = True
    batches: int = 8
    batch_size: int = 128

    def __post_init__(self) -> None:
        _check_batches(self.batches)

    def _per_batch(self, inputs: ScoreInputs) -> Iterator[dict[str, Tensor]]:
        """g * w of each batch: {name: [the weight's shape]}."""
        clone, weights = _masked_copy(inputs.network(), inputs.mask)
        for x, y in inputs.batches(self.batches, self.batch_size):
            grads = torch.autograd.grad(F.cross_entropy(clone(x), y), weights)
            yield {n: (g * w).detach() for n, g, w in zip(inputs.mask.names(), grads, weights)}

    def weights(self, inputs: ScoreInputs) -> Scores:
        return _mean(({n: c**2 for n, c in gw.items()}) for gw in self._per_batch(inputs))

    def units(self, inputs: ScoreInputs) -> Scores:
        return _mean({n: (c * inputs.mask.tensors[n]).reshape(c.shape[0], -1).sum(1) ** 2 for n, c in gw.items()}
                      for gw in self._per_batch(inputs))


def _mean(parts: Iterator[Mapping[str, Tensor]]) -> Scores:
    total: Scores = {}
    count = 0
    for part in parts:
        count += 1
        for n, t in part.items():
            total[n] = total[n] + t if n in total else t.clone()
    return {n: t / count for n, t in total.items()}
