"""Selection: which weights go, given a score. The one way to turn scores into a mask at a measured target.

Selection ranks only the weights (or units) still alive, so a score of any sign (GraSP's w * Hg is often
below -1) never prunes more than asked, and weights already pruned stay pruned and count towards the target.

- `Unstructured`: single weights, each layer to the target (`layerwise`) or one threshold over all layers
  (`global`). Ranking follows torch.nn.utils.prune: `topk(..., largest=False)` with round(sparsity * n)
  weights removed, so with magnitude scores the masks equal `l1_unstructured` / `global_unstructured`'s.
  Unlike torch's `amount`, `sparsity` is the total fraction of zeros, counting weights already pruned.
  Layerwise, `distribution` sets each layer's share: `uniform` (every layer at the target), `er` or `erk`
  (Erdős–Rényi densities, Mocanu et al. 2018, and their kernel form, Evci et al. 2020; `layer_sparsities`).
- `Units`: whole output units (the rows of a Linear weight, the filters of a Conv) by the score's unit
  scores; with magnitude, the L2 norm of the unit's weights, as torch.nn.utils.prune.ln_structured(n=2,
  dim=0) ranks them. `sparsity` still counts all prunable weights, the protected output layer's included:
  layerwise, every candidate layer loses the same share f of its units, f = sparsity * all weights /
  candidate weights, so the total reaches the target within one unit per layer; globally, units leave in
  order of score until the pruned weights come closest to round(sparsity * all weights). A target that
  would leave a layer without a unit is refused before training (`max_sparsity`), and so is a layerwise
  target that whole units cannot reach within the record contract's tolerance (`check_target`: the line names
  the nearest reachable targets); a global one lands as close as the scores allow and the level is marked
  `off_target` when it misses.
- `NM`: N:M semi-structured sparsity, the n lowest of every m consecutive input weights of each output row;
  it lands only on k/m, so it refuses other targets, and a schedule's steps between them, before training.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from prune_lab.errors import UserError
from prune_lab.masks import Mask
from prune_lab.pruners.scores import Score, ScoreInputs
from prune_lab.record import tolerance

SCOPES = ("layerwise", "global")
Shapes = Mapping[str, tuple[int, ...]]  # prunable parameter name -> its weight's shape
Target = float | Mapping[str, float]  # overall, or per layer (layerwise unstructured only: imp's layer rates)


def check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise UserError(f"pruner scope={scope!r} is not one of {SCOPES}; e.g. pruner.select.scope=global")


def _prune_more(scores: Tensor, keep: Tensor, count: int) -> Tensor:
    """`keep` ([n], bool) minus the `count` lowest `scores` ([n]) among the live (kept) weights only.

    Dead weights never compete: a score of any sign cannot rank a live weight under a pruned one, so
    exactly `count` more weights go."""
    out = keep.clone()
    if count <= 0:
        return out
    live = keep.nonzero().squeeze(1)  # [live]
    lowest = torch.topk(scores[live].float(), count, largest=False).indices
    out[live[lowest]] = False
    return out


def rankable(scores: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Scores replaced by their rank over all layers (0 = lowest): the same order within and across layers,
    kept through `_prune_more`'s float32 comparison, where float64 scores (SynFlow's, spanning tens of
    orders of magnitude) would collapse into ties."""
    flat = torch.cat([s.reshape(-1).double() for s in scores.values()])
    ranks = torch.empty(flat.shape, dtype=torch.float32, device=flat.device)
    ranks[torch.argsort(flat, stable=True)] = torch.arange(len(flat), dtype=torch.float32, device=flat.device)
    parts = torch.split(ranks, [s.numel() for s in scores.values()])
    return {n: r.view(s.shape) for (n, s), r in zip(scores.items(), parts)}


