"""Knowledge distillation (Hinton et al. 2015): train a pruned student against a dense teacher's soft labels.

loss = (1 - alpha) * CE(student, labels) + alpha * T^2 * KL(softmax(teacher / T) || softmax(student / T)).
The T^2 keeps the soft term's gradients on the scale of the hard term's whatever the temperature T.
alpha = 0 is plain cross-entropy: the teacher is not even queried.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune_lab.errors import UserError
from prune_lab.training import LossFn, cross_entropy


def distillation_loss(logits: Tensor, y: Tensor, teacher_logits: Tensor, alpha: float,
                      temperature: float) -> Tensor:
    """The blended loss for student `logits` [B, classes], labels `y` [B], `teacher_logits` [B, classes]."""
    hard = F.cross_entropy(logits, y)
    if alpha == 0:
        return hard
    student_log_p = F.log_softmax(logits / temperature, dim=1)
    teacher_log_p = F.log_softmax(teacher_logits / temperature, dim=1)
    soft = F.kl_div(student_log_p, teacher_log_p, reduction="batchmean", log_target=True)
    return (1 - alpha) * hard + alpha * temperature**2 * soft


@dataclass(frozen=True)
class Distillation:
    """`pruner.distill`: how much a (re)trained pruned network learns from the dense teacher's soft labels."""

    alpha: float = 0.0  # weight of the soft loss in [0, 1]; 0 = plain cross-entropy, no teacher
    temperature: float = 4.0  # softens both distributions; Hinton et al. use 2-20

    def __post_init__(self) -> None:
        alpha, temperature = self.alpha, self.temperature
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
            raise UserError(f"pruner.distill.alpha={alpha!r} must be in [0, 1] (0: off), e.g. 0.5")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) \
                or not (temperature > 0 and math.isfinite(temperature)):
            raise UserError(f"pruner.distill.temperature={temperature!r} must be a positive number, e.g. 4")

    @property
    def active(self) -> bool:
        """Whether a teacher is needed at all."""
        return self.alpha > 0

    def loss_fn(self, teacher: nn.Module | None) -> LossFn:
        """The trainer's loss: cross-entropy when inactive, else the blend against the frozen `teacher`."""
        if not self.active:
            return cross_entropy
        if teacher is None:
            raise ValueError("distillation with alpha > 0 needs the dense teacher")

        def loss(logits: Tensor, y: Tensor, x: Tensor) -> Tensor:
            with torch.no_grad():
                teacher_logits = teacher(x)
            return distillation_loss(logits, y, teacher_logits, self.alpha, self.temperature)

        return loss


def frozen_copy(model: nn.Module) -> nn.Module:
    """The dense teacher: a copy of `model` now, in eval mode, with no gradients."""
    teacher = copy.deepcopy(model).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher
