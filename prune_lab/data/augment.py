"""Batch augmentations on tensors (no per-sample PIL transforms): one call transforms a whole batch."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class CropFlip:
    """Random crop after zero-padding by `pad` pixels, then a horizontal flip with probability 1/2."""

    pad: int = 4
    flip: bool = True

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:  # x: [B, C, H, W]
        b, c, h, w = x.shape
        if self.pad:
            # Offsets drawn on x's device (g lives there too): nothing crosses from the host per batch.
            i = torch.randint(0, 2 * self.pad + 1, (b,), generator=g, device=x.device)
            j = torch.randint(0, 2 * self.pad + 1, (b,), generator=g, device=x.device)
            padded = F.pad(x, (self.pad,) * 4)  # zero = the dataset mean after normalisation
            rows = (i[:, None] + torch.arange(h, device=x.device))[:, None, :, None]  # [B, 1, H, 1]
            cols = (j[:, None] + torch.arange(w, device=x.device))[:, None, None, :]  # [B, 1, 1, W]
            batch = torch.arange(b, device=x.device)[:, None, None, None]
            chan = torch.arange(c, device=x.device)[None, :, None, None]
            x = padded[batch, chan, rows, cols]
        if self.flip:
            flip = (torch.rand(b, generator=g, device=x.device) < 0.5)[:, None, None, None]
            x = torch.where(flip, x.flip(-1), x)
        return x


@dataclass(frozen=True)
class Flip:
    """Horizontal flip with probability 1/2 (the flowers study's only augmentation)."""

    def __call__(self, x: Tensor, g: torch.Generator) -> Tensor:
        flip = (torch.rand(len(x), generator=g, device=x.device) < 0.5)[:, None, None, None]
        return torch.where(flip, x.flip(-1), x)
