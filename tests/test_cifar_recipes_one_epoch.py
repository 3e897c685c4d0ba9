"""The CIFAR recipes train: one epoch of each (ResNet-20, VGG-16, ResNet-18) on CIFAR-10-format files.

CIFAR-10 itself is not on this machine, so this shows only that each recipe, as `model=` composes it (SGD,
its rate, momentum, weight decay, batch 128, augmentation), lowers the training loss within its first epoch
on files in CIFAR-10's pickle format. The images are learnable on purpose (one fixed random template per
class plus noise), unlike conftest's uniform noise. It says nothing about the accuracy a recipe reaches on
the real CIFAR-10: that is not measured yet. Slow: minutes per network on one CPU thread (ResNet-18 the longest).
"""

from __future__ import annotations

import math
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

from prune_lab.config import compose_run
from prune_lab.masks import Mask
from prune_lab.seeding import generator
from prune_lab.training import cross_entropy, train

CONF = Path(__file__).resolve().parent.parent / "conf"
PER_BATCH = 1076     # images in each of the 5 data batches: 5,380 training images in all
HELD_OUT = 260       # dataset.val_size: the validation images come out of those
TRAIN_IMAGES = 5 * PER_BATCH - HELD_OUT  # 5,120: 40 steps of the recipes' batch 128


def write_learnable_cifar10(root: Path, per_batch: int, n_test: int) -> None:
    """CIFAR-10's python format (5 data batches, a test batch, batches.meta; uint8 rows of R, G, B planes),
    with images = the class's template (uint8 in [64, 192)) + uniform noise in [-48, 48]."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    templates = np.random.default_rng(0).integers(64, 192, (10, 3 * 32 * 32))  # [classes, 3072]
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for seed, name in enumerate(names, start=1):
        rng = np.random.default_rng(seed)
        n = n_test if name == "test_batch" else per_batch
        labels = rng.integers(0, 10, n)
        data = np.clip(templates[labels] + rng.integers(-48, 49, (n, 3 * 32 * 32)), 0, 255).astype(np.uint8)
        with (folder / name).open("wb") as f:
            pickle.dump({"data": data, "labels": labels.tolist(), "batch_label": name}, f)
    with (folder / "batches.meta").open("wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)


@pytest.fixture(scope="module")
def cifar_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cifar_format")
    write_learnable_cifar10(root, per_batch=PER_BATCH, n_test=64)
    return root


# VGG-16 at its recipe's lr 0.1 (no warmup) overshoots in its first steps (loss ~25 at step 4 when measured) and
# after 40 steps sits near 2.0, only just under chance: recorded as an expected failure, strict so that a fix
# (or a recipe change) shows up. Whether a full CIFAR-10 epoch (352 steps) recovers is not measured here.
VGG_OVERSHOOTS = pytest.mark.xfail(strict=True, reason="vgg16 at lr 0.1: 40 steps do not bring the loss clearly "
                                   "below chance on these files (measured: ~2.0 against ln 10 = 2.30)")


@pytest.mark.slow
@pytest.mark.parametrize("model", ["resnet20", pytest.param("vgg16", marks=VGG_OVERSHOOTS), "resnet18"])
def test_one_epoch_of_the_recipe_lowers_the_training_loss(model: str, cifar_files: Path):
    # Up to 2 threads (CI's cores; the tests run one at a time): ResNet-18's 40 steps took ~10 min on one
    # loaded thread. The check is that the loss falls, which does not depend on the thread count.
    torch.set_num_threads(max(1, min(2, len(os.sched_getaffinity(0)))))
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"model={model}", "dataset=cifar10", f"dataset.data_dir={cifar_files}",
                                           "dataset.verify_md5=false", f"dataset.val_size={HELD_OUT}"])
    spec = compose_run(cfg, {})
    t = spec.train
    assert t.optimizer.func.__name__ == "SGD" and t.batch_size == 128  # the recipe, not the penguin defaults
    data = spec.dataset.load()
    assert len(data.train) == TRAIN_IMAGES and tuple(data.train.x.shape[1:]) == (3, 32, 32)
    net = spec.model(data.info)
    spec.init(net, generator(0, "init"))
    losses: list[float] = []  # one per step, in order

    def recorded(logits, y, x):  # [B, 10], [B], [B, 3, 32, 32] -> the recipe's loss, kept per step
        loss = cross_entropy(logits, y, x)
        losses.append(loss.item())
        return loss

    names = spec.prunable.names(net)
    history = train(net, Mask.ones(net, names), data, t, 1, seed=0, phase="dense", loss_fn=recorded).history
    steps = TRAIN_IMAGES // 128
    assert len(losses) == steps and history[0]["lr"] == pytest.approx(t.lr)  # one epoch at the recipe's rate
    print(f"{model}: lr {t.lr}, loss per step {[round(v, 3) for v in losses]}")
    # Falling from chance (ln 10 = 2.30 for an untrained 10-way classifier), not from the first steps: at the
    # recipes' full rate the first steps may overshoot far above it (VGG-16 did, to ~19) before they come down.
    assert np.isfinite(losses).all() and abs(losses[0] - math.log(10)) < 0.5, losses[0]  # before any update
    assert np.mean(losses[-5:]) < 0.8 * math.log(10), losses
