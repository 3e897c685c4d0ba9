"""scikit-learn's 8x8 handwritten digits (1797 images, shipped with scikit-learn: offline)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from prune_lab.data.splits import DataInfo, Splits, TensorSet, split_indices


@dataclass(frozen=True)
class Digits:
    val_fraction: float = 0.15
    test_fraction: float = 0.2
    split_seed: int = 0

    def load(self) -> Splits:
        from sklearn.datasets import load_digits  # only when chosen: scikit-learn is slow to import

        bunch = load_digits()
        x = torch.tensor(bunch.images, dtype=torch.float32).unsqueeze(1) / 16.0  # [1797, 1, 8, 8] in [0, 1]
        y = torch.tensor(bunch.target, dtype=torch.int64)
        train, val, test = split_indices(len(y), self.val_fraction, self.test_fraction, self.split_seed)
        mean, std = x[train].mean(), x[train].std()
        x = (x - mean) / std
        info = DataInfo("digits", (1, 8, 8), 10)
        return Splits(info, TensorSet(x[train], y[train]), TensorSet(x[val], y[val]), TensorSet(x[test], y[test]))
