"""MNIST, Fashion-MNIST and CIFAR-10 through torchvision's loaders, converted once to normalised tensors.

torchvision reads the files; prune_lab then keeps the whole set as one float tensor and batches it by
index, so there is no per-sample transform in the training loop. With `download: false` nothing touches
the network: a folder holding only the `.gz` files torchvision downloads is md5-checked and unpacked.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from prune_lab.data.augment import CropFlip
from prune_lab.data.splits import DataInfo, Splits, TensorSet, resolve_data_dir
from prune_lab.errors import UserError


def _holdout(n: int, val_size: int, seed: int) -> tuple[Tensor, Tensor]:
    if not 0 <= val_size < n:
        raise UserError(f"dataset.val_size={val_size} must be in [0, {n}) for a training set of {n} samples")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val_size:], perm[:val_size]


def _subset(idx: Tensor, limit: int | None) -> Tensor:
    if limit is None:
        return idx
    if limit <= 0:
        raise UserError(f"dataset.train_subset={limit} must be a positive number of samples, or null for all")
    return idx[:limit]


def _normalise(x: Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> Tensor:
    shape = (1, len(mean), 1, 1)
    return (x - torch.tensor(mean).view(shape)) / torch.tensor(std).view(shape)


@dataclass(frozen=True)
class _MnistLike:
    data_dir: str | None = None  # null: $PRUNE_LAB_DATA_DIR, else ~/.cache/prune_lab/data
    download: bool = False  # false: never touch the network (offline cluster nodes)
    val_size: int = 5000  # held out of the 60k training images, as the Lottery Ticket paper does
    train_subset: int | None = None  # first N training samples only: for smoke runs
    split_seed: int = 0  # same split for every run seed, so seeds vary only the network

    name = ""
    mean: tuple[float, ...] = ()
    std: tuple[float, ...] = ()

    def _dataset_class(self):
        raise NotImplementedError

    def _prepare_offline(self, cls, root: Path) -> None:
        from torchvision.datasets.utils import check_integrity, extract_archive

        raw = root / cls.__name__ / "raw"
        unpacked = [raw / Path(f).stem for f, _ in cls.resources]
        if all(p.exists() for p in unpacked):
            return
        missing = [f for f, _ in cls.resources if not (raw / f).exists() and not (raw / Path(f).stem).exists()]
        if missing:
            raise UserError(
                f"{self.name}: {raw} lacks {', '.join(missing)} and dataset.download=false. Put torchvision's "
                f"{cls.__name__} files there (the .gz files are enough), point dataset.data_dir or "
                "$PRUNE_LAB_DATA_DIR at the folder that holds them, or set dataset.download=true where online"
            )
        for filename, md5 in cls.resources:
            if (raw / Path(filename).stem).exists():
                continue
            if not check_integrity(str(raw / filename), md5):
                raise UserError(f"{self.name}: {raw / filename} fails its md5 check ({md5}); replace the file")
            try:
                extract_archive(str(raw / filename), str(raw))
            except OSError as e:
                raise UserError(
                    f"{self.name}: cannot unpack {raw / filename} ({e}); copy {root} to a writable folder "
                    "and point dataset.data_dir at it"
                ) from e

    def load(self) -> Splits:
        cls = self._dataset_class()
        root = resolve_data_dir(self.data_dir)
        if not self.download:
            self._prepare_offline(cls, root)
        try:
            train_set = cls(str(root), train=True, download=self.download)
            test_set = cls(str(root), train=False, download=self.download)
        except RuntimeError as e:
            raise UserError(f"{self.name}: could not load from {root}: {e}") from e
        x = _normalise(train_set.data.unsqueeze(1).float() / 255.0, self.mean, self.std)  # [60000, 1, 28, 28]
        y = train_set.targets.long()
        train, val = _holdout(len(y), self.val_size, self.split_seed)
        train = _subset(train, self.train_subset)
        x_test = _normalise(test_set.data.unsqueeze(1).float() / 255.0, self.mean, self.std)
        info = DataInfo(self.name, (1, 28, 28), 10)
        return Splits(
            info, TensorSet(x[train], y[train]), TensorSet(x[val], y[val]), TensorSet(x_test, test_set.targets.long())
        )


@dataclass(frozen=True)
class MNIST(_MnistLike):
    name = "mnist"
    mean: tuple[float, ...] = (0.1307,)
    std: tuple[float, ...] = (0.3081,)

    def _dataset_class(self):
        from torchvision.datasets import MNIST as TorchvisionMNIST

        return TorchvisionMNIST


@dataclass(frozen=True)
class FashionMNIST(_MnistLike):
    name = "fashion_mnist"
    mean: tuple[float, ...] = (0.2860,)
    std: tuple[float, ...] = (0.3530,)

    def _dataset_class(self):
        from torchvision.datasets import FashionMNIST as TorchvisionFashionMNIST

        return TorchvisionFashionMNIST


CIFAR_FILES = ("data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch")


@dataclass(frozen=True)
class CIFAR10:
    data_dir: str | None = None  # null: $PRUNE_LAB_DATA_DIR, else ~/.cache/prune_lab/data
    download: bool = False  # false: never touch the network (offline cluster nodes)
    verify_md5: bool = True  # check the batch files against torchvision's md5s before use
    val_size: int = 5000  # held out of the 50k training images
    train_subset: int | None = None  # first N training samples only: for smoke runs
    split_seed: int = 0  # same split for every run seed, so seeds vary only the network
    augment: bool = True  # random crop (pad 4) + horizontal flip on training batches, the standard CIFAR recipe

    mean = (0.4914, 0.4822, 0.4465)
    std = (0.2470, 0.2435, 0.2616)

    def load(self) -> Splits:
        from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

        root = resolve_data_dir(self.data_dir)
        folder = root / TorchvisionCIFAR10.base_folder
        if not self.download:
            missing = [f for f in (*CIFAR_FILES, "batches.meta") if not (folder / f).exists()]
            if missing:
                raise UserError(
                    f"cifar10: {folder} lacks {', '.join(missing)} and dataset.download=false. Unpack "
                    "cifar-10-python.tar.gz into dataset.data_dir (or $PRUNE_LAB_DATA_DIR), or set "
                    "dataset.download=true where online"
                )
        cls = TorchvisionCIFAR10 if self.verify_md5 else _unchecked_cifar10()
        try:
            train_set = cls(str(root), train=True, download=self.download)
            test_set = cls(str(root), train=False, download=self.download)
        except RuntimeError as e:
            raise UserError(f"cifar10: could not load from {folder}: {e}; set dataset.verify_md5=false "
                            "only for files you made yourself") from e

        def tensors(ds) -> tuple[Tensor, Tensor]:
            x = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float() / 255.0  # [N, 32, 32, 3] -> [N, 3, 32, 32]
            return _normalise(x, self.mean, self.std), torch.tensor(ds.targets, dtype=torch.int64)

        x, y = tensors(train_set)
        train, val = _holdout(len(y), self.val_size, self.split_seed)
        train = _subset(train, self.train_subset)
        info = DataInfo("cifar10", (3, 32, 32), 10)
        augment = CropFlip(pad=4) if self.augment else None
        return Splits(info, TensorSet(x[train], y[train]), TensorSet(x[val], y[val]), TensorSet(*tensors(test_set)),
                      augment)


def _unchecked_cifar10():
    """torchvision's CIFAR10 reader without the md5 checks (presence is checked by CIFAR10.load)."""
    import pickle

    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    class UncheckedCIFAR10(TorchvisionCIFAR10):
        def _check_integrity(self) -> bool:
            return True

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {name: i for i, name in enumerate(self.classes)}

    return UncheckedCIFAR10
