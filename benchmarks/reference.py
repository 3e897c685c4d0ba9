"""The reference loop: how the seed studies train, for prune_lab's trainer to be compared against.

A torchvision MNIST dataset with a per-sample `ToTensor` + `Normalize` transform, a `DataLoader`
(shuffled, no worker processes: what the studies ran on a laptop), masks as `torch.nn.utils.prune`
forward hooks (`custom_from_mask`: weight = weight_orig * mask recomputed before every forward), Adam,
and the loss read back with `.item()` every step for the running average.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def reference_epoch(root: Path, train_idx: Tensor, model_factory: Callable[[], nn.Module], batch_size: int,
                    masks: Mapping[str, Tensor] | None, seed: int = 0, lr: float = 1.2e-3) -> float:
    """Seconds of one training epoch over MNIST[train_idx] (dataset construction not timed)."""
    from torch.nn.utils import prune
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))])
    dataset = Subset(datasets.MNIST(str(root), train=True, transform=transform), train_idx.tolist())
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True,
                        generator=torch.Generator().manual_seed(seed))
    model = model_factory()
    if masks is not None:
        modules = dict(model.named_modules())
        for name, keep in masks.items():
            prune.custom_from_mask(modules[name.rsplit(".", 1)[0]], "weight", keep)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    running = 0.0
    t0 = time.perf_counter()
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        running += loss.item()
    return time.perf_counter() - t0