def prune_lowest(scores: Mapping[str, Tensor], mask: Mask, sparsity: Target, scope: str) -> Mask:
    """Remove the lowest-scoring live weights until `sparsity` of all weights (per layer, or over all) is pruned.

    Weights the mask already prunes stay pruned and count towards the target: a layer of n weights ends
    with exactly round(sparsity * n) pruned (layerwise; `sparsity` may give each layer its own), or all
    layers together with round(sparsity * N) (global), unless more were pruned already."""
    check_scope(scope)
    if any(s.dtype == torch.float64 for s in scores.values()):
        scores = rankable(scores)
    if scope == "layerwise":
        out = {}
        for n, s in scores.items():
            keep = mask.tensors[n].reshape(-1)
            target = sparsity[n] if isinstance(sparsity, Mapping) else sparsity
            wanted = round(target * s.numel()) - int((~keep).sum())
            out[n] = _prune_more(s.reshape(-1), keep, wanted).view_as(s)
        return Mask(out)
    if isinstance(sparsity, Mapping):
        raise ValueError("per-layer targets need scope=layerwise")
    flat = torch.cat([s.reshape(-1) for s in scores.values()])
    keep_flat = torch.cat([mask.tensors[n].reshape(-1) for n in scores])
    wanted = round(sparsity * flat.numel()) - int((~keep_flat).sum())
    keep_flat = _prune_more(flat, keep_flat, wanted)
    out, offset = {}, 0
    for n, s in scores.items():
        out[n] = keep_flat[offset : offset + s.numel()].view_as(s)
        offset += s.numel()
    return Mask(out)


class Selection(ABC):
    """Turns a score into a mask at a target sparsity of all prunable weights. Pure: the model is not changed."""

    granularity: ClassVar[str] = "weight"  # what goes: single weights, or whole units

    @abstractmethod
    def select(self, score: Score, inputs: ScoreInputs, sparsity: Target) -> Mask:
        """A mask at `sparsity` (within one weight, or unit, per layer) that keeps pruned weights pruned."""

    def max_sparsity(self, shapes: Shapes) -> float:
        """The highest sparsity this selection reaches on weights of these shapes (unstructured: any < 1)."""
        return 1.0

    def takes_layer_targets(self) -> bool:
        """Whether `select` takes a target per layer (imp's layer rates)."""
        return False

    def check_target(self, shapes: Shapes, sparsity: float, schedule: str) -> None:
        """Refuse (UserError, before training) a target this selection cannot land on. Single weights land on
        any target within half a weight per layer (the record contract's tolerance)."""
        return None

    def check_steps(self, shapes: Shapes, steps: list[float], schedule: str, hint: str) -> None:
        """Refuse (UserError, before training) a schedule's intermediate target (`steps`, the final one excluded)
        that this selection cannot land on; `hint`: what to set in the schedule instead. Default: any."""
        return None

    def empties(self, shapes: Shapes, sparsity: float) -> list[str]:
        """The layers this selection prunes whole at `sparsity`, whatever the scores: certain layer collapse,
        refused before training (prune_lab.collapse). [] where the scores decide (global ranking) or every layer
        keeps a weight by construction (units: max_sparsity)."""
        return []


def er_raw(shape: tuple[int, ...]) -> float:
    """Erdős–Rényi (Mocanu et al. 2018): density ∝ (n_in + n_out) / (n_in · n_out). A torch weight is
    [out, in, *kernel]; the kernel dims do not count (rigl: the last two of TF's [*kernel, in, out])."""
    n_out, n_in = shape[0], shape[1]
    return (n_in + n_out) / (n_in * n_out)


def erk_raw(shape: tuple[int, ...]) -> float:
    """Erdős–Rényi-Kernel (Evci et al. 2020, RigL): density ∝ sum(shape) / prod(shape), kernel dims included
    (the same as ER for a Linear weight)."""
    return sum(shape) / math.prod(shape)


# distribution -> a layer's raw density (scaled by one ε over the layers); uniform: every layer at the target.
DISTRIBUTIONS = {"uniform": None, "er": er_raw, "erk": erk_raw}


