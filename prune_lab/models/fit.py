"""Checks that a model fits its data, raised before any training with what to choose instead."""

from __future__ import annotations

from prune_lab.data.splits import DataInfo
from prune_lab.errors import UserError


def require_image(info: DataInfo, model: str, min_side: int = 1) -> tuple[int, int, int]:
    """(channels, height, width) of an image dataset, or a UserError naming a model that fits."""
    if not info.input_shape:  # samples without a shape are node indices of a graph (dataset=cora)
        raise UserError(f"model {model} needs images, but dataset {info.name}'s samples are graph nodes; "
                        "choose model=gcn")
    if len(info.input_shape) != 3:
        raise UserError(
            f"model {model} needs images (channels, height, width), but dataset {info.name} gives feature "
            f"vectors of shape {info.input_shape}; choose an MLP such as model=penguin_mlp, or an image dataset"
        )
    c, h, w = info.input_shape
    if min(h, w) < min_side:
        raise UserError(
            f"model {model} needs images of at least {min_side}x{min_side} pixels, but dataset {info.name} gives "
            f"{h}x{w}; choose a smaller model (e.g. model=lenet_300_100) or a dataset with larger images"
        )
    return c, h, w
