"""Side-by-side timing: variants interleaved round by round, ratios taken within a round, medians over rounds.

The machine is shared and noisy, so an absolute time means little; a ratio of two variants measured
seconds apart in the same round is what a benchmark here reports.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping

import torch

Timer = Callable[[], float]  # runs one variant once, returns the seconds of its measured region


def interleave(variants: Mapping[str, Timer], rounds: int,
               log: Callable[[str], None] = print) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(rounds):
        for name, timer in variants.items():
            times[name].append(timer())
            log(f"  round {r + 1}/{rounds}  {name:<40} {times[name][-1]:8.3f} s")
    return times


def median(values: list[float]) -> float:
    return statistics.median(values)


def ratio(num: list[float], den: list[float]) -> float:
    """Median over rounds of num/den, each pair measured in the same round."""
    return statistics.median(a / b for a, b in zip(num, den))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_flops_per_s(device: torch.device, dtype: torch.dtype = torch.float32, n: int = 2048,
                       reps: int = 4) -> float:
    """This machine's dense matmul throughput (FLOP/s) on n x n matrices: the yardstick of the FLOP bound."""
    g = torch.Generator(device="cpu").manual_seed(0)
    a = torch.randn(n, n, generator=g).to(device, dtype)
    b = torch.randn(n, n, generator=g).to(device, dtype)
    a @ b  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0)