def layer_sparsities(shapes: Shapes, sparsity: float, distribution: str) -> dict[str, float]:
    """Each layer's sparsity for an overall `sparsity`, as google-research/rigl's
    `sparse_utils.get_sparsities(method="erdos_renyi" | "erdos_renyi_kernel")` computes it (erk_power_scale 1,
    no custom sparsities): find ε with Σ ε·raw_l·N_l = the kept weights of the sparse layers; while ε·raw
    exceeds 1 for the largest raw density, make those layers dense (their pruned share goes to the rest:
    the right-hand side loses their floor(sparsity·N_l) zeros) and solve again. uniform: `sparsity` everywhere."""
    raw_of = DISTRIBUTIONS[distribution]
    if raw_of is None:
        return {n: sparsity for n in shapes}
    raw = {n: raw_of(tuple(s)) for n, s in shapes.items()}
    dense: set[str] = set()
    while True:
        rhs, divisor = 0.0, 0.0
        for n, s in shapes.items():
            size = math.prod(s)
            zeros = math.floor(sparsity * size)  # rigl's get_n_zeros
            if n in dense:
                rhs -= zeros
            else:
                rhs += size - zeros
                divisor += raw[n] * size
        if divisor == 0:  # every layer dense: nothing left to carry the target
            return {n: 0.0 for n in shapes}
        eps = rhs / divisor
        highest = max(raw[n] for n in shapes if n not in dense)
        if highest * eps <= 1:
            break
        dense |= {n for n in shapes if n not in dense and raw[n] == highest}
    return {n: 0.0 if n in dense else 1.0 - eps * raw[n] for n in shapes}


@dataclass(frozen=True)
class Unstructured(Selection):
    scope: str = "layerwise"
    # layerwise only: each layer's share of the target (layer_sparsities); uniform is every layer at the target
    distribution: str = "uniform"

    def __post_init__(self) -> None:
        check_scope(self.scope)
        if self.distribution not in DISTRIBUTIONS:
            raise UserError(f"pruner.select.distribution={self.distribution!r} is not one of {tuple(DISTRIBUTIONS)}; "
                            "e.g. pruner/select=erk")
        if self.distribution != "uniform" and self.scope != "layerwise":
            raise UserError(f"pruner.select.distribution={self.distribution} sets each layer's sparsity, "
                            f"scope={self.scope} one threshold over all layers: choose one (pruner/select=global, "
                            f"or pruner.select.scope=layerwise)")

    def takes_layer_targets(self) -> bool:  # imp's layer rates: only where the layers' shares are not set here
        return self.scope == "layerwise" and self.distribution == "uniform"

    def layer_targets(self, shapes: Shapes, sparsity: Target) -> Target:
        """What `prune_lowest` gets: the per-layer sparsities of the distribution, or `sparsity` as given."""
        if self.distribution == "uniform" or isinstance(sparsity, Mapping):
            return sparsity
        return layer_sparsities(shapes, sparsity, self.distribution)

    def landing(self, shapes: Shapes, sparsity: float) -> float:
        """Layerwise: the overall sparsity reached from a dense mask, each layer rounding its pruned count."""
        per = layer_sparsities(shapes, sparsity, self.distribution)
        total = sum(math.prod(s) for s in shapes.values())
        return sum(round(per[n] * math.prod(s)) for n, s in shapes.items()) / total

    def check_target(self, shapes: Shapes, sparsity: float, schedule: str) -> None:
        if self.distribution == "uniform":
            return  # every layer rounds to its own target: within half a weight per layer
        reached = self.landing(shapes, sparsity)
        if abs(reached - sparsity) > tolerance(sum(math.prod(s) for s in shapes.values()), len(shapes)):
            raise UserError(f"sparsity={sparsity} with pruner.select.distribution={self.distribution} would land on "
                            f"{reached:.4f} ({schedule}: its dense layers round their share away); use "
                            f"pruner/select=layerwise, or a sparsity the layers can carry")

    def empties(self, shapes: Shapes, sparsity: float) -> list[str]:
        if self.scope != "layerwise":
            return []  # one global threshold: which layer empties depends on the scores
        per = layer_sparsities(shapes, sparsity, self.distribution)
        return [n for n, s in shapes.items() if round(per[n] * math.prod(s)) >= math.prod(s)]

    def select(self, score: Score, inputs: ScoreInputs, sparsity: Target) -> Mask:
        shapes = {n: tuple(t.shape) for n, t in inputs.mask.tensors.items()}
        return prune_lowest(score.weights(inputs), inputs.mask, self.layer_targets(shapes, sparsity), self.scope)


