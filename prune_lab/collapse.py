"""Layer collapse: a level at which some prunable layer has no surviving weight cuts the network in two.

Measured at every level (`collapsed_layers` in results.json, `measure_level`), and refused before any
training when the sizes alone make it certain: the target keeps fewer weights than there are prunable
layers (any pruner), or the selection itself says it empties a layer at that target whatever the score
(`Selection.empties`: layerwise unstructured selection rounding a whole layer away).
"""

from __future__ import annotations

import math

from prune_lab.errors import UserError
from prune_lab.pruners.selection import Selection, Shapes


def certain_collapse(shapes: Shapes, sparsity: float, selection: Selection | None) -> str | None:
    """Why the pruner's final level (at `sparsity`, its target) must leave some layer empty, or None when that
    is not certain. `selection`: the one that prunes every layer towards that one target (Pruner.final_selection;
    None for a pruner without one, or with per-layer targets of its own, e.g. imp's layer_rates)."""
    if not shapes or not 0 < sparsity < 1:
        return None
    sizes = {n: math.prod(s) for n, s in shapes.items()}
    total = sum(sizes.values())
    most_kept = total - math.floor(sparsity * total)
    if most_kept < len(sizes):
        return (f"sparsity={sparsity:g} keeps at most {most_kept} of the {total} prunable weights, fewer than the "
                f"{len(sizes)} prunable layers, so some layer keeps no weight (layer collapse)")
    empty = selection.empties(shapes, sparsity) if selection is not None else []
    if empty:
        return f"sparsity={sparsity:g} with {selection!r} prunes every weight of {', '.join(empty)} (layer collapse)"
    return None


def refuse_certain_collapse(shapes: Shapes, sparsity: float, selection: Selection | None) -> None:
    reason = certain_collapse(shapes, sparsity, selection)
    if reason is not None:
        raise UserError(f"{reason}; lower the sparsity, or protect a layer with prunable.exclude=[NAME]")
