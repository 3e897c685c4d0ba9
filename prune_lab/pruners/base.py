"""A `Pruner` is a pruning method's schedule: when to train, score, select and rewind.

Which weights matter is a `Score` (prune_lab.pruners.scores), which of them go a `Selection`
(prune_lab.pruners.selection), what the survivors become `apply_fate` (prune_lab.pruners.survivors):
a schedule holds a score and a selection and composes with any of them.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prune_lab.data.splits import Splits
from prune_lab.errors import UserError
from prune_lab.pruners.scores import Score
from prune_lab.pruners.selection import Selection, Shapes

if TYPE_CHECKING:
    from prune_lab.job import Job


def check_sparsity(value: object, key: str = "sparsity") -> float:
    """A target sparsity must be a number in [0, 1): the fraction of prunable weights that are zero."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise UserError(f"{key}={value!r} must be a number in [0, 1), e.g. {key}=0.8 for 80% of weights zero")
    if not 0.0 <= value < 1.0:
        raise UserError(
            f"{key}={value} is outside [0, 1): it is the fraction of prunable weights set to zero (0.9 keeps 10%)"
            + (f"; if you meant {value}%, write {key}={value / 100:g}" if 1 <= value <= 100 else "")
        )
    return float(value)


class Pruner(ABC):
    """A pruning method: trains, prunes and evaluates a `Job` on its own schedule."""

    @property
    @abstractmethod
    def target(self) -> float:
        """The sparsity the method ends at: the one number results.json records as the run's target."""

    def check(self, shapes: Shapes, data: Splits) -> None:
        """Refuse (UserError) before any training a target this method cannot reach on these weights, or a
        score that cannot work with this schedule or data. The default accepts everything."""
        return None

    def final_selection(self) -> Selection | None:
        """The selection that prunes every layer towards the one final `target`, or None: no selection, or
        per-layer targets of the method's own (imp's layer_rates). Certain layer collapse is asked of it."""
        return None

    @abstractmethod
    def run(self, job: Job) -> None:
        """Drive the job to the end, recording every sparsity level with `job.evaluate`."""


def check_reachable(target: float, reachable: float, method: str, hint: str = "") -> None:
    """One line when `target` is above the highest sparsity `method` can reach on this model."""
    if target > reachable + 1e-12:
        raise UserError(f"sparsity={target:g} cannot be reached by {method} on this model: at most "
                        f"{math.floor(reachable * 1e4) / 1e4:g}; lower sparsity{hint}")


def check_scored(score: Score, select: Selection, target: float, shapes: Shapes, data: Splits, *,
                 trains_before_scoring: bool, schedule: str, steps: Iterable[float] = (), hint: str = "") -> None:
    """The checks every scored schedule makes before training: the target, and the schedule's intermediate
    targets on the way (`steps`; `hint`: what to set so that there are none), are reachable by the selection,
    and the score works with this schedule and data."""
    check_reachable(target, select.max_sparsity(shapes),
                    f"{schedule} with {type(select).__name__.lower()} selection")
    select.check_target(shapes, target, schedule)
    select.check_steps(shapes, [t for t in steps if t != target], schedule, hint)
    score.check(data, trains_before_scoring, schedule)