@dataclass(frozen=True)
class Units(Selection):
    """Whole output units go, the lowest unit scores first (structured pruning)."""

    granularity: ClassVar[str] = "unit"
    scope: str = "layerwise"
    # The last prunable layer's rows are the class logits: removing one removes a class.
    skip_output: bool = True

    def __post_init__(self) -> None:
        check_scope(self.scope)

    def candidates(self, names: list[str]) -> list[str]:
        """The layers whose units may go (in module order, the last one is the output layer)."""
        return names[:-1] if self.skip_output and len(names) > 1 else names

    def max_sparsity(self, shapes: Shapes) -> float:
        """The highest sparsity that leaves every layer at least one unit (and the output layer whole)."""
        total = sum(math.prod(s) for s in shapes.values())
        removable = sum(math.prod(shapes[n]) // shapes[n][0] * (shapes[n][0] - 1)
                        for n in self.candidates(list(shapes)))
        return removable / total

    def layer_drops(self, shapes: Shapes, sparsity: float) -> dict[str, int]:
        """Layerwise: how many units each candidate layer loses, the same share f of each layer's units with
        f = sparsity * all weights / candidate weights, rounded, never the last unit (max_sparsity refuses)."""
        candidates = self.candidates(list(shapes))
        total = sum(math.prod(s) for s in shapes.values())
        share = sparsity * total / sum(math.prod(shapes[n]) for n in candidates)
        return {n: min(round(share * shapes[n][0]), shapes[n][0] - 1) for n in candidates}

    def landing(self, shapes: Shapes, sparsity: float) -> float:
        """The sparsity layerwise unit selection reaches from a dense mask when asked for `sparsity`."""
        drops = self.layer_drops(shapes, sparsity)
        return sum(k * math.prod(shapes[n][1:]) for n, k in drops.items()) / sum(math.prod(s) for s in shapes.values())

    def reachable(self, shapes: Shapes) -> list[float]:
        """Every sparsity layerwise unit selection can land on: its value between consecutive rounding points
        (a layer of `out` units changes its count at shares (j + 1/2) / out)."""
        candidates = self.candidates(list(shapes))
        total = sum(math.prod(s) for s in shapes.values())
        scale = sum(math.prod(shapes[n]) for n in candidates) / total  # share -> sparsity
        points = sorted({(j + 0.5) / shapes[n][0] for n in candidates for j in range(shapes[n][0])})
        shares = [0.0] + [(a + b) / 2 for a, b in zip(points, points[1:])] + [points[-1] + 1e-6]
        return sorted({self.landing(shapes, min(f * scale, self.max_sparsity(shapes))) for f in shares})

    def check_target(self, shapes: Shapes, sparsity: float, schedule: str) -> None:
        if self.scope != "layerwise" or sparsity == 0:
            return  # global: lands as close as the scores allow, and the level is marked off_target if it misses
        total = sum(math.prod(s) for s in shapes.values())
        reached = self.landing(shapes, sparsity)
        if abs(reached - sparsity) <= tolerance(total, len(shapes)):
            return
        values = self.reachable(shapes)
        below = max((v for v in values if v < sparsity), default=None)
        above = min((v for v in values if v > sparsity), default=None)
        nearest = " and ".join(f"sparsity={v:.4f}" for v in (below, above) if v is not None)
        raise UserError(f"sparsity={sparsity} cannot be reached by removing whole units layerwise ({schedule} "
                        f"would land on {reached:.4f}); the nearest reachable targets are {nearest}: use one of "
                        "them, or pruner.select.scope=global (lands as close as the scores allow, marked off_target)")

    def select(self, score: Score, inputs: ScoreInputs, sparsity: Target) -> Mask:
        if isinstance(sparsity, Mapping):
            raise ValueError("unit selection takes one overall target")
        mask = inputs.mask
        shapes = {n: t.shape for n, t in mask.tensors.items()}
        candidates = self.candidates(list(shapes))
        unit_scores = score.units(inputs)
        scores = {}
        for n in candidates:  # units with no survivor score -inf: they are gone already and go first
            alive = mask.tensors[n].reshape(shapes[n][0], -1).any(1)
            scores[n] = torch.where(alive, unit_scores[n].float(), torch.tensor(-math.inf, device=alive.device))
        drop = {n: torch.zeros_like(s, dtype=torch.bool) for n, s in scores.items()}  # units to remove: [out]
        if self.scope == "layerwise":
            for n, k in self.layer_drops(shapes, sparsity).items():
                if k > 0:
                    drop[n][torch.topk(scores[n], k, largest=False).indices] = True
        else:
            self._drop_globally(mask, sparsity, scores, drop)
        out = dict(mask.tensors)
        for n, d in drop.items():
            out[n] = mask.tensors[n] & ~d.view(-1, *([1] * (mask.tensors[n].dim() - 1)))
        return Mask(out)

    @staticmethod
    def _drop_globally(mask: Mask, sparsity: float, scores: dict[str, Tensor], drop: dict[str, Tensor]) -> None:
        total = sum(t.numel() for t in mask.tensors.values())
        already = sum(int((~t).sum()) for t in mask.tensors.values())
        wanted = round(sparsity * total) - already  # weights still to prune
        if wanted <= 0:
            return
        flat = torch.cat(list(scores.values()))  # every candidate unit: [units]
        # What removing each unit adds to the pruned count: its still-kept weights.
        gain = torch.cat([mask.tensors[n].reshape(mask.tensors[n].shape[0], -1).sum(1) for n in scores])
        # Each layer's strongest unit never goes: a layer without units cuts the network (max_sparsity refuses).
        last = torch.cat([torch.nn.functional.one_hot(s.argmax(), s.numel()).bool() for s in scores.values()])
        order = torch.argsort(flat, stable=True)
        order = order[~last[order]]
        pruned = torch.cat([torch.zeros(1, dtype=gain.dtype, device=gain.device), gain[order].cumsum(0)])
        k = int(torch.argmin((pruned - wanted).abs()))  # units to remove: the count closest to the target
        chosen = torch.zeros_like(flat, dtype=torch.bool)
        chosen[order[:k]] = True
        offset = 0
        for n, s in scores.items():
            drop[n] |= chosen[offset : offset + s.numel()]
            offset += s.numel()


