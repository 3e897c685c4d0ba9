"""MNIST, Fashion-MNIST and CIFAR-10 in torchvision's file layout, converted once to normalised tensors.

prune_lab keeps the whole set as one float tensor and batches it by index, so there is no per-sample transform
in the training loop. With `download: false` nothing touches the network: a folder holding only the `.gz` files
torchvision downloads is md5-checked and unpacked. MNIST and Fashion-MNIST are read from their unpacked IDX
files directly (each verified against the size its header promises), without importing torchvision (about
2.4 s of every process's start); torchvision is imported only to download them.
"""

from __future__ import annotations

import gzip
import hashlib
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from prune_lab.data.augment import CropFlip
from prune_lab.data.splits import DataInfo, Splits, TensorSet, resolve_data_dir
from prune_lab.errors import DataAbsent, UserError
from prune_lab.storage import atomic_write_bytes, build_once


def idx_problem(path: Path) -> str | None:
    """What is wrong with an unpacked MNIST-style IDX file (its size must be what its header says), or None."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4)
            if len(head) < 4:
                return f"truncated ({size} bytes)"
            if head[0] != 0 or head[1] != 0 or head[2] != 8 or not 1 <= head[3] <= 4:
                return "not an IDX file of bytes (its header is wrong)"
            dims = f.read(4 * head[3])
    except OSError as e:
        return f"unreadable ({e.strerror or e})"
    if len(dims) < 4 * head[3]:
        return f"truncated ({size} bytes, not even a header)"
    count = 1
    for i in range(head[3]):
        count *= int.from_bytes(dims[4 * i : 4 * i + 4], "big")
    expected = 4 + len(dims) + count
    if size != expected:
        return f"{'truncated' if size < expected else 'too long'} ({size} of {expected} bytes)"
    return None


def read_idx(path: Path) -> Tensor:
    """An unpacked IDX file of bytes (verified by `idx_problem`) as a uint8 tensor of its header's shape."""
    data = path.read_bytes()
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(data[3])]
    offset = 4 + 4 * len(dims)
    return torch.frombuffer(bytearray(data[offset:]), dtype=torch.uint8).view(*dims)


