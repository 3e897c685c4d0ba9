"""Training at hardware speed: prune_lab's trainer against the FLOP bound and against the reference loop."""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf
from torch import nn

from benchmarks.reference import reference_epoch
from benchmarks.timing import interleave, matmul_flops_per_s, median, ratio, sync
from prune_lab.data.splits import DataInfo, Splits, TensorSet
from prune_lab.data.torchvision_sets import MNIST
from prune_lab.flops import count_flops
from prune_lab.masks import Mask, PrunableSelection
from prune_lab.training import TrainSettings, train

CONF = Path(__file__).resolve().parent.parent / "conf"
MASKED = 0.8  # fraction of every prunable weight tensor masked in the "masked" variants


def model_factory(name: str, info: DataInfo, seed: int = 0) -> Callable[[], nn.Module]:
    """The model of conf/model/NAME.yaml, built the way a run builds it, same weights every call."""
    partial = instantiate(OmegaConf.load(CONF / "model" / f"{name}.yaml"))

    def build() -> nn.Module:
        torch.manual_seed(seed)
        return partial(info)

    return build


def random_mask(model: nn.Module, fraction: float, seed: int = 0) -> Mask:
    """`fraction` of each prunable weight tensor masked, chosen at random (exact counts)."""
    g = torch.Generator().manual_seed(seed)
    params = dict(model.named_parameters())
    keep = {}
    for name in PrunableSelection().names(model):
        n = params[name].numel()
        flat = torch.ones(n, dtype=torch.bool)
        flat[torch.randperm(n, generator=g)[: round(fraction * n)]] = False
        keep[name] = flat.view(params[name].shape).to(params[name].device)
    return Mask(keep)


def no_eval(data: Splits) -> Splits:
    """The training split alone: an epoch's time is training, not validation."""
    empty = TensorSet(data.train.x[:0], data.train.y[:0])
    return Splits(data.info, data.train, empty, empty, data.augment)


def default_adam(**overrides: Any) -> Callable[..., torch.optim.Optimizer]:
    """The optimizer of conf/train/adam.yaml (the default `train`), with `overrides` (e.g. fused=False)."""
    node = OmegaConf.load(CONF / "train" / "adam.yaml").optimizer
    return functools.partial(instantiate(node), **overrides)


def our_epoch(build: Callable[[], nn.Module], data: Splits, batch_size: int, masked: float, device: torch.device,
              amp: bool = False, fused: bool | None = None) -> Callable[[], float]:
    """prune_lab's trainer for one epoch with train=adam's optimizer, `masked` of every prunable weight masked."""
    optimizer = default_adam() if fused is None else default_adam(fused=fused)
    settings = TrainSettings(optimizer=optimizer, lr=1.2e-3, batch_size=batch_size,
                             eval_every=10**6, checkpoint_every_s=10**9, amp=amp)

    def timer() -> float:
        model = build().to(device)
        mask = random_mask(model, masked) if masked else Mask.ones(model, PrunableSelection().names(model))
        sync(device)
        t0 = time.perf_counter()
        train(model, mask, data, settings, 1, seed=0, phase="bench")
        sync(device)
        return time.perf_counter() - t0

    return timer


def mnist_splits(data_dir: Path) -> Splits:
    return MNIST(data_dir=str(data_dir)).load()


