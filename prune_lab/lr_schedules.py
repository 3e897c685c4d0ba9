"""Learning-rate schedules: every option of the `train/schedule` config group, plus linear warmup.

A schedule is a pure function of the optimizer step: `factor(step, total, steps_per_epoch)` multiplies
`train.lr` before step `step` (0 = the first step) of a phase of `total` steps. The trainer drives it
through torch.optim.lr_scheduler.LambdaLR, whose state goes into every checkpoint, so a resumed phase
continues the same sequence, and late rewinding to step k restarts the schedule at its value at k.
Each phase (dense training, fine-tuning, an IMP round) runs its own schedule from its first step.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Protocol

from prune_lab.errors import UserError
from prune_lab.validate import check_fields, check_range

DURATION = re.compile(r"^(epoch|step):(\d+(?:\.\d+)?)$")


class LRSchedule(Protocol):
    def factor(self, step: int, total: int, steps_per_epoch: int) -> float:
        """The multiplier of train.lr before optimizer step `step` of `total` (steps_per_epoch for epoch units)."""


def parse_duration(text: str | None, key: str) -> tuple[str, float]:
    """None / '0' -> ('step', 0); 'epoch:K' / 'step:K' -> (unit, K)."""
    if text in (None, 0, "0"):
        return ("step", 0.0)
    match = DURATION.match(str(text))
    if match is None:
        raise UserError(f"{key}={text!r} must be epoch:K or step:K (or null), e.g. {key}=epoch:5")
    return match.group(1), float(match.group(2))


def to_steps(duration: tuple[str, float], steps_per_epoch: int) -> int:
    unit, k = duration
    return round(k * steps_per_epoch) if unit == "epoch" else round(k)


@dataclass(frozen=True)
class Constant:
    """train.lr throughout."""

    def factor(self, step: int, total: int, steps_per_epoch: int) -> float:
        return 1.0


@dataclass(frozen=True)
class MultiStep:
    """train.lr times gamma at each milestone (in epochs), e.g. ResNet-20's drops at epochs 80 and 120."""

    milestones: list[float] = field(default_factory=list)
    gamma: float = 0.1

    def __post_init__(self) -> None:
        check_fields(self, "train.schedule")
        object.__setattr__(self, "milestones", sorted(float(m) for m in self.milestones))

    def factor(self, step: int, total: int, steps_per_epoch: int) -> float:
        return self.gamma ** sum(step >= round(m * steps_per_epoch) for m in self.milestones)


@dataclass(frozen=True)
class _Anneal:
    """From train.lr down to `final` x train.lr at the phase's last step, along `curve` (1 at 0, 0 at 1)."""

    final: float = 0.0

    def __post_init__(self) -> None:
        check_fields(self, "train.schedule")
        check_range(self.final, "train.schedule.final", 0, 1, "0.0")

    @staticmethod
    def curve(progress: float) -> float:
        raise NotImplementedError

    def factor(self, step: int, total: int, steps_per_epoch: int) -> float:
        progress = min(1.0, step / total) if total else 1.0
        return self.final + (1.0 - self.final) * self.curve(progress)


@dataclass(frozen=True)
class Cosine(_Anneal):
    """Half a cosine from train.lr down to `final` x train.lr at the phase's last step (Loshchilov & Hutter)."""

    @staticmethod
    def curve(progress: float) -> float:
        return 0.5 * (1.0 + math.cos(math.pi * progress))


@dataclass(frozen=True)
class Linear(_Anneal):
    """A straight line from train.lr to `final` x train.lr at the phase's last step."""

    @staticmethod
    def curve(progress: float) -> float:
        return 1.0 - progress


@dataclass(frozen=True)
class OneCycle:
    """Smith & Topin's one-cycle (torch's OneCycleLR, cosine): from train.lr / div_factor up to train.lr at
    `peak` (a fraction of the phase), then down to train.lr / (div_factor x final_div_factor)."""

    peak: float = 0.3
    div_factor: float = 25.0
    final_div_factor: float = 1e4

    def __post_init__(self) -> None:
        check_fields(self, "train.schedule")
        check_range(self.peak, "train.schedule.peak", 0, 1, "0.3")

    def factor(self, step: int, total: int, steps_per_epoch: int) -> float:
        start, end = 1.0 / self.div_factor, 1.0 / (self.div_factor * self.final_div_factor)
        up = max(1, round(self.peak * total))
        if step <= up:
            return start + (1.0 - start) * 0.5 * (1 - math.cos(math.pi * step / up))
        down = max(1, total - up)
        return end + (1.0 - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - up) / down)))


def lr_factor(schedule: LRSchedule, warmup_steps: int, step: int, total: int, steps_per_epoch: int) -> float:
    """The schedule's factor, times a linear warmup over the first `warmup_steps` steps: (step + 1) / W."""
    warm = min(1.0, (step + 1) / warmup_steps) if warmup_steps else 1.0
    return warm * schedule.factor(step, total, steps_per_epoch)
