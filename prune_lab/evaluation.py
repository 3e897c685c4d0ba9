"""Evaluation of a model on a split, and the record of one sparsity level."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

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