def lenet_section(data_dir: Path, rounds: int, log: Callable[[str], None], subset: int | None = None) -> dict[str, Any]:
    """LeNet-300-100 on real MNIST: batch 128 and 60, dense and 80% masked, vs FLOP bound and reference loop."""
    device = torch.device("cpu")
    data = no_eval(mnist_splits(data_dir))
    train_idx = torch.randperm(60000, generator=torch.Generator().manual_seed(0))[5000:]  # prune_lab's split
    if subset is not None:  # --quick: a smoke run of the section, not a measurement
        data = Splits(data.info, TensorSet(data.train.x[:subset], data.train.y[:subset]), data.val, data.test)
        train_idx = train_idx[:subset]
    n = len(data.train)
    build = model_factory("lenet_300_100", data.info)
    flops = count_flops(build(), data.train.x[:1])
    epoch_flops = flops.train_epoch(n)
    masks = random_mask(build(), MASKED).tensors
    variants: dict[str, Callable[[], float]] = {}
    for bs in (128, 60):
        variants[f"ours b{bs} dense"] = our_epoch(build, data, bs, 0.0, device)
        variants[f"ours b{bs} masked"] = our_epoch(build, data, bs, MASKED, device)
        if bs == 128:  # train.optimizer.fused=false: torch's default per-tensor Adam, ~10 ops per tensor
            variants["ours b128 dense, unfused Adam"] = our_epoch(build, data, bs, 0.0, device, fused=False)
        variants[f"reference b{bs} dense"] = functools.partial(reference_epoch, data_dir, train_idx, build, bs, None)
        variants[f"reference b{bs} masked"] = functools.partial(reference_epoch, data_dir, train_idx, build, bs,
                                                                masks)
    bound_s: list[float] = []

    def flop_bound() -> float:
        bound_s.append(epoch_flops / matmul_flops_per_s(device))
        return bound_s[-1]

    variants = {"FLOP bound (fp32 matmul)": flop_bound, **variants}
    our_epoch(build, Splits(data.info, TensorSet(data.train.x[:512], data.train.y[:512]), data.val, data.test),
              128, MASKED, device)()  # warm-up: the first optimizer imports torch._dynamo
    times = interleave(variants, rounds, log)
    rows = []
    for bs in (128, 60):
        dense, masked = times[f"ours b{bs} dense"], times[f"ours b{bs} masked"]
        rows += [
            row(f"LeNet-300-100 MNIST b{bs}: epoch / FLOP bound", ratio(dense, times["FLOP bound (fp32 matmul)"]),
                "x", "<= 1.3", lambda v: v <= 1.3),
            row(f"LeNet-300-100 MNIST b{bs}: reference loop / ours (dense)",
                ratio(times[f"reference b{bs} dense"], dense), "x", ">= 4", lambda v: v >= 4),
            row(f"LeNet-300-100 MNIST b{bs}: reference loop / ours (80% masked)",
                ratio(times[f"reference b{bs} masked"], masked), "x", ">= 4", lambda v: v >= 4),
            row(f"LeNet-300-100 MNIST b{bs}: masked / dense (mask cost)", ratio(masked, dense), "x", "<= 1.05",
                lambda v: v <= 1.05),
            row(f"LeNet-300-100 MNIST b{bs}: epoch, ours dense (median)", median(dense), "s"),
            row(f"LeNet-300-100 MNIST b{bs}: samples/s, ours dense", n / median(dense), "1/s"),
        ]
    rows += [row("LeNet-300-100 MNIST b128: unfused Adam (train.optimizer.fused=false) / default fused",
                 ratio(times["ours b128 dense, unfused Adam"], times["ours b128 dense"]), "x"),
             row("LeNet-300-100 MNIST: epoch FLOPs (3 x forward)", epoch_flops / 1e9, "GFLOP"),
             row("fp32 matmul throughput (2048^3)", epoch_flops / median(bound_s) / 1e9, "GFLOP/s")]
    return {"rows": rows, "times_s": times, "train_samples": n}


def row(name: str, value: float, unit: str, target: str | None = None,
        check: Callable[[float], bool] | None = None) -> dict[str, Any]:
    return {"name": name, "value": value, "unit": unit, "target": target,
            "met": None if check is None else bool(check(value))}


def cifar_shaped(n: int, device: torch.device, seed: int = 0) -> Splits:
    g = torch.Generator().manual_seed(seed)
    x, y = torch.randn(n, 3, 32, 32, generator=g), torch.randint(0, 10, (n,), generator=g)
    empty = TensorSet(x[:0], y[:0])
    return Splits(DataInfo("cifar_shaped", (3, 32, 32), 10), TensorSet(x, y), empty, empty).to(device)


