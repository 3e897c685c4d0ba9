"""Any torchvision classification architecture by name: model=torchvision model.name=resnet50.

The network is built untrained (weights come from `init`, or from your own file with init=checkpoint: nothing
is downloaded) with its classifier sized to the dataset's classes. torchvision's ImageNet architectures take
3-channel images; how small an image can be depends on the architecture, so a dummy forward pass at build time
turns a misfit into one line before training.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from prune_lab.data.splits import DataInfo
from prune_lab.errors import UserError
from prune_lab.models.fit import require_image


def torchvision_model(info: DataInfo, name: str = "resnet18") -> nn.Module:
    """torchvision.models.get_model(name, num_classes=<the data's>), checked on one input of the data's shape."""
    import torchvision

    known = torchvision.models.list_models(module=torchvision.models)  # classification models only
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        raise UserError(f"model.name={name!r} is not a torchvision classification model; {hint}"
                        "see torchvision.models.list_models(module=torchvision.models)")
    c, h, w = require_image(info, f"torchvision {name}")
    if c != 3:
        raise UserError(f"model=torchvision ({name}) takes 3-channel images, but dataset {info.name} has {c} "
                        "channel(s); choose a colour dataset (dataset=cifar10, image_folder) or a model such as lenet5")
    model = torchvision.models.get_model(name, weights=None, num_classes=info.num_classes)
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, c, h, w))
    except (RuntimeError, ValueError) as e:
        reason = " ".join(str(e).split())[:200]
        raise UserError(f"model=torchvision model.name={name} cannot take {h}x{w} images from dataset {info.name} "
                        f"({reason}); choose another architecture or larger images") from None
    return model.train()
