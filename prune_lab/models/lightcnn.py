"""LightCNN-9 (Wu et al. 2018, "A Light CNN for Deep Face Representation with Noisy Labels"), for grayscale faces.

Max-feature-map (MFM): a Conv2d/Linear with twice the output channels, split in two halves, elementwise max.
Layout as in the authors' light_cnn.py (LightCNN_9Layers): MFM conv 5x5 -> 48, pool, then four "groups"
(MFM 1x1 conv to the same width, MFM 3x3 conv) to 96, 192, 128, 128 with pools after the first three,
then MFM Linear -> 256 (the face embedding), dropout, Linear -> classes. Pools are 2x2 with ceil_mode, so
128x128 crops give 8x8x128 before the classifier; other sizes (the face study's 144x144) fit as well.
The reference forward returns (logits, embedding); here only the logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune_lab.data.splits import DataInfo
from prune_lab.models.fit import require_image


class MFM(nn.Module):
    """Max-feature-map: out = max(first half, second half) of a layer with 2*out_features outputs."""

    def __init__(self, in_features: int, out_features: int, kernel_size: int = 0, padding: int = 0):
        super().__init__()
        if kernel_size:
            self.filter: nn.Module = nn.Conv2d(in_features, 2 * out_features, kernel_size, padding=padding)
        else:
            self.filter = nn.Linear(in_features, 2 * out_features)

    def forward(self, x: Tensor) -> Tensor:
        a, b = self.filter(x).chunk(2, dim=1)
        return torch.maximum(a, b)


def _group(in_ch: int, out_ch: int) -> nn.Sequential:
    return nn.Sequential(MFM(in_ch, in_ch, 1), MFM(in_ch, out_ch, 3, padding=1))


class LightCNN9(nn.Module):
    def __init__(self, info: DataInfo, dropout: float = 0.5):
        super().__init__()
        c, h, w = require_image(info, "lightcnn9", min_side=16)
        pool = nn.MaxPool2d(2, ceil_mode=True)
        self.features = nn.Sequential(
            MFM(c, 48, 5, padding=2), pool,
            _group(48, 96), pool,
            _group(96, 192), pool,
            _group(192, 128),
            _group(128, 128), pool,
        )
        for _ in range(4):
            h, w = math.ceil(h / 2), math.ceil(w / 2)
        self.embed = MFM(128 * h * w, 256)
        self.dropout = dropout
        self.fc = nn.Linear(256, info.num_classes)

    def forward(self, x: Tensor) -> Tensor:  # x: [B, 1, H, W] -> logits [B, classes]
        emb = self.embed(self.features(x).flatten(1))
        return self.fc(F.dropout(emb, self.dropout, self.training))
