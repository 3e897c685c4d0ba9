"""torchvision-backed datasets: MNIST and Fashion-MNIST from the real files, CIFAR-10 on files we write."""

from __future__ import annotations

import pickle
import shutil
from pathlib import Path

import pytest
import torch
from conftest import read_json, run_cli, write_cifar10_files

from prune_lab.data.digits import Digits
from prune_lab.data.torchvision_sets import CIFAR10, MNIST, FashionMNIST
from prune_lab.errors import UserError


@pytest.mark.parametrize("cls", [MNIST, FashionMNIST])
def test_mnist_like_load_from_the_real_gz_files(data_dir: Path, cls):
    splits = cls(data_dir=str(data_dir)).load()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (55000, 5000, 10000)
    assert splits.train.x.shape[1:] == (1, 28, 28) and splits.info.num_classes == 10
    assert splits.train.x.dtype == torch.float32 and splits.train.y.dtype == torch.int64
    assert abs(float(splits.train.x.mean())) < 0.05 and abs(float(splits.train.x.std()) - 1) < 0.05
    assert sorted(splits.test.y.unique().tolist()) == list(range(10))


def test_offline_folder_from_the_environment_and_md5_checked(tmp_path: Path, data_dir: Path, monkeypatch):
    shutil.copytree(data_dir / "MNIST", tmp_path / "MNIST")
    for unpacked in (tmp_path / "MNIST" / "raw").glob("*-ubyte"):
        unpacked.unlink()
    monkeypatch.setenv("PRUNE_LAB_DATA_DIR", str(tmp_path))
    assert len(MNIST(train_subset=100).load().train) == 100
    gz = tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    (tmp_path / "MNIST" / "raw" / "t10k-labels-idx1-ubyte").unlink()
    gz.write_bytes(gz.read_bytes()[:-10])
    with pytest.raises(UserError, match="md5"):
        MNIST().load()


def test_lenet_300_100_reaches_95_percent_on_mnist_after_one_epoch(tmp_path: Path, data_dir: Path):
    proc = run_cli("dataset=mnist", f"dataset.data_dir={data_dir}", "model=lenet_300_100", "pruner=none",
                   "train.epochs=1", "train.lr=0.0012", "train.batch_size=60", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (level,) = read_json(tmp_path / "run" / "results.json")["levels"]
    assert level["params_total"] == 266_610
    assert level["test_acc"] >= 0.95, level


@pytest.fixture
def cifar_dir(tmp_path: Path) -> Path:
    write_cifar10_files(tmp_path, per_batch=20, n_test=30)
    return tmp_path


def test_cifar10_loader_reads_files_in_its_format(cifar_dir: Path):
    splits = CIFAR10(data_dir=str(cifar_dir), verify_md5=False, val_size=10).load()
    assert (len(splits.train), len(splits.val), len(splits.test)) == (90, 10, 30)
    assert splits.train.x.shape[1:] == (3, 32, 32) and splits.info.input_shape == (3, 32, 32)
    # The first test image's red plane, normalised, is the file's first 1024 bytes.
    with (cifar_dir / "cifar-10-batches-py" / "test_batch").open("rb") as f:
        raw = pickle.load(f, encoding="latin1")["data"][0, :1024].reshape(32, 32) / 255.0
    expected = (torch.tensor(raw, dtype=torch.float32) - 0.4914) / 0.2470
    assert torch.allclose(splits.test.x[0, 0], expected, atol=1e-5)
    batch = splits.augment(splits.train.x[:8], torch.Generator().manual_seed(0))
    assert batch.shape == (8, 3, 32, 32) and not torch.equal(batch, splits.train.x[:8])


def test_cifar10_files_failing_md5_are_refused(cifar_dir: Path):
    with pytest.raises(UserError, match="verify_md5"):
        CIFAR10(data_dir=str(cifar_dir)).load()


def test_digits_is_shipped_and_offline():
    splits = Digits().load()
    assert splits.info.input_shape == (1, 8, 8) and splits.info.num_classes == 10
    assert len(splits.train) + len(splits.val) + len(splits.test) == 1797