def convnets_section(rounds: int, samples: int, log: Callable[[str], None], device: torch.device | None = None,
                     models: tuple[tuple[str, int], ...] = (("conv6", 60), ("resnet20", 128)),
                     amp: bool = False) -> dict[str, Any]:
    """Conv-6 and ResNet-20 (or any conf/model) on CIFAR-shaped random data: vs FLOP bound, mask cost."""
    device = device or torch.device("cpu")
    data = cifar_shaped(samples, device)
    variants: dict[str, Callable[[], float]] = {}
    flops = {}
    for name, bs in models:
        build = model_factory(name, data.info)
        flops[name] = count_flops(build(), data.train.x[:1].cpu()).train_epoch(samples)
        variants[f"{name} b{bs} dense"] = our_epoch(build, data, bs, 0.0, device, amp)
        variants[f"{name} b{bs} masked"] = our_epoch(build, data, bs, MASKED, device, amp)
    throughput: list[float] = []

    def matmul() -> float:
        throughput.append(matmul_flops_per_s(device, torch.bfloat16 if amp else torch.float32))
        return 1.0 / throughput[-1]  # seconds per FLOP

    variants = {"matmul": matmul, **variants}
    times = interleave(variants, rounds, log)
    rows = []
    for name, bs in models:
        dense, masked = times[f"{name} b{bs} dense"], times[f"{name} b{bs} masked"]
        bound = [flops[name] * s for s in times["matmul"]]
        tag = f"{name} CIFAR-shaped b{bs}{' bf16' if amp else ''} ({device.type})"
        rows += [row(f"{tag}: epoch / FLOP bound", ratio(dense, bound), "x"),
                 row(f"{tag}: masked / dense (mask cost)", ratio(masked, dense), "x", "<= 1.05",
                     lambda v: v <= 1.05),
                 row(f"{tag}: samples/s, dense", samples / median(dense), "1/s"),
                 row(f"{tag}: epoch of {samples} samples, dense (median)", median(dense), "s")]
    rows.append(row(f"{'bf16' if amp else 'fp32'} matmul throughput ({device.type})", median(throughput) / 1e9,
                    "GFLOP/s"))
    return {"rows": rows, "times_s": times, "samples": samples, "epoch_flops": flops}


def payoff_section(rounds: int, log: Callable[[str], None]) -> dict[str, Any]:
    """What unit pruning buys at inference: the exported slim model against the masked one (prune_lab.payoff);
    latencies interleaved over rounds like every other timing here."""
    from prune_lab.export import export_slim
    from prune_lab.payoff import latency_ms, measure_payoff
    from prune_lab.pruners.scores import Magnitude
    from prune_lab.pruners.selection import Units, select_mask

    rows = []
    cases = (("lenet_300_100", DataInfo("mnist", (1, 28, 28), 10)), ("conv6", DataInfo("cifar10", (3, 32, 32), 10)))
    for name, info in cases:
        for sparsity in (0.5, 0.8):
            model = model_factory(name, info)().eval()
            names = PrunableSelection().names(model)
            params = dict(model.named_parameters())
            weights = {n: params[n].detach() for n in names}
            mask = select_mask(Magnitude(), Units(), weights, Mask.ones(model, names), sparsity)
            mask.apply_(model)
            sample = torch.randn(1, *info.input_shape)
            p = measure_payoff(model, sample, "slim")
            slim = export_slim(model, sample)
            tag = f"{name} unit-pruned {sparsity:.0%}"
            rows += [row(f"{tag}: slim params / params", p["slim_params"] / sum(t.numel() for t in params.values()),
                         "x"),
                     row(f"{tag}: slim FLOPs / dense FLOPs", p["slim_flops"] / p["flops_dense"], "x"),
                     row(f"{tag}: sparse bytes / dense bytes", p["bytes_sparse"] / p["bytes_dense"], "x")]
            for batch in (1, 256):
                x = torch.randn(batch, *info.input_shape)
                times = interleave({f"{tag} b{batch} masked": lambda m=model, x=x: latency_ms(m, x, 0.5),
                                    f"{tag} b{batch} slim": lambda m=slim, x=x: latency_ms(m, x, 0.5)}, rounds, log)
                masked_t, slim_t = times[f"{tag} b{batch} masked"], times[f"{tag} b{batch} slim"]
                rows += [row(f"{tag}: CPU latency b{batch}, slim / masked", ratio(slim_t, masked_t), "x"),
                         row(f"{tag}: CPU latency b{batch}, masked (median)", median(masked_t), "ms")]
    return {"rows": rows}