def md5_ok(path: Path, md5: str) -> bool:
    """torchvision's check_integrity, without importing torchvision."""
    if not path.is_file():
        return False
    h = hashlib.md5()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest() == md5


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
    folder: ClassVar[str] = ""  # torchvision's folder name under data_dir (<data_dir>/<folder>/raw/)
    # (file, md5) as torchvision's class lists them in `resources` (tests/test_datasets_studies.py compares)
    resources: ClassVar[tuple[tuple[str, str], ...]] = ()

    def _dataset_class(self):
        raise NotImplementedError

    def _prepare_offline(self, root: Path) -> None:
        """Every unpacked file torchvision reads, verified; unpacked from its md5-checked `.gz` when missing
        or bad. Safe when several jobs start at once: one unpacks (to a temp name, verified, renamed), the
        others wait for it (prune_lab.storage.build_once, the dense cache's mechanism)."""
        raw = root / self.folder / "raw"
        missing = [f for f, _ in self.resources if not (raw / f).exists() and not (raw / Path(f).stem).exists()]
        if missing:
            raise DataAbsent(
                f"{self.name}: {raw} lacks {', '.join(missing)} and dataset.download=false. Put torchvision's "
                f"{self.folder} files there (the .gz files are enough), point dataset.data_dir or "
                "$PRUNE_LAB_DATA_DIR at the folder that holds them, or set dataset.download=true where online"
            )
        for filename, md5 in self.resources:
            self._unpacked(raw / filename, md5)

    def _unpacked(self, gz: Path, md5: str) -> Path:
        target = gz.with_name(gz.stem)

        def load(locked: bool) -> Path | None:
            problem = idx_problem(target) if target.exists() else "missing"
            if problem is None:
                return target
            if problem != "missing":
                if not gz.exists():
                    raise UserError(f"{self.name}: {target} is {problem}; delete it and put torchvision's "
                                    f"{gz.name} next to it (or set dataset.download=true where online)")
                if locked:  # nobody is writing it now: name it and make it again
                    print(f"prune_lab: {self.name}: {target} is {problem}; discarding it and unpacking {gz.name} "
                          "again", file=sys.stderr, flush=True)
                    target.unlink(missing_ok=True)
            return None

        def build() -> Path:
            if not md5_ok(gz, md5):
                raise UserError(f"{self.name}: {gz} fails its md5 check ({md5}); replace the file")
            try:
                with gzip.open(gz, "rb") as f:
                    data = f.read()
                atomic_write_bytes(target, data)
            except (OSError, EOFError) as e:
                raise UserError(
                    f"{self.name}: cannot unpack {gz} ({e}); copy {gz.parent.parent.parent} to a writable folder "
                    "and point dataset.data_dir at it"
                ) from e
            problem = idx_problem(target)
            if problem is not None:
                raise UserError(f"{self.name}: {target}, unpacked from {gz}, is {problem}; replace {gz}")
            return target

        return build_once(gz.with_name(f".{gz.stem}.lock"), load, build,
                          f"{self.name}: another job is unpacking {gz.name}; waiting for it")[0]

    def load(self) -> Splits:
        root = resolve_data_dir(self.data_dir)
        if self.download:  # torchvision downloads and unpacks in place: one job at a time
            from filelock import FileLock

            cls = self._dataset_class()
            (root / self.folder).mkdir(parents=True, exist_ok=True)
            try:
                with FileLock(str(root / self.folder / ".download.lock")):
                    cls(str(root), train=True, download=True)
                    cls(str(root), train=False, download=True)
            except RuntimeError as e:
                raise UserError(f"{self.name}: could not download to {root}: {e}") from e
        self._prepare_offline(root)  # every file verified (and unpacked from its .gz if needed)
        raw = root / self.folder / "raw"
        images, labels, test_images, test_labels = (read_idx(raw / Path(f).stem) for f, _ in self.resources)
        x = _normalise(images.unsqueeze(1).float() / 255.0, self.mean, self.std)  # [60000, 1, 28, 28]
        y = labels.long()
        train, val = _holdout(len(y), self.val_size, self.split_seed)
        train = _subset(train, self.train_subset)
        x_test = _normalise(test_images.unsqueeze(1).float() / 255.0, self.mean, self.std)
        info = DataInfo(self.name, (1, 28, 28), 10)
        return Splits(
            info, TensorSet(x[train], y[train]), TensorSet(x[val], y[val]), TensorSet(x_test, test_labels.long())
        )


@dataclass(frozen=True)
class MNIST(_MnistLike):
    name = "mnist"
    mean: tuple[float, ...] = (0.1307,)
    std: tuple[float, ...] = (0.3081,)
    folder: ClassVar[str] = "MNIST"
    resources: ClassVar[tuple[tuple[str, str], ...]] = (
        ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
        ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
        ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
        ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
    )

    def _dataset_class(self):
        from torchvision.datasets import MNIST as TorchvisionMNIST

        return TorchvisionMNIST


@dataclass(frozen=True)
class FashionMNIST(_MnistLike):
    name = "fashion_mnist"
    mean: tuple[float, ...] = (0.2860,)
    std: tuple[float, ...] = (0.3530,)
    folder: ClassVar[str] = "FashionMNIST"
    resources: ClassVar[tuple[tuple[str, str], ...]] = (
        ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
        ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
        ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
        ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
    )

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
                raise DataAbsent(
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
        except Exception as e:  # with verify_md5=false: a truncated or foreign batch file
            bad = next(((name, why) for name in (*CIFAR_FILES, "batches.meta")
                        if (why := _pickle_problem(folder / name)) is not None), None)
            if bad is None:
                raise
            raise UserError(f"cifar10: {folder / bad[0]} does not load ({bad[1]}); replace it with the file from "
                            "cifar-10-python.tar.gz (or set dataset.download=true where online)") from e

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


def _pickle_problem(path: Path) -> str | None:
    """Why a CIFAR-10 batch file does not unpickle into a batch, or None when it does."""
    import pickle

    try:
        with path.open("rb") as f:
            batch = pickle.load(f, encoding="latin1")
    except Exception as e:
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if not isinstance(batch, dict):
        return f"holds a {type(batch).__name__}, not a batch"
    data = batch.get("data")
    if data is not None and getattr(data, "size", 0) % (3 * 32 * 32):
        return "its images are not 3x32x32"
    return None


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
