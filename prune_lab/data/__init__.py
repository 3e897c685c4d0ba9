"""Datasets as in-memory tensors: every option of the `dataset` config group lives here."""

from prune_lab.data.splits import DataInfo, Splits, TensorSet

__all__ = ["DataInfo", "Splits", "TensorSet"]
