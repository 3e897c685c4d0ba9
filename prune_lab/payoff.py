"""What pruning buys, measured for one sparsity level: FLOPs, bytes on disk, and (unit pruning) a slim model.

- `flops_dense` / `flops_nonzero`: per-sample forward FLOPs of the matmul layers (see prune_lab.flops).
- `bytes_dense`: the `torch.save` size of the state dict; `bytes_sparse`: the same weights saved in the
  sparse format below (each tensor as nonzero values + a bitmask or int32 indices, whichever is smaller,
  or dense when that is smaller still). Both are real serialised sizes, not estimates.
- Asked for (`measure=slim|latency`, or `python -m prune_lab.measure RUN_DIR` on a finished run's saved
  levels), when whole units or filters are pruned and the model is a chain (prune_lab.export): `slim_params`,
  `slim_flops`, and (latency) CPU inference latency of the masked and the slim model at batch 1 and 256.
  A deep copy, an export and timed passes per level cost far more than the rest, so not by default.
"""

from __future__ import annotations

import copy
import io
import math
import statistics
import time
from typing import Any

import torch
from torch import Tensor, nn

from prune_lab.errors import UserError
from prune_lab.export import NotExportable, dead_units, export_slim, params
from prune_lab.flops import MATMUL_LAYERS, count_flops

# What a level measures: cheap (FLOPs, parameters, bytes: every level, always), slim (+ the slim export's
# size), latency (+ timings of the masked and slim models). The one list `measure=` and the command take.
MEASURES = ("cheap", "slim", "latency")
LATENCY_BATCHES = (1, 256)
LATENCY_BUDGET_S = 0.25  # per model and batch size: repeats until this much time, so payoff stays cheap


def saved_size(obj: Any) -> int:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.tell()


def pack_sparse(t: Tensor) -> dict[str, Any] | Tensor:
    """One tensor in the smallest of: dense, values + bitmask, values + int32 flat indices."""
    flat = t.detach().cpu().reshape(-1)
    nonzero = flat != 0
    nnz = int(nonzero.sum())
    item = flat.element_size()
    dense, bitmask, indices = flat.numel() * item, nnz * item + math.ceil(flat.numel() / 8), nnz * (item + 4)
    if not t.is_floating_point() or dense <= min(bitmask, indices) or flat.numel() >= 2**31:
        return t.detach().cpu()
    values = flat[nonzero].clone()
    if bitmask <= indices:
        bits = torch.zeros(math.ceil(flat.numel() / 8) * 8, dtype=torch.uint8)
        bits[: flat.numel()] = nonzero.to(torch.uint8)
        weights = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8)
        packed = (bits.view(-1, 8) * weights).sum(1, dtype=torch.uint8)  # [ceil(numel/8)], MSB first
        return {"shape": tuple(t.shape), "values": values, "bitmask": packed}
    return {"shape": tuple(t.shape), "values": values, "indices": nonzero.nonzero().reshape(-1).to(torch.int32)}


def unpack_sparse(packed: dict[str, Any] | Tensor) -> Tensor:
    if isinstance(packed, Tensor):
        return packed
    numel = math.prod(packed["shape"])
    flat = torch.zeros(numel, dtype=packed["values"].dtype)
    if "bitmask" in packed:
        shifts = torch.arange(7, -1, -1, dtype=torch.uint8)
        bits = ((packed["bitmask"][:, None] >> shifts) & 1).reshape(-1)[:numel].bool()
        flat[bits] = packed["values"]
    else:
        flat[packed["indices"].long()] = packed["values"]
    return flat.reshape(packed["shape"])


def sparse_state(model: nn.Module) -> dict[str, Any]:
    return {name: pack_sparse(t) for name, t in model.state_dict().items()}


def latency_ms(model: nn.Module, x: Tensor, budget_s: float = LATENCY_BUDGET_S) -> float:
    """Median wall time of one forward pass (inference mode), repeated while within `budget_s` (a slow model:
    one warm-up and one timed pass, so a level's payoff stays cheap)."""
    times: list[float] = []
    with torch.inference_mode():
        model(x)  # warm-up: allocator and kernel selection
        spent = 0.0
        while not times or (spent < budget_s and len(times) < 200):
            t0 = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - t0)
            spent += times[-1]
    return 1000 * statistics.median(times)


def has_dead_units(model: nn.Module) -> bool:
    return any(bool(dead_units(m).any()) for m in model.modules() if isinstance(m, MATMUL_LAYERS))


def check_measure(measure: object) -> str:
    if measure not in MEASURES:
        raise UserError(f"measure={measure!r} is not one of {', '.join(MEASURES)}: cheap records FLOPs, parameters "
                        "and bytes; slim adds the slim export; latency adds CPU timings")
    return str(measure)


def measure_payoff(model: nn.Module, sample: Tensor, measure: str = "cheap") -> dict[str, Any]:
    """The level's payoff fields (see the module docstring); `sample` is one input, [1, *input_shape]."""
    check_measure(measure)
    try:
        flops = count_flops(model, sample[:1])
    except (RuntimeError, TypeError, ValueError) as e:  # a model that needs more than one sample (a graph)
        return {"payoff_error": f"{type(e).__name__}: {e}"}
    record: dict[str, Any] = {
        "flops_dense": flops.dense,
        "flops_nonzero": flops.nonzero,
        "bytes_dense": saved_size({k: v.detach().cpu() for k, v in model.state_dict().items()}),
        "bytes_sparse": saved_size(sparse_state(model)),
    }
    if measure == "cheap" or not has_dead_units(model):
        return record
    cpu_model = copy_to_cpu(model)
    cpu_sample = sample[:1].detach().cpu()
    try:
        slim = export_slim(cpu_model, cpu_sample)
    except NotExportable as e:
        record["slim_export"] = f"not exported: {e}"
        return record
    if params(slim) >= params(cpu_model):
        return record  # dead units whose constants could not be folded away: nothing smaller to show
    record.update(slim_params=params(slim), slim_flops=count_flops(slim, cpu_sample).dense)
    if measure == "latency":
        cpu_model.eval()
        for batch in LATENCY_BATCHES:
            x = cpu_sample.expand(batch, *cpu_sample.shape[1:]).contiguous()
            record[f"latency_b{batch}_ms"] = latency_ms(cpu_model, x)
            record[f"slim_latency_b{batch}_ms"] = latency_ms(slim, x)
    return record


def copy_to_cpu(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model).cpu()
