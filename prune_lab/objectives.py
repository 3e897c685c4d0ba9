"""What a finished run returns to a Hydra sweeper (Optuna, Ax, Nevergrad): one number computed from its levels.

The `objective` config group picks it; the CLI's task function returns `objective(results)`, so
`python -m prune_lab -m hydra/sweeper=optuna ...` optimises it. Use validation metrics: tuning on the test
split would report a test accuracy chosen on the test split. A new objective is a callable
`(results.json as a dict) -> float` plus one YAML in conf/objective/ with `_target_`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from prune_lab.errors import UserError


def _value(level: Mapping[str, Any], metric: str) -> float:
    value = level.get(metric)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        numeric = sorted(k for k, v in level.items() if isinstance(v, (int, float)) and not isinstance(v, bool))
        raise UserError(f"objective.metric={metric!r} is not a number in the levels of this run; "
                        f"choose one of {', '.join(numeric)}")
    return float(value)


@dataclass(frozen=True)
class LastLevel:
    """`metric` of the run's last level: the pruned network at its target sparsity (for IMP, the last round)."""

    metric: str = "val_acc"

    def __call__(self, results: Mapping[str, Any]) -> float:
        return _value(results["levels"][-1], self.metric)


@dataclass(frozen=True)
class AreaUnderCurve:
    """Area under `metric` against measured sparsity over the run's levels (trapezoids), divided by the
    sparsity span: the mean `metric` over the sparsities the run visited, in the metric's own units.
    One level alone (no span) gives its value."""

    metric: str = "val_acc"

    def __call__(self, results: Mapping[str, Any]) -> float:
        points = sorted((float(level["sparsity"]), _value(level, self.metric)) for level in results["levels"])
        span = points[-1][0] - points[0][0]
        if span <= 0:
            return sum(v for _, v in points) / len(points)
        area = sum((s1 - s0) * (v0 + v1) / 2 for (s0, v0), (s1, v1) in zip(points, points[1:]))
        return area / span


def build_objective(config: Mapping[str, Any]) -> Any:
    """The run's objective from its resolved config (`objective` group); LastLevel(val_acc) when absent."""
    from hydra.utils import instantiate

    node = config.get("objective")
    if not node:
        return LastLevel()
    try:
        objective = instantiate(dict(node))
    except Exception as e:  # a bad _target_ or argument: one line, before any training
        reason = " ".join(str(e.__cause__ or e).split())  # Hydra's reasons span lines; an error is one line
        raise UserError(f"objective: cannot build {node.get('_target_')}: {reason}") from e
    if not isinstance(getattr(objective, "metric", ""), str):
        raise UserError(f"objective.metric={objective.metric!r} must be a level's key, e.g. val_acc")
    return objective
