"""The trainer (prune_lab/training.py): masks enforced after every step, per-epoch seeds, resume, settings.

The reference is a hand-written loop of what `train` documents (per-epoch `torch.manual_seed`, a shuffle
from the (seed, phase, "shuffle", epoch) stream, zero_grad / backward / step, pruned weights back to zero):
`train` must reproduce it bit for bit on a tiny network with dropout.
"""

from __future__ import annotations

import copy
import functools

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prune_lab.data.splits import DataInfo, Splits, TensorSet
from prune_lab.errors import UserError
from prune_lab.evaluation import evaluate
from prune_lab.masks import Mask
from prune_lab.seeding import derive_seed, generator
from prune_lab.training import TrainSettings, cross_entropy, train

SGD = functools.partial(torch.optim.SGD, momentum=0.9)


def splits(n: int = 10, augment=None) -> Splits:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 3, generator=g)
    y = torch.randint(0, 2, (n,), generator=g)
    val = TensorSet(torch.randn(6, 3, generator=g), torch.randint(0, 2, (6,), generator=g))
    return Splits(DataInfo("toy", (3,), 2), TensorSet(x, y), val, val, augment)


def net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(3, 8), nn.ReLU(), nn.Dropout(0.5), nn.Linear(8, 2))


def half_mask(model: nn.Module) -> Mask:
    g = torch.Generator().manual_seed(2)
    return Mask({n: torch.rand(p.shape, generator=g) > 0.5 for n, p in model.named_parameters()
                 if n.endswith("weight")})


def settings(**kwargs) -> TrainSettings:
    return TrainSettings(**{"optimizer": SGD, "lr": 0.1, "batch_size": 4, "eval_every": 1,
                            "checkpoint_every_s": 0.0, **kwargs})


