"""A user's own images, one folder per class (`root/<class>/<image>`), as the flowers and face studies used.

Every image is decoded once, resized to `size` x `size` (optionally grayscale), and the whole set is held
as one float tensor [N, C, size, size] normalised per channel with the training split's mean and std.
Classes are the sorted folder names. The train/val/test split is a seeded random partition of all images
(`split_seed`, the same for every run seed). Training batches get a random horizontal flip on tensors.
Memory: N x C x size^2 x 4 bytes (the flowers set, 3670 RGB images at 180x180: 1.4 GB).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from prune_lab.data.augment import Flip
from prune_lab.data.splits import DataInfo, Splits, TensorSet, split_indices
from prune_lab.errors import DataAbsent, UserError

EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


@dataclass(frozen=True)
class ImageFolder:
    root: str | None = None  # folder with one subfolder of images per class
    size: int = 180  # every image resized to size x size pixels
    grayscale: bool = False  # true: one channel (faces for LightCNN); false: RGB
    val_fraction: float = 0.1
    test_fraction: float = 0.1
    split_seed: int = 0  # same split for every run seed, so seeds vary only the network
    flip: bool = True  # random horizontal flip of training batches (the flowers study's augmentation)
    train_subset: int | None = None  # first N training images only (smoke runs), as for MNIST/CIFAR; null: all
    name: str = "image_folder"

    def _files(self) -> tuple[list[str], list[tuple[Path, int]]]:
        if not self.root:
            raise DataAbsent("image_folder needs its folder: dataset.root=/path/to/images (one subfolder per "
                            "class; the reinit_comparison preset takes it as faces_dir=...)")
        root = Path(self.root).expanduser()
        if not root.is_dir():
            raise DataAbsent(f"image_folder: dataset.root={root} is not a folder; point it at a folder with one "
                            "subfolder of images per class")
        classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
        files: list[tuple[Path, int]] = []
        for label, cls in enumerate(classes):
            images = sorted(p for p in (root / cls).iterdir() if p.suffix.lower() in EXTENSIONS)
            if not images:
                raise UserError(f"image_folder: class folder {root / cls} holds no images ({', '.join(EXTENSIONS)}); "
                                "add some or remove the folder")
            files += [(p, label) for p in images]
        if len(classes) < 2:
            raise UserError(f"image_folder: {root} has {len(classes)} class folder(s); classification needs at "
                            "least 2 subfolders, one per class")
        return classes, files

    def load(self) -> Splits:
        from PIL import Image, UnidentifiedImageError

        if not isinstance(self.size, int) or self.size < 1:
            raise UserError(f"dataset.size={self.size} must be a positive number of pixels, e.g. 180")
        if self.train_subset is not None and self.train_subset < 1:
            raise UserError(f"dataset.train_subset={self.train_subset} must be a positive number of images, or null")
        classes, files = self._files()
        mode, channels = ("L", 1) if self.grayscale else ("RGB", 3)
        x = torch.empty(len(files), channels, self.size, self.size, dtype=torch.uint8)
        for i, (path, _) in enumerate(files):
            try:
                with Image.open(path) as img:
                    img = img.convert(mode).resize((self.size, self.size), Image.BILINEAR)
                    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
            except (OSError, UnidentifiedImageError) as e:
                raise UserError(f"image_folder: cannot read {path} ({e}); remove or replace the file") from e
            x[i] = pixels.view(self.size, self.size, channels).permute(2, 0, 1)  # HWC -> CHW
        y = torch.tensor([label for _, label in files], dtype=torch.int64)
        train, val, test = split_indices(len(y), self.val_fraction, self.test_fraction, self.split_seed)
        train = train[: self.train_subset]
        images = x.float().div_(255.0)  # [N, C, size, size] in [0, 1]
        mean = images[train].mean(dim=(0, 2, 3), keepdim=True)  # training split only: no test leakage
        std = images[train].std(dim=(0, 2, 3), keepdim=True).clamp_min(1e-6)
        images = (images - mean) / std
        info = DataInfo(self.name, (channels, self.size, self.size), len(classes), {"classes": classes})
        return Splits(info, TensorSet(images[train], y[train]), TensorSet(images[val], y[val]),
                      TensorSet(images[test], y[test]), Flip() if self.flip else None)
