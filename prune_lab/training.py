"""The trainer: trains a masked model for a budget of epochs and reports. It knows nothing of pruning methods.

Masks are enforced by zeroing pruned weights after every optimizer step (one fused multiply over the
prunable tensors), so no optimizer state (Adam moments, SGD momentum) can bring a pruned weight back
and the forward pass carries no hooks. A pruner that prunes during training does so through `on_step`.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from prune_lab.data.splits import Splits
from prune_lab.errors import UserError
from prune_lab.evaluation import evaluate
from prune_lab.lr_schedules import Constant, LRSchedule, lr_factor, parse_duration, to_steps
from prune_lab.masks import Mask
from prune_lab.seeding import derive_seed, generator
from prune_lab.validate import check_fields, check_range

# (logits [B, classes], labels [B], inputs [B, ...]) -> scalar loss; inputs let distillation query a teacher.
LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]
# (step done so far, total steps of the phase, model) -> a new mask to enforce from now on, or None.
StepHook = Callable[[int, int, nn.Module], "Mask | None"]
OptimizerFactory = Callable[..., torch.optim.Optimizer]


def cross_entropy(logits: Tensor, y: Tensor, x: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


@dataclass(frozen=True)
class TrainSettings:
    """The `train` config group: optimiser and budget, shared by every phase of a run."""

    optimizer: OptimizerFactory  # called as optimizer(params, lr=lr, weight_decay=wd): a partial of torch.optim.*
    lr: float = 1e-2
    schedule: LRSchedule = field(default_factory=Constant)  # train/schedule: lr multiplier per step (lr_schedules)
    warmup: str | None = None  # epoch:K | step:K of linear warmup at the start of every phase; null: none
    weight_decay: float = 0.0  # the optimizer's own: L2 for Adam and SGD, decoupled for AdamW
    epochs: int = 100
    batch_size: int = 64
    finetune_epochs: int = 50
    eval_every: int = 1  # validation every N epochs (and always after the last)
    eval_batch_size: int = 4096
    checkpoint_every_s: float = 10.0  # a resumable checkpoint at the first epoch end after this many seconds
    amp: bool = False  # bf16 autocast of forward + loss (GPU tensor cores); weights, masks, optimizer stay fp32
    compile: bool = False  # torch.compile the model for training: faster steps after a one-off compile

    def __post_init__(self) -> None:
        check_fields(self, "train")
        if self.lr <= 0:
            raise UserError(f"train.lr={self.lr:g} must be a positive number, e.g. train.lr=0.001")
        for key in ("epochs", "finetune_epochs"):
            check_range(getattr(self, key), f"train.{key}", low=0, example=f"train.{key}=10")
        for key in ("batch_size", "eval_every", "eval_batch_size"):
            check_range(getattr(self, key), f"train.{key}", low=1, example=f"train.{key}=64")
        check_range(self.checkpoint_every_s, "train.checkpoint_every_s", low=0, example="0 (every epoch)")
        check_range(self.weight_decay, "train.weight_decay", low=0, example="train.weight_decay=1e-4")
        parse_duration(self.warmup, "train.warmup")


def per_epoch(samples: int, batch_size: int) -> int:
    """Optimizer steps in one epoch: every batch, the last one possibly short."""
    return math.ceil(samples / batch_size)


@dataclass
class TrainResult:
    mask: Mask  # the mask in force at the end (a step hook may have replaced it)
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch


def train(
    model: nn.Module,
    mask: Mask,
    data: Splits,
    settings: TrainSettings,
    epochs: int,
    *,
    seed: int,
    phase: str,
    on_step: StepHook | None = None,
    loss_fn: LossFn = cross_entropy,
    resume: dict[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[dict[str, Any]], None] = lambda record: None,
    start_step: int = 0,
) -> TrainResult:
    """Train for `epochs` epochs (resuming from `resume` if given), checkpointing through `save`.

    `start_step` k > 0 trains steps k..end of the phase (late rewinding, as OpenLTH's lottery runner): the
    data order is the uninterrupted phase's from step k on, the learning rate the schedule's value at k, and
    the optimizer starts fresh (no Adam moments or momentum carried over from the rewound run)."""
    params = dict(model.named_parameters())
    decay = {"weight_decay": settings.weight_decay} if settings.weight_decay else {}  # not every optimizer has it
    optimizer = settings.optimizer(model.parameters(), lr=settings.lr, **decay)
    n, bs = len(data.train), settings.batch_size
    steps_per_epoch = per_epoch(n, bs)
    total_steps = epochs * steps_per_epoch
    warmup = to_steps(parse_duration(settings.warmup, "train.warmup"), steps_per_epoch)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(settings.schedule, warmup, s, total_steps, steps_per_epoch))
    step, history = start_step, []
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scheduler.load_state_dict(resume["scheduler"])
        mask = Mask.from_state_dict(resume["mask"], device=next(iter(params.values())).device)
        step, history = resume["epoch"] * steps_per_epoch, list(resume["history"])
    else:
        with warnings.catch_warnings():  # "scheduler.step() before optimizer.step()": on purpose, to reach k
            warnings.simplefilter("ignore", UserWarning)
            for _ in range(start_step):
                scheduler.step()
    start_epoch = step // steps_per_epoch

    def enforce(m: Mask) -> tuple[list[Tensor], list[Tensor]]:
        m.apply_(model)
        names = m.names()
        return [params[n].data for n in names], [m.tensors[n].to(params[n].dtype) for n in names]

    weights, keeps = enforce(mask)
    device = data.train.y.device
    forward = torch.compile(model) if settings.compile else model  # shares model's parameters
    last_save = time.monotonic()
    model.train()
    for epoch in range(start_epoch, epochs):
        # Per-epoch seeds (not carried RNG state): a resumed run draws what an uninterrupted one would.
        torch.manual_seed(derive_seed(seed, phase, epoch))
        g = generator(seed, phase, "shuffle", epoch)
        # Augmentation draws on the data's device: no host-to-device copy of random offsets per step on a GPU.
        aug_g = generator(seed, phase, "augment", epoch, device=device) if data.augment is not None else None
        perm = torch.randperm(n, generator=g).to(device)
        loss_sum = torch.zeros((), device=device)
        skip = step - epoch * steps_per_epoch  # > 0 only in the first epoch of a late-rewound phase
        seen = 0
        for start in range(skip * bs, n, bs):
            idx = perm[start : start + bs]
            x, y = data.train.x[idx], data.train.y[idx]
            if data.augment is not None:
                x = data.augment(x, aug_g)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=settings.amp):
                loss = loss_fn(forward(x), y, x)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            torch._foreach_mul_(weights, keeps)  # pruned weights back to exactly zero
            loss_sum += loss.detach() * len(idx)  # stays on device: no host sync per step
            seen += len(idx)
            step += 1
            if on_step is not None:
                new_mask = on_step(step, total_steps, model)
                if new_mask is not None:
                    mask = new_mask
                    weights, keeps = enforce(mask)
        record: dict[str, Any] = {"phase": phase, "epoch": epoch + 1, "epochs": epochs, "step": step,
                                  "train_loss": loss_sum.item() / seen, "lr": scheduler.get_last_lr()[0]}
        if (epoch + 1) % settings.eval_every == 0 or epoch + 1 == epochs:
            val = evaluate(model, data.val, settings.eval_batch_size)
            record.update(val_acc=val.acc, val_loss=val.loss)
        history.append(record)
        log(record)
        due = time.monotonic() - last_save >= settings.checkpoint_every_s
        if save is not None and epoch + 1 < epochs and due:
            save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "mask": mask.state_dict(), "epoch": epoch + 1,
                  "history": history})
            last_save = time.monotonic()
    return TrainResult(mask, history)