def reference(model: nn.Module, mask: Mask, data: Splits, lr: float, bs: int, epochs: int, seed: int, phase: str):
    """What `train` documents, written out: returns the per-epoch mean training losses."""
    params = dict(model.named_parameters())
    opt = SGD(model.parameters(), lr=lr)
    mask.apply_(model)
    model.train()
    losses = []
    n = len(data.train)
    for epoch in range(epochs):
        torch.manual_seed(derive_seed(seed, phase, epoch))
        perm = torch.randperm(n, generator=generator(seed, phase, "shuffle", epoch))
        total = 0.0
        for start in range(0, n, bs):
            idx = perm[start:start + bs]
            loss = F.cross_entropy(model(data.train.x[idx]), data.train.y[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for name, keep in mask.tensors.items():
                    params[name].mul_(keep)
            total += loss.item() * len(idx)
        losses.append(total / n)
    return losses


def test_train_is_the_documented_loop_bit_for_bit():
    data = splits()
    expected_model = net()
    expected = reference(expected_model, half_mask(expected_model), data, 0.1, 4, 3, seed=5, phase="dense")
    model = net()
    model.eval()  # train() must switch dropout on itself
    torch.manual_seed(999)  # and reseed per epoch, whatever the global RNG state was
    result = train(model, half_mask(model), data, settings(), 3, seed=5, phase="dense")
    for (name, p), q in zip(model.named_parameters(), expected_model.parameters()):
        assert torch.equal(p, q), name
    assert [r["train_loss"] for r in result.history] == pytest.approx(expected, rel=1e-6)
    assert [(r["phase"], r["epoch"], r["step"]) for r in result.history] == [("dense", 1, 3), ("dense", 2, 6),
                                                                             ("dense", 3, 9)]
    assert model.training


def test_pruned_weights_are_zero_from_the_start_and_after_every_step():
    data = splits()
    model = net()
    mask = half_mask(model)
    seen = []

    def check(step, total, m):
        params = dict(m.named_parameters())
        seen.append((step, total, all(torch.count_nonzero(params[n][~k]) == 0 for n, k in mask.tensors.items())))
        return None

    result = train(model, mask, data, settings(), 2, seed=0, phase="t", on_step=check)
    assert seen == [(s, 6, True) for s in range(1, 7)]
    assert result.mask is mask
    params = dict(model.named_parameters())
    assert all(torch.count_nonzero(params[n][k]) == int(k.sum()) for n, k in mask.tensors.items()), "survivors live"


def test_a_mask_returned_by_the_step_hook_is_enforced_from_then_on():
    data = splits()
    model = net()
    names = [n for n, _ in model.named_parameters() if n.endswith("weight")]
    params = dict(model.named_parameters())
    tighter = Mask({n: torch.full_like(params[n], n != "0.weight", dtype=torch.bool) for n in names})
    result = train(model, Mask.ones(model, names), data, settings(), 2, seed=0, phase="t",
                   on_step=lambda step, total, m: tighter if step == 2 else None)
    assert result.mask is tighter
    assert torch.count_nonzero(model[0].weight) == 0 and torch.count_nonzero(model[3].weight) > 0


def test_epochs_shuffle_differently_and_batches_cover_the_data():
    data = splits(n=10)
    batches = []

    def record(logits, y, x):
        batches.append(x.clone())
        return cross_entropy(logits, y, x)

    model = nn.Linear(3, 2)
    train(model, Mask.ones(model, ["weight"]), data, settings(), 2, seed=3, phase="p", loss_fn=record)
    assert [len(b) for b in batches] == [4, 4, 2, 4, 4, 2]
    for epoch in range(2):
        perm = torch.randperm(10, generator=generator(3, "p", "shuffle", epoch))
        assert torch.equal(torch.cat(batches[3 * epoch:3 * epoch + 3]), data.train.x[perm])
    assert not torch.equal(torch.cat(batches[:3]), torch.cat(batches[3:]))


def test_dropout_draws_come_from_the_epochs_own_seed():
    draws = []

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(3, 2)

        def forward(self, x):
            if self.training:  # the first global draw of each epoch's (only) training step
                draws.append(torch.rand(()).item())
            return self.lin(x)

    probe = Probe()
    train(probe, Mask.ones(probe, ["lin.weight"]), splits(n=4), settings(), 2, seed=4, phase="q")
    assert len(draws) == 2
    for epoch, draw in enumerate(draws):
        torch.manual_seed(derive_seed(4, "q", epoch))
        assert draw == torch.rand(()).item()


def test_augmentation_draws_from_the_epochs_augment_stream():
    seen = []

    def augment(x, g):
        seen.append(torch.rand((), generator=g).item())
        return x + 1.0

    data = splits(n=4, augment=augment)
    batches = []

    def record(logits, y, x):
        batches.append(x.clone())
        return cross_entropy(logits, y, x)

    model = nn.Linear(3, 2)
    train(model, Mask.ones(model, ["weight"]), data, settings(), 2, seed=6, phase="a", loss_fn=record)
    assert seen == [torch.rand((), generator=generator(6, "a", "augment", e)).item() for e in range(2)]
    perm = torch.randperm(4, generator=generator(6, "a", "shuffle", 0))
    assert torch.equal(batches[0], data.train.x[perm] + 1.0), "the model sees the augmented batch"


def test_seed_and_phase_change_the_run_and_equal_ones_repeat_it():
    data = splits()

    def final(seed, phase):
        model = net()
        train(model, half_mask(model), data, settings(), 2, seed=seed, phase=phase)
        return torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    a = final(1, "x")
    assert torch.equal(a, final(1, "x"))
    assert not torch.equal(a, final(2, "x")) and not torch.equal(a, final(1, "y"))


def test_validation_every_n_epochs_and_always_after_the_last():
    data = splits()
    model = net()
    logged = []
    result = train(model, half_mask(model), data, settings(eval_every=2, eval_batch_size=4), 3, seed=0, phase="v",
                   log=logged.append)
    assert ["val_acc" in r for r in result.history] == [False, True, True]
    other = net()
    every_third = train(other, half_mask(other), data, settings(eval_every=3), 4, seed=0, phase="v")
    assert ["val_acc" in r for r in every_third.history] == [False, False, True, True]
    assert logged == result.history
    final = evaluate(model, data.val, 4)
    assert result.history[-1]["val_acc"] == final.acc and result.history[-1]["val_loss"] == final.loss


def test_checkpoints_are_saved_between_epochs_and_resume_to_the_uninterrupted_result():
    data = splits()
    model = net()
    saved = []
    whole = train(model, half_mask(model), data, settings(), 3, seed=7, phase="r",
                  save=lambda state: saved.append(copy.deepcopy(state)))  # as saving to disk would
    assert [s["epoch"] for s in saved] == [1, 2], "after every epoch but the last"
    assert [len(s["history"]) for s in saved] == [1, 2]
    checkpoint = saved[0]
    assert set(checkpoint) == {"model", "optimizer", "scheduler", "mask", "epoch", "history", "hook"}
    resumed_model = net()
    steps = []
    resumed = train(resumed_model, Mask.ones(resumed_model, []), data, settings(), 3, seed=7, phase="r",
                    resume=checkpoint, on_step=lambda s, total, m: steps.append((s, total)))
    for p, q in zip(resumed_model.parameters(), model.parameters()):
        assert torch.equal(p, q)
    assert resumed.history == whole.history
    assert steps[0] == (4, 9) and steps[-1] == (9, 9)
    assert torch.equal(resumed.mask.tensors["0.weight"], half_mask(net()).tensors["0.weight"])


def test_no_checkpoint_before_its_interval():
    data = splits()
    model = net()
    saved = []
    train(model, half_mask(model), data, settings(checkpoint_every_s=3600.0), 3, seed=7, phase="r",
          save=saved.append)
    assert saved == []


def test_cross_entropy_ignores_the_inputs():
    logits, y = torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0])
    assert torch.equal(cross_entropy(logits, y, torch.zeros(2)), F.cross_entropy(logits, y))


