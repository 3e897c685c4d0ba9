"""The GPU path (device, bf16 autocast, torch.compile, no host-device sync per step), exercised on the CPU.

No GPU is lent here: the CUDA-only checks skip, everything else runs the same code on the CPU.
"""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

import prune_lab
from prune_lab.data.splits import DataInfo, Splits, TensorSet
from prune_lab.masks import Mask
from prune_lab.models.mlp import MLP
from prune_lab.training import CHECK_EVERY, TrainSettings, train
from tests.conftest import ROOT, TINY, read_json, run_cli

HOST_READS = ("item", "tolist", "__bool__", "__float__", "__int__", "numpy", "cpu")


def toy(n: int, device: str = "cpu") -> tuple[Splits, nn.Module, Mask]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(n, 8, generator=g), torch.randint(0, 3, (n,), generator=g)
    data = Splits(DataInfo("toy", (8,), 3), TensorSet(x, y), TensorSet(x[:32], y[:32]), TensorSet(x[:32], y[:32]))
    torch.manual_seed(0)
    model = MLP(data.info, [16])
    keep = {n: torch.rand(p.shape, generator=g) > 0.5 for n, p in model.named_parameters() if n.endswith("weight")}
    return data.to(torch.device(device)), model.to(device), Mask(keep)


def settings(**kw) -> TrainSettings:
    return TrainSettings(optimizer=functools.partial(torch.optim.Adam), lr=0.01, batch_size=8, **kw)


PACKAGE = str(Path(prune_lab.__file__).resolve().parent) + os.sep  # a checkout or venv named prune_lab is not it


def count_host_reads(monkeypatch: pytest.MonkeyPatch, steps_per_epoch: int) -> int:
    """Host reads of tensors made by prune_lab's own code during a 2-epoch training.

    torch.optim's Adam reads its step counters with .item(), but those live on the CPU (capturable=False),
    so they never wait for the GPU; only prune_lab's own reads are counted.
    """
    calls = {"n": 0}
    for name in HOST_READS:
        original = getattr(torch.Tensor, name)

        def spy(self, *a, _original=original, **kw):
            if sys._getframe(1).f_code.co_filename.startswith(PACKAGE):  # the package's files, not a path
                calls["n"] += 1
            return _original(self, *a, **kw)

        monkeypatch.setattr(torch.Tensor, name, spy)
    data, model, mask = toy(8 * steps_per_epoch)
    train(model, mask, data, settings(eval_every=1), 2, seed=0, phase="p")
    monkeypatch.undo()
    return calls["n"]


def test_no_host_read_per_step(monkeypatch: pytest.MonkeyPatch) -> None:
    # Host reads (.item(), bool(), ...) are what stall a GPU; the trainer may do some per epoch, none per step.
    # The one exception: the divergence check reads whether the loss is finite every CHECK_EVERY (64) steps.
    few, many = count_host_reads(monkeypatch, 5), count_host_reads(monkeypatch, 40)  # 10 vs 80 steps in 2 epochs
    extra = 80 // CHECK_EVERY - 10 // CHECK_EVERY
    assert few > 0 and many - few == extra, f"{many - few} more host reads for 70 more steps: a sync in the inner loop"


def test_bf16_autocast_trains_in_bf16_and_keeps_masks() -> None:
    data, model, mask = toy(64)
    dtypes = set()
    model.net[1].register_forward_hook(lambda m, i, out: dtypes.add(out.dtype))
    result = train(model, mask, data, settings(amp=True), 2, seed=0, phase="p")
    assert torch.bfloat16 in dtypes  # the layer ran under autocast
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights stay fp32
    params = dict(model.named_parameters())
    assert all(bool((params[n][~keep] == 0).all()) for n, keep in mask.tensors.items())
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in result.history)


@pytest.mark.slow  # inductor compiles C++ on first use: tens of seconds on 2 cores
def test_compiled_training_matches_eager() -> None:
    data, eager, mask = toy(64)
    _, compiled, _ = toy(64)
    a = train(eager, mask, data, settings(), 2, seed=0, phase="p")
    b = train(compiled, mask, data, settings(compile=True), 2, seed=0, phase="p")
    for (name, p), q in zip(eager.named_parameters(), compiled.parameters()):
        assert torch.allclose(p, q, atol=1e-4), name
    assert a.history[-1]["train_loss"] == pytest.approx(b.history[-1]["train_loss"], rel=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here")
def test_cuda_inner_loop_never_syncs() -> None:
    data, model, mask = toy(256, "cuda")
    mask = Mask({n: t.cuda() for n, t in mask.tensors.items()})
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as record:
            warnings.simplefilter("always")
            train(model, mask, data, settings(amp=True, eval_every=100), 1, seed=0, phase="p")
    finally:
        torch.cuda.set_sync_debug_mode("default")
    syncs = [str(r.message) for r in record if "synchroniz" in str(r.message)]
    assert len(syncs) <= 4, syncs  # per epoch (loss, eval), not per step (32 steps)


def test_cli_device_cpu_with_amp(tmp_path) -> None:
    out = run_cli("device=cpu", "train.amp=true", *TINY, f"hydra.run.dir={tmp_path}/run", "cache_dir=null",
                  cwd=ROOT)
    assert out.returncode == 0, out.stderr
    record = read_json(tmp_path / "run" / "results.json")
    assert record["device"] == "cpu" and record["config"]["train"]["amp"] is True
    assert record["levels"][-1]["sparsity"] == pytest.approx(0.3, abs=0.01)
