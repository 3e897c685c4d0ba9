"""Pruning methods: every option of the `pruner` config group is a `Pruner` here.

A pruner owns its schedule (before, during or after training, or in rounds with rewinding) and what
happens to the surviving weights; it drives a `Job` and records each sparsity level it reaches.
Which weights to remove is a pure `compute_mask` of a `Criterion`, in the spirit of torch.nn.utils.prune.
"""

from prune_lab.pruners.base import Criterion, Pruner, check_sparsity

__all__ = ["Criterion", "Pruner", "check_sparsity"]