@dataclass(frozen=True)
class NM(Selection):
    """N:M semi-structured sparsity (NVIDIA Ampere's 2:4; Mishra et al. 2021): in every group of `m` consecutive
    input weights of an output row, the `n` lowest-scored go (so 2:4 keeps 2 of every 4, at sparsity 0.5).

    Layout: a Linear weight [out, in] is grouped along in_features, the layout
    torch.sparse.to_sparse_semi_structured takes (a 2-D [rows, cols] tensor with 2 of every 4 consecutive
    elements of each row nonzero, cols the GEMM's reduction axis). A Conv weight [out, in, kh, kw] is
    reshaped to [out, in*kh*kw], torch's own contiguous flatten: the reduction axis of its im2col GEMM with
    NCHW, so a 2:4 conv mask is the 2:4 mask of that GEMM's weight matrix. (NVIDIA's ASP groups along the
    input channels of the [kh, kw, out, in] layout that NHWC kernels use instead; masks of the two layouts
    differ for a conv with kh*kw > 1.) A layer whose in*kh*kw is not a multiple of `m` is refused before
    training, naming it (protect it with prunable.exclude).

    Targets: the run's target must be n/m. A schedule that prunes in steps (imp's rounds, gradual's events,
    rounds at init) lands each step on k/m (k of every group) and refuses a step between them."""

    n: int = 2  # weights pruned per group at the run's target: sparsity = n / m
    m: int = 4  # group size: consecutive input weights of one output row

    def __post_init__(self) -> None:
        for key, value in (("n", self.n), ("m", self.m)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise UserError(f"pruner.select.{key}={value!r} must be a positive whole number (2:4: n=2 m=4)")
        if self.n >= self.m:
            raise UserError(f"pruner.select.n={self.n} of every m={self.m} would prune every weight; use n < m")

    def rows(self, shape: tuple[int, ...]) -> tuple[int, int]:
        """[out, in, *kernel] -> (out, in * prod(kernel)): the rows whose consecutive weights form groups."""
        return shape[0], math.prod(shape[1:])

    def max_sparsity(self, shapes: Shapes) -> float:
        return (self.m - 1) / self.m

    def reachable(self) -> list[float]:
        return [k / self.m for k in range(self.m)]

    def _refuse_off_grid(self, sparsity: float, what: str) -> None:
        k = sparsity * self.m
        if abs(k - round(k)) > 1e-9:
            below, above = math.floor(k), math.ceil(k)
            nearest = " and ".join(f"sparsity={j / self.m:g} (pruner.select.n={j})" for j in (below, above)
                                   if 0 < j < self.m)
            raise UserError(f"{what} sparsity={sparsity:g} is not reachable by {self.n}:{self.m} selection, which "
                            f"prunes a whole number of every {self.m} weights (k/{self.m}); the nearest reachable "
                            f"are {nearest}")

    def check_target(self, shapes: Shapes, sparsity: float, schedule: str) -> None:
        odd = [f"{name} ({self.rows(tuple(s))[1]} inputs)" for name, s in shapes.items()
               if self.rows(tuple(s))[1] % self.m]
        if odd:
            raise UserError(f"pruner/select=nm groups every m={self.m} consecutive inputs, but "
                            f"{', '.join(odd)} has an input size that is not a multiple of {self.m}: protect it "
                            f"with 'prunable.exclude=[{odd[0].split(' ')[0]}]' or choose another pruner.select.m")
        if sparsity == 0:
            return
        self._refuse_off_grid(sparsity, "the target")
        if round(sparsity * self.m) != self.n:
            k = round(sparsity * self.m)
            raise UserError(f"sparsity={sparsity:g} prunes {k} of every {self.m} weights but pruner.select.n={self.n} "
                            f"({self.n}:{self.m} is sparsity={self.n / self.m:g}): set pruner.select.n={k}, or "
                            f"sparsity={self.n / self.m:g}")

    def check_steps(self, shapes: Shapes, steps: list[float], schedule: str, hint: str) -> None:
        for step in steps:
            if step > 0:
                try:
                    self._refuse_off_grid(step, f"{schedule} prunes through an intermediate target:")
                except UserError as e:
                    raise UserError(f"{e}; {hint}" if hint else str(e)) from None

    def select(self, score: Score, inputs: ScoreInputs, sparsity: Target) -> Mask:
        if isinstance(sparsity, Mapping):
            raise ValueError("n:m selection takes one overall target")
        k = round(sparsity * self.m)  # weights pruned per group (check_target: sparsity is k/m)
        out = {}
        for name, s in score.weights(inputs).items():
            keep = inputs.mask.tensors[name]
            rows, cols = self.rows(tuple(s.shape))
            groups = s.double().reshape(rows, cols // self.m, self.m)  # [out, groups, m]
            alive = keep.reshape(rows, cols // self.m, self.m)
            # A pruned weight ranks lowest in its group, so it is among the k that go: pruned weights stay pruned.
            ranked = torch.where(alive, groups, torch.tensor(-math.inf, device=groups.device))
            drop = torch.topk(ranked, k, dim=2, largest=False).indices  # [out, groups, k]
            group_keep = alive.clone()
            group_keep.scatter_(2, drop, False)
            out[name] = group_keep.reshape(keep.shape)
        return Mask(out)


def select_mask(score: Score, selection: Selection, weights: Mapping[str, Tensor], mask: Mask, sparsity: Target,
                generator: torch.Generator | None = None) -> Mask:
    """For scores that read only the weights (magnitude, random, LAMP): a mask from plain tensors, no model."""
    return selection.select(score, ScoreInputs(None, mask, generator=generator, params=weights), sparsity)
