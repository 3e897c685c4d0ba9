"""Evaluation of a model on a split, and the record of one sparsity level."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune_lab.data.splits import TensorSet
from prune_lab.masks import measured_sparsity


@dataclass(frozen=True)
class Score:
    acc: float
    loss: float


def evaluate(model: nn.Module, data: TensorSet, batch_size: int = 4096) -> Score:
    """Accuracy and mean cross-entropy over a split (NaN for an empty split)."""
    n = len(data)
    if n == 0:
        return Score(float("nan"), float("nan"))
    was_training = model.training
    model.eval()
    correct = torch.zeros((), device=data.y.device)
    loss = torch.zeros((), device=data.y.device)
    with torch.no_grad():
        for i in range(0, n, batch_size):
            logits = model(data.x[i : i + batch_size])
            y = data.y[i : i + batch_size]
            loss += F.cross_entropy(logits.float(), y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    model.train(was_training)
    return Score(correct.item() / n, loss.item() / n)  # one host sync per split, not per batch


# Linear mode connectivity (Frankle et al. 2020): the error along the straight line between two networks, at
# these many evenly spaced points, ends included (the paper: 30; the floor: 11, which holds the midpoint)
BARRIER_POINTS = 11


def error_barrier(model: nn.Module, a: Mapping[str, Tensor], b: Mapping[str, Tensor], data: TensorSet,
                  batch_size: int = 4096, points: int = BARRIER_POINTS) -> float:
    """Instability: the highest test error (percentage points) on the line (1 - t) a + t b, t in [0, 1] at
    `points` even steps, less the mean of the two ends' errors (Frankle et al. 2020, "Linear mode connectivity
    and the lottery ticket hypothesis"). 0 when the two are linearly connected. Floating-point entries of the
    state dicts are interpolated (weights, batch-norm statistics); the rest (counters) are a's. Both share one
    mask, so every pruned weight stays zero on the line. Leaves `model` holding b."""
    errors = []
    for t in torch.linspace(0, 1, points).tolist():
        model.load_state_dict({k: (1 - t) * v + t * b[k] if v.is_floating_point() else v for k, v in a.items()})
        errors.append(100 * (1 - evaluate(model, data, batch_size).acc))
    return max(errors) - (errors[0] + errors[-1]) / 2


@dataclass
class Level:
    """One evaluated sparsity level: what was asked for, what was measured, and how well it does."""

    name: str
    target_sparsity: float
    sparsity: float  # measured: fraction of prunable weights that are exactly zero
    test_acc: float
    test_loss: float
    val_acc: float
    val_loss: float
    params_total: int
    params_nonzero: int
    prunable_total: int
    prunable_nonzero: int
    layers: dict[str, dict[str, float]]  # parameter name -> numel, nonzero, sparsity
    extra: dict[str, Any] = field(default_factory=dict)  # method-specific: round, score before fine-tuning, ...
    collapsed_layers: list[str] = field(default_factory=list)  # prunable layers with no nonzero weight left

    def to_json(self) -> dict[str, Any]:
        record = asdict(self)
        record.update(record.pop("extra"))
        return record


def measure_level(
    model: nn.Module, prunable: list[str], name: str, target: float, test: Score, val: Score, **extra: Any
) -> Level:
    layers = measured_sparsity(model, prunable)
    prunable_total = sum(layer.numel for layer in layers.values())
    prunable_nonzero = sum(layer.nonzero for layer in layers.values())
    params = [p.detach() for p in model.parameters()]
    return Level(
        name=name,
        target_sparsity=target,
        sparsity=1.0 - prunable_nonzero / prunable_total,
        test_acc=test.acc,
        test_loss=test.loss,
        val_acc=val.acc,
        val_loss=val.loss,
        params_total=sum(p.numel() for p in params),
        params_nonzero=sum(int(torch.count_nonzero(p)) for p in params),
        prunable_total=prunable_total,
        prunable_nonzero=prunable_nonzero,
        layers={
            n: {"numel": s.numel, "nonzero": s.nonzero, "sparsity": s.sparsity} for n, s in layers.items()
        },
        extra=dict(extra),
        collapsed_layers=[n for n, s in layers.items() if s.numel and s.nonzero == 0],
    )
