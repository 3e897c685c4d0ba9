"""The trainer: trains a masked model for a budget of epochs and reports. It knows nothing of pruning methods.

Masks are enforced by zeroing pruned weights after every optimizer step (one fused multiply over the
prunable tensors), so no optimizer state (Adam moments, SGD momentum) can bring a pruned weight back
and the forward pass carries no hooks. A method acts inside a phase only through a `StepHook` (`on_step`):
it sees every step's gradients and may hand back a new mask after the step, and whatever it accumulates is
its `state_dict`, saved in every checkpoint with the model, optimizer and schedule, so a resumed phase is
the uninterrupted one for stateful methods too (movement pruning's scores).
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
from prune_lab.errors import Diverged, UserError
from prune_lab.evaluation import evaluate
from prune_lab.lr_schedules import Constant, LRSchedule, lr_factor, parse_duration, to_steps
from prune_lab.masks import Mask
from prune_lab.seeding import derive_seed, generator
from prune_lab.validate import check_fields, check_range

# (logits [B, classes], labels [B], inputs [B, ...]) -> scalar loss; inputs let distillation query a teacher.
LossFn = Callable[[Tensor, Tensor, Tensor], Tensor]
OptimizerFactory = Callable[..., torch.optim.Optimizer]
CHECK_EVERY = 64  # steps between checks for a non-finite loss (and every epoch end)


def cross_entropy(logits: Tensor, y: Tensor, x: Tensor) -> Tensor:
    return F.cross_entropy(logits, y)


class StepHook:
    """What a method does inside one training phase; every method is a no-op here.

    The trainer calls `after_backward` between backward and the optimizer step (gradients in `.grad`, the
    weights those gradients belong to), and `after_step` after the step and mask enforcement; a mask it
    returns is enforced from then on. `state_dict` is saved in every checkpoint of the phase and in the
    finished phase; `load_state_dict` gets it back on resume and on replay."""

    def after_backward(self, model: nn.Module) -> None:
        return None

    def after_step(self, step: int, total: int, model: nn.Module, mask: Mask) -> Mask | None:
        """`step` optimizer steps done of `total`; `mask` is the one in force. A new mask, or None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


@dataclass
class FunctionHook(StepHook):
    """A plain function (step, total, model) -> Mask | None as a stateless hook."""

    fn: Callable[[int, int, nn.Module], Mask | None]

    def after_step(self, step: int, total: int, model: nn.Module, mask: Mask) -> Mask | None:
        return self.fn(step, total, model)


@dataclass
class Hooks(StepHook):
    """Several hooks in one phase, called in order; at most one of them may prune (return a mask)."""

    hooks: list[StepHook]

    def after_backward(self, model: nn.Module) -> None:
        for hook in self.hooks:
            hook.after_backward(model)

    def after_step(self, step: int, total: int, model: nn.Module, mask: Mask) -> Mask | None:
        new = [m for m in (h.after_step(step, total, model, mask) for h in self.hooks) if m is not None]
        if len(new) > 1:
            raise RuntimeError("two step hooks pruned at the same step; a phase has one pruning hook")
        return new[0] if new else None

    def state_dict(self) -> dict[str, Any]:
        return {str(i): h.state_dict() for i, h in enumerate(self.hooks)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for i, h in enumerate(self.hooks):
            h.load_state_dict(state.get(str(i), {}))


OnStep = StepHook | Callable[[int, int, nn.Module], "Mask | None"]


def as_hook(on_step: OnStep | None) -> StepHook | None:
    """The one hook type the trainer calls; a plain function becomes a `FunctionHook`."""
    if on_step is None or isinstance(on_step, StepHook):
        return on_step
    return FunctionHook(on_step)


def combine(*hooks: StepHook | None) -> StepHook | None:
    """The hooks that are there, as one (None when there is none)."""
    present = [h for h in hooks if h is not None]
    return None if not present else present[0] if len(present) == 1 else Hooks(present)


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
    hook_state: dict[str, Any] = field(default_factory=dict)  # the step hook's state at the end of the phase


def train(
    model: nn.Module,
    mask: Mask,
    data: Splits,
    settings: TrainSettings,
    epochs: int,
    *,
    seed: int,
    phase: str,
    on_step: OnStep | None = None,
    loss_fn: LossFn = cross_entropy,
    resume: dict[str, Any] | None = None,
    save: Callable[[dict[str, Any]], None] | None = None,
    log: Callable[[dict[str, Any]], None] = lambda record: None,
    start_step: int = 0,
    tick: Callable[[str, int, int, float], None] | None = None,
) -> TrainResult:
    """Train for `epochs` epochs (resuming from `resume` if given), checkpointing through `save`.

    `start_step` k > 0 trains steps k..end of the phase (late rewinding, as OpenLTH's lottery runner): the
    data order is the uninterrupted phase's from step k on, the learning rate the schedule's value at k, and
    the optimizer starts fresh (no Adam moments or momentum carried over from the rewound run).

    `tick(phase, step, total_steps, mean loss of the epoch so far)` is called at every divergence check (every
    CHECK_EVERY steps, where the loss is read from the device anyway): a live progress bar's updates."""
    hook = as_hook(on_step)
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
        if hook is not None:
            hook.load_state_dict(resume.get("hook", {}))
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
    # A non-finite loss stops the phase: checked every CHECK_EVERY steps (a host read, which would stall a GPU
    # if done every step) and at every epoch end. loss_sum holds the epoch's losses so far, so a NaN or inf in any
    # of them shows.

    def diverged(value: float, epoch: int) -> Diverged:
        return Diverged(f"training diverged: the loss is {value} by step {step} (epoch {epoch + 1} of phase "
                        f"{phase!r}); lower train.lr (now {settings.lr:g}) or warm up (train.warmup=epoch:1)")

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
            if hook is not None:
                hook.after_backward(model)
            optimizer.step()
            scheduler.step()
            torch._foreach_mul_(weights, keeps)  # pruned weights back to exactly zero
            loss_sum += loss.detach() * len(idx)  # stays on device: no host sync per step
            seen += len(idx)
            step += 1
            if step % CHECK_EVERY == 0:
                so_far = loss_sum.item()  # the one host read of these steps
                if not math.isfinite(so_far):
                    raise diverged(so_far, epoch)
                if tick is not None:
                    tick(phase, step, total_steps, so_far / seen)
            if hook is not None:
                new_mask = hook.after_step(step, total_steps, model, mask)
                if new_mask is not None:
                    mask = new_mask
                    weights, keeps = enforce(mask)
        if not math.isfinite(loss_sum.item()):
            raise diverged(loss_sum.item(), epoch)
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
                  "history": history, "hook": hook.state_dict() if hook is not None else {}})
            last_save = time.monotonic()
    return TrainResult(mask, history, hook.state_dict() if hook is not None else {})
