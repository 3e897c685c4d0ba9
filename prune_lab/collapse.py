"""Layer collapse: a level at which some prunable layer has no surviving weight cuts the network in two.

Measured at every level (`collapsed_layers` in results.json, `measure_level`), and refused before any
training when the sizes alone make it certain: the target keeps fewer weights than there are prunable
layers (any pruner), or layerwise unstructured selection rounds a whole layer away (whatever the score).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from prune_lab.errors import UserError

# The selection that prunes each layer to round(sparsity * numel) with scope=layerwise (prune_lab.pruners.selection).
LAYERWISE_ROUNDING = ("prune_lab.pruners.selection.Unstructured",)


def certain_collapse(sizes: Mapping[str, int], pruner: Mapping[str, Any]) -> str | None:
    """Why the pruner's final level must leave some layer empty, or None when that is not certain.

    `pruner.sparsity` is the final target of the pruners that have one (one-shot, iterative, at init); a
    pruner without it (dense, schedules by rate) is never refused here, only flagged when it happens."""
    sparsity = pruner.get("sparsity")
    if not sizes or isinstance(sparsity, bool) or not isinstance(sparsity, (int, float)) or not 0 < sparsity < 1:
        return None
    total = sum(sizes.values())
    most_kept = total - math.floor(sparsity * total)
    if most_kept < len(sizes):
        return (f"sparsity={sparsity:g} keeps at most {most_kept} of the {total} prunable weights, fewer than the "
                f"{len(sizes)} prunable layers, so some layer keeps no weight (layer collapse)")
    select = pruner.get("select")
    if isinstance(select, Mapping) and select.get("_target_") in LAYERWISE_ROUNDING \
            and select.get("scope") == "layerwise" and not pruner.get("layer_rates"):  # one target for every layer
        empty = [name for name, n in sizes.items() if round(sparsity * n) >= n]
        if empty:
            return (f"sparsity={sparsity:g} with scope=layerwise prunes every weight of {', '.join(empty)} "
                    "(layer collapse)")
    return None


def refuse_certain_collapse(sizes: Mapping[str, int], pruner: Mapping[str, Any]) -> None:
    reason = certain_collapse(sizes, pruner)
    if reason is not None:
        raise UserError(f"{reason}; lower the sparsity, or protect a layer with prunable.exclude=[NAME]")