def test_settings_defaults():
    s = TrainSettings(optimizer=SGD)
    assert (s.lr, s.epochs, s.batch_size, s.finetune_epochs, s.eval_every, s.eval_batch_size,
            s.checkpoint_every_s, s.amp, s.compile) == (1e-2, 100, 64, 50, 1, 4096, 10.0, False, False)


@pytest.mark.parametrize(("key", "value", "message"), [
    ("lr", 0, r"^train.lr=0 must be a positive number"),
    ("lr", -0.1, r"^train.lr=-0.1 must be a positive number"),
    ("lr", True, r"^train.lr=True"),
    ("epochs", -1, r"^train.epochs=-1 must be in \[0, inf\], e.g. train.epochs=10"),
    ("finetune_epochs", -1, r"^train.finetune_epochs=-1 must be in \[0, inf\], e.g. train.finetune_epochs=10"),
    ("batch_size", 0, r"^train.batch_size=0 must be in \[1, inf\], e.g. train.batch_size=64"),
    ("eval_every", 0, r"^train.eval_every=0 must be in \[1, inf\], e.g. train.eval_every=64"),
    ("eval_batch_size", 0, r"^train.eval_batch_size=0 must be in \[1, inf\], e.g. train.eval_batch_size=64"),
    ("checkpoint_every_s", -1.0, r"^train.checkpoint_every_s=-1.0 must be in \[0, inf\], e.g. 0 \(every epoch\)"),
    ("batch_size", True, r"^train.batch_size=True must be a whole number"),
])
def test_settings_are_refused_with_the_key(key: str, value: object, message: str):
    with pytest.raises(UserError, match=message):
        TrainSettings(optimizer=SGD, **{key: value})


def test_boundary_settings_are_accepted():
    s = TrainSettings(optimizer=SGD, lr=1e-9, epochs=0, finetune_epochs=0, batch_size=1, eval_every=1,
                      eval_batch_size=1, checkpoint_every_s=0)
    assert s.checkpoint_every_s == 0.0 and isinstance(s.checkpoint_every_s, float)


def test_checkpoint_every_0_s_saves_after_every_epoch_even_on_a_coarse_clock(monkeypatch: pytest.MonkeyPatch):
    import prune_lab.training

    monkeypatch.setattr(prune_lab.training.time, "monotonic", lambda: 100.0)  # no time passes between epochs
    data = splits()
    model = net()
    saved = []
    train(model, half_mask(model), data, settings(checkpoint_every_s=0.0), 3, seed=7, phase="r",
          save=lambda state: saved.append(state["epoch"]))
    assert saved == [1, 2]
