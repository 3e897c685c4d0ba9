"""Pruning methods: every option of the `pruner` config group is a `Pruner` (a schedule) here.

A pruner owns its schedule (before, during or after training, or in rounds with rewinding) and what
happens to the surviving weights; it drives a `Job` and records each sparsity level it reaches. Which
weights matter is a `Score` (scores.py, the `pruner/score` group), which of them go a `Selection`
(selection.py), in the spirit of torch.nn.utils.prune; every schedule takes every score.
"""

from prune_lab.pruners.base import Pruner, check_sparsity
from prune_lab.pruners.scores import Score, ScoreInputs
from prune_lab.pruners.selection import Selection

__all__ = ["Pruner", "Score", "ScoreInputs", "Selection", "check_sparsity"]
