"""The studies' datasets: `image_folder` on a folder of generated images, `cora` on the real Planetoid files."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import read_json, run_cli
from PIL import Image

from prune_lab.data.cora import Cora
from prune_lab.data.image_folder import ImageFolder
from prune_lab.errors import UserError

COLOURS = {"daisy": (230, 230, 40), "roses": (200, 20, 30), "tulips": (40, 60, 220)}


def make_images(root: Path, per_class: int = 12) -> Path:
    """One folder per class; each class a colour plus noise, in mixed sizes and formats."""
    rng = np.random.default_rng(0)
    for cls, colour in COLOURS.items():
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            h, w = 40 + 3 * i, 50 - 2 * i
            pixels = np.clip(np.array(colour) + rng.normal(0, 25, (h, w, 3)), 0, 255).astype(np.uint8)
            pixels[:, : w // 4] = 0  # a dark left stripe: a horizontal flip moves it to the right
            Image.fromarray(pixels).save(root / cls / f"img{i}.{'png' if i % 2 else 'jpg'}")
    (root / "daisy" / "notes.txt").write_text("not an image: ignored")
    return root


@pytest.fixture
def images(tmp_path: Path) -> Path:
    return make_images(tmp_path / "flowers")


def test_image_folder_loads_resizes_splits_and_normalises(images: Path):
    splits = ImageFolder(root=str(images), size=16, val_fraction=0.25, test_fraction=0.25).load()
    assert splits.info.input_shape == (3, 16, 16) and splits.info.num_classes == 3
    assert splits.info.extras["classes"] == ["daisy", "roses", "tulips"]  # sorted folder names
    assert (len(splits.train), len(splits.val), len(splits.test)) == (18, 9, 9)
    assert splits.train.x.dtype == torch.float32 and splits.train.y.dtype == torch.int64
    per_channel = splits.train.x.mean(dim=(0, 2, 3))
    assert torch.allclose(per_channel, torch.zeros(3), atol=1e-4)  # normalised with training statistics
    # Class colour survives: the red channel separates roses from tulips.
    red = splits.train.x[:, 0, :, 8:].mean(dim=(1, 2))
    assert red[splits.train.y == 1].min() > red[splits.train.y == 2].max()


def test_image_folder_split_is_seeded(images: Path):
    a = ImageFolder(root=str(images), size=8).load()
    b = ImageFolder(root=str(images), size=8).load()
    c = ImageFolder(root=str(images), size=8, split_seed=1).load()
    assert torch.equal(a.test.x, b.test.x) and torch.equal(a.train.y, b.train.y)
    assert not torch.equal(a.test.x, c.test.x)
    every = torch.cat([a.train.x, a.val.x, a.test.x]).flatten(1)
    assert len(torch.unique(every, dim=0)) == 36, "each image in exactly one split"


def test_image_folder_grayscale_and_train_subset(images: Path):
    splits = ImageFolder(root=str(images), size=20, grayscale=True, train_subset=5).load()
    assert splits.info.input_shape == (1, 20, 20) and splits.train.x.shape == (5, 1, 20, 20)


def test_image_folder_flips_training_batches_on_tensors(images: Path):
    splits = ImageFolder(root=str(images), size=16).load()
    assert splits.augment is not None
    x = splits.train.x
    out = splits.augment(x, torch.Generator().manual_seed(0))
    flipped = [torch.equal(o, xi.flip(-1)) for o, xi in zip(out, x)]
    kept = [torch.equal(o, xi) for o, xi in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept)) and 0 < sum(flipped) < len(x)
    assert ImageFolder(root=str(images), size=16, flip=False).load().augment is None


def test_image_folder_bad_input_says_what_to_fix(tmp_path: Path, images: Path):
    with pytest.raises(UserError, match="dataset.root"):
        ImageFolder(root=None).load()
    with pytest.raises(UserError, match="not a folder"):
        ImageFolder(root=str(tmp_path / "nowhere")).load()
    (tmp_path / "one" / "only").mkdir(parents=True)
    Image.new("RGB", (4, 4)).save(tmp_path / "one" / "only" / "a.png")
    with pytest.raises(UserError, match="at least 2"):
        ImageFolder(root=str(tmp_path / "one")).load()
    (images / "tulips" / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(UserError, match="broken.jpg"):
        ImageFolder(root=str(images), size=8).load()


def test_flowers_cnn_learns_an_image_folder_end_to_end(tmp_path: Path, images: Path):
    proc = run_cli("dataset=image_folder", f"dataset.root={images}", "dataset.size=24", "model=flowers_cnn",
                   "pruner=magnitude", "train.epochs=15", "train.finetune_epochs=3", "train.lr=0.003",
                   "train.batch_size=8", "dataset.val_fraction=0.25", "dataset.test_fraction=0.25",
                   "cache_dir=null", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    dense, pruned = read_json(tmp_path / "run" / "results.json")["levels"]
    assert dense["test_acc"] > 0.6, "three colours are easy; chance is 1/3"
    assert abs(pruned["sparsity"] - 0.3) < 0.01


# --- Cora ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cora(data_dir: Path):
    return Cora(data_dir=str(data_dir)).load()


def test_cora_is_the_planetoid_graph_with_the_public_split(cora):
    info = cora.info
    assert info.name == "cora" and info.num_classes == 7
    assert info.extras["features"].shape == (2708, 1433)
    assert (len(cora.train), len(cora.val), len(cora.test)) == (140, 500, 1000)
    assert torch.equal(cora.train.x, torch.arange(140)) and torch.equal(cora.val.x, torch.arange(140, 640))
    assert cora.test.x.min() >= 1708 and len(torch.unique(cora.test.x)) == 1000  # Planetoid's test nodes
    assert torch.equal(torch.bincount(cora.train.y, minlength=7), torch.full((7,), 20))  # 20 per class
    assert cora.train.x.dtype == torch.int64


def test_cora_adjacency_is_symmetric_normalised_with_self_loops(cora):
    adj = cora.info.extras["adjacency"].to_dense()
    assert torch.allclose(adj, adj.T)
    assert (adj.diagonal() > 0).all()
    # 5,278 undirected edges (10,556 directed, as torch_geometric counts) plus 2,708 self-loops.
    assert int((adj > 0).sum()) == 10_556 + 2_708
    deg = (adj > 0).sum(1).float()
    i, j = 0, int(torch.nonzero(adj[0])[-1])
    assert torch.isclose(adj[i, j], 1 / torch.sqrt(deg[i] * deg[j]))
    assert torch.allclose(cora.info.extras["features"].sum(1), torch.ones(2708))  # row-normalised


def test_cora_missing_files_say_where_and_how(tmp_path: Path):
    with pytest.raises(UserError, match=r"Cora/raw lacks .*download=false"):
        Cora(data_dir=str(tmp_path)).load()


def test_cora_refuses_pickles_that_would_run_code(tmp_path: Path, data_dir: Path):
    raw = tmp_path / "Cora" / "raw"
    shutil.copytree(data_dir / "Cora" / "raw", raw)
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (Path.touch, (marker,))

    (raw / "ind.cora.graph").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(UserError, match="never hold"):
        Cora(data_dir=str(tmp_path)).load()
    assert not marker.exists()


# --- CIFAR-10's standard augmentation, on tensors in batches --------------------------------------------


def test_cifar_crop_flip_is_a_random_padded_window_then_maybe_a_flip_per_image():
    from prune_lab.data.augment import CropFlip

    x = torch.rand(64, 3, 32, 32) + 1.0  # strictly positive: padding zeros are recognisable
    out = CropFlip(pad=4)(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    padded = torch.nn.functional.pad(x, (4, 4, 4, 4))
    offsets, flips = set(), 0
    for k in range(len(x)):
        windows = {(i, j): padded[k, :, i:i + 32, j:j + 32] for i in range(9) for j in range(9)}
        matches = [(i, j, f) for (i, j), w in windows.items() for f in (False, True)
                   if torch.equal(out[k], w.flip(-1) if f else w)]
        assert matches, f"image {k} is not a padded 32x32 window of its input (flipped or not)"
        offsets.add(matches[0][:2])
        flips += matches[0][2]
    assert len(offsets) > 10 and 10 < flips < 54, "offsets and flips are drawn per image, not per batch"
    again = CropFlip(pad=4)(x, torch.Generator().manual_seed(0))
    assert torch.equal(out, again), "the generator decides: a resumed epoch draws the same crops"
