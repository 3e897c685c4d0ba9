"""Convolutional networks: LeNet-5, and the VGG-style Conv-2/4/6 of Frankle & Carbin (2019, Table 1).

Conv-N: N 3x3 convolutions ("same" padding) in pairs of 64, 128, 256 channels, each pair followed by a
2x2 max-pool, then fully connected 256-256-classes. On 32x32x3 inputs Conv-2 and Conv-4 have the paper's
4.3M / 2.4M parameters; Conv-6 has 2.26M, which is what the paper's layer list adds up to (its Table 1
prints 1.7M).

`padding=0` makes every convolution "valid" (each 3x3 shrinks the side by 2): with channels [32, 64, M] and
fc [128] that is the dynamic-pruning study's Fashion-MNIST CNN (PyTorch's MNIST example without its dropout):
28x28 -> 26 -> 24 -> pooled 12, so the classifier sees 64*12*12 = 9216 features (model=fashion_cnn).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from prune_lab.data.splits import DataInfo
from prune_lab.errors import UserError
from prune_lab.models.fit import require_image

POOL = "M"


class ConvNet(nn.Module):
    """`channels`: conv widths, with "M" for a 2x2 max-pool; `fc`: hidden widths of the classifier."""

    def __init__(
        self,
        info: DataInfo,
        channels: Sequence[int | str],
        fc: Sequence[int] = (256, 256),
        batch_norm: bool = False,
        name: str = "convnet",
        padding: int = 1,
    ):
        super().__init__()
        if padding not in (0, 1):
            raise UserError(f"model.padding={padding!r}: 1 keeps each 3x3 convolution's side (\"same\"), "
                            "0 shrinks it by 2")
        pools = sum(1 for c in channels if c == POOL)
        in_ch, h, w = require_image(info, name, min_side=2**pools)
        features: list[nn.Module] = []
        for c in channels:
            if c == POOL:
                features.append(nn.MaxPool2d(2))
                h, w = h // 2, w // 2
                continue
            if not isinstance(c, int) or c <= 0:
                raise UserError(f"model.channels entries must be positive ints or 'M', got {c!r}")
            h, w = h - 2 + 2 * padding, w - 2 + 2 * padding  # a 3x3 kernel, stride 1
            if min(h, w) < 1:
                break  # refused below
            features += [nn.Conv2d(in_ch, c, 3, padding=padding, bias=not batch_norm)]
            features += [nn.BatchNorm2d(c)] if batch_norm else []
            features += [nn.ReLU()]
            in_ch = c
        if min(h, w) < 1:  # only unpadded convolutions can get here (padding=1 halves at pools alone)
            raise UserError(f"model {name}: {info.input_shape[1]}x{info.input_shape[2]} images shrink to nothing "
                            f"through unpadded convolutions {list(channels)}; use model.padding=1 or larger images")
        self.features = nn.Sequential(*features)
        widths = [in_ch * h * w, *fc, info.num_classes]
        classifier: list[nn.Module] = [nn.Flatten()]
        for i, (n_in, n_out) in enumerate(zip(widths[:-1], widths[1:])):
            classifier.append(nn.Linear(n_in, n_out))
            if i < len(widths) - 2:
                classifier.append(nn.ReLU())
        self.classifier = nn.Sequential(*classifier)

    def forward(self, x: Tensor) -> Tensor:  # x: [B, C, H, W] -> logits [B, classes]
        return self.classifier(self.features(x))


class LeNet5(nn.Module):
    """LeCun et al. 1998 with ReLU and max-pool: conv 6@5x5 (pad 2), pool, conv 16@5x5, pool, 120-84-classes."""

    def __init__(self, info: DataInfo):
        super().__init__()
        c, h, w = require_image(info, "lenet5", min_side=12)
        h, w = ((h // 2) - 4) // 2, ((w // 2) - 4) // 2  # after pad-2 conv, pool, valid 5x5 conv, pool
        self.features = nn.Sequential(
            nn.Conv2d(c, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(6, 16, 5), nn.ReLU(), nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(16 * h * w, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
            nn.Linear(84, info.num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
