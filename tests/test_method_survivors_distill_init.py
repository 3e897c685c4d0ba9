"""The settings that combine with every pruner: the fate of the survivors (random reinitialisation),
knowledge distillation, and the sparsity-aware initialisation."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from conftest import job_from_config
from hydra import compose, initialize_config_dir
from torch import nn

from prune_lab.config import compose_run
from prune_lab.data.splits import DataInfo
from prune_lab.distillation import Distillation, distillation_loss
from prune_lab.job import copy_state
from prune_lab.masks import Mask
from prune_lab.pruners.iterative import SNAPSHOT
from prune_lab.pruners.scores import Magnitude, Random
from prune_lab.pruners.selection import Unstructured, select_mask
from prune_lab.pruners.survivors import apply_fate
from prune_lab.sparsity_aware_init import SparsityAware
from prune_lab.training import cross_entropy

CONF = Path(__file__).resolve().parent.parent / "conf"


# --- random reinitialisation ----------------------------------------------------------------------------
SCHEME_VARIANCE = {  # per-weight variance each scheme intends, from a weight's fan-in and fan-out
    "kaiming_normal": lambda fan_in, fan_out: 2.0 / fan_in,  # ReLU gain^2 = 2
    "xavier_uniform": lambda fan_in, fan_out: 2.0 / (fan_in + fan_out),
}


def scheme_variance(init: str, weight: torch.Tensor) -> float:
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(weight)
    return SCHEME_VARIANCE[init](fan_in, fan_out)


@pytest.mark.parametrize("init", list(SCHEME_VARIANCE))
def test_random_reinit_draws_new_values_from_the_same_distribution(tmp_path: Path, init: str):
    job = job_from_config(tmp_path, f"init={init}", "model.hidden=[256,256]")
    job.set_mask(select_mask(Magnitude(), Unstructured(), job.weights(), job.mask, 0.5))
    original = {n: w.clone() for n, w in job.weights().items()}
    apply_fate(job, "random", "round", 1)
    for name, w in job.weights().items():
        keep = job.mask.tensors[name]
        survivors, before = w[keep].double(), original[name][keep].double()
        assert torch.count_nonzero(w[~keep]) == 0, "pruned weights stay zero"
        assert float((survivors == before).double().mean()) < 0.01, "a fresh draw, not the original values"
        n = survivors.numel()
        var = scheme_variance(init, w)
        # Sampling error: the mean within 4 standard errors, the variance within 4 of its standard errors.
        assert abs(float(survivors.mean())) < 4 * math.sqrt(var / n), name
        assert abs(float(survivors.var()) - var) < 4 * var * math.sqrt(2 / n), name  # normal's SE; uniform's is less
    again = job_from_config(tmp_path / "again", f"init={init}", "model.hidden=[256,256]")
    again.set_mask(job.mask)
    apply_fate(again, "random", "round", 1)
    assert all(torch.equal(a, b) for a, b in zip(job.weights().values(), again.weights().values())), \
        "the same stream gives the same draw"


def test_random_reinit_in_a_pruner_differs_from_trained_and_initial_values(tmp_path: Path):
    job = job_from_config(tmp_path, "pruner=magnitude", "pruner.reinit=random", "train.epochs=2",
                          "train.finetune_epochs=1")
    job.pruner.run(job)
    start, mask = job.starts["finetune"]
    trained, _ = job.ends["dense"]
    for name, keep in mask.tensors.items():
        assert not torch.equal(start[name][keep], trained[name][keep])
        assert not torch.equal(start[name][keep], job.initial_state[name][keep])
        assert torch.count_nonzero(start[name][~keep]) == 0


# --- distillation ---------------------------------------------------------------------------------------
def test_distillation_loss_is_plain_cross_entropy_at_alpha_zero():
    g = torch.Generator().manual_seed(0)
    logits, teacher = torch.randn(32, 5, generator=g), torch.randn(32, 5, generator=g)
    y = torch.randint(0, 5, (32,), generator=g)
    ce = F.cross_entropy(logits, y)
    assert torch.equal(distillation_loss(logits, y, teacher, alpha=0.0, temperature=4.0), ce)
    off = Distillation(alpha=0.0)
    assert not off.active and off.loss_fn(None) is cross_entropy  # no teacher is even needed
    assert torch.equal(off.loss_fn(None)(logits, y, torch.zeros(32, 3)), ce)
    # And away from 0 it is the Hinton blend: KL of the softened distributions, scaled by T^2.
    p_t, log_p_s = F.softmax(teacher / 4, 1), F.log_softmax(logits / 4, 1)
    kl = (p_t * (p_t.log() - log_p_s)).sum(1).mean()
    blend = distillation_loss(logits, y, teacher, alpha=0.3, temperature=4.0)
    torch.testing.assert_close(blend, 0.7 * ce + 0.3 * 16 * kl)
    assert float(distillation_loss(logits, y, logits, alpha=1.0, temperature=4.0)) == pytest.approx(0, abs=1e-6)


def test_distillation_queries_a_frozen_teacher_and_trains_only_the_student():
    torch.manual_seed(0)
    student, teacher = nn.Linear(6, 3), nn.Linear(6, 3).eval()
    x, y = torch.randn(16, 6), torch.randint(0, 3, (16,))
    loss = Distillation(alpha=0.5, temperature=2.0).loss_fn(teacher)(student(x), y, x)
    loss.backward()
    assert student.weight.grad is not None and teacher.weight.grad is None


@pytest.mark.parametrize(("key", "value"), [("alpha", 1.5), ("alpha", -0.1), ("temperature", 0)])
def test_bad_distillation_settings_say_what_to_fix(key: str, value: float):
    from prune_lab.errors import UserError

    with pytest.raises(UserError, match=f"pruner.distill.{key}"):
        Distillation(**{key: value})


# --- sparsity-aware initialisation ----------------------------------------------------------------------
def built_init(*overrides: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose_run(compose("config", overrides=["init=sparsity_aware", *overrides]), {})


def preactivation_variance(weight: torch.Tensor, g: torch.Generator, units: torch.Tensor | None = None) -> float:
    """Variance of the layer's pre-activations (no bias) on standard-normal inputs, over `units` (default all)."""
    if weight.dim() == 2:
        out = torch.randn(2048, weight.shape[1], generator=g) @ weight.T  # [B, units]
    else:
        out = F.conv2d(torch.randn(128, weight.shape[1], 12, 12, generator=g), weight)  # [B, units, H, W]
    return float(out[:, units].var() if units is not None else out.var())


@pytest.mark.parametrize(("model", "shape"), [("lenet_300_100", (1, 28, 28)), ("lenet5", (1, 28, 28))])
@pytest.mark.parametrize("base", ["kaiming_normal", "xavier_uniform"])
@pytest.mark.parametrize("score", [Random(), Magnitude()], ids=["random-mask", "magnitude-mask"])
def test_sparsity_aware_init_keeps_each_layers_preactivation_variance_at_90_percent(model, shape, base, score):
    spec = built_init(f"model={model}", f"init@init.base={base}")
    net = spec.model(DataInfo("x", shape, 10))
    spec.init(net, torch.Generator().manual_seed(0))
    names = spec.prunable.names(net)
    params = dict(net.named_parameters())
    dense = {n: params[n].detach().clone() for n in names}
    mask = select_mask(score, Unstructured(), dense, Mask.ones(net, names), 0.9, torch.Generator().manual_seed(1))
    spec.init.fit_to_mask(net, mask)  # as Job.rewind / Job.reinitialize call it: dense values, then the mask
    mask.apply_(net)
    for n in names:
        w = params[n].detach()
        assert torch.count_nonzero(w[~mask.tensors[n]]) == 0, "pruned weights stay zero"
        # A unit left with no input weight at all is removed, not something an init can bring back (LeNet-5's
        # first convolution has 25 weights a filter: at 90% a filter or two lose all of them).
        alive = mask.tensors[n].reshape(w.shape[0], -1).any(1)
        want = preactivation_variance(dense[n], torch.Generator().manual_seed(2), alive)
        got = preactivation_variance(w, torch.Generator().manual_seed(2), alive)
        assert abs(got / want - 1) < 0.10, f"{n}: {got:.4g} vs the dense scheme's {want:.4g}"
        if w.numel() >= 10_000:  # and that is what the scheme intends, fan_in * sigma^2, within sampling error
            intended = nn.init._calculate_fan_in_and_fan_out(w)[0] * scheme_variance(base, w)
            assert abs(got / intended - 1) < 0.10, f"{n}: {got:.4g} vs fan_in * sigma^2 = {intended:.4g}"
        if isinstance(score, Random):  # the test has teeth: unscaled, about a tenth of it is left
            plain = dense[n] * mask.tensors[n]
            assert preactivation_variance(plain, torch.Generator().manual_seed(2), alive) / want < 0.25


def reset_values(job, overrides: tuple[str, ...], phase: str) -> dict[str, torch.Tensor]:
    """The dense values the pruner reset the weights to before `phase` (what the init saw)."""
    if {"pruner.reinit=random", "pruner.reinit=redraw_each_round"} & set(overrides):  # that stream, drawn again
        ref = copy.deepcopy(job.model)
        stream = ("round", int(phase.split("-")[1])) if phase.startswith("round-") else ()
        job.init.base(ref, job.generator("reinit", *stream))
        return copy_state(ref)
    if any(o.startswith("pruner.rewind=step") for o in overrides):
        return job.load_snapshot(SNAPSHOT)
    return job.initial_state


@pytest.mark.parametrize("overrides", [
    ("pruner=imp", "sparsity=0.5"),
    ("pruner=imp", "sparsity=0.2", "pruner.reinit=redraw_each_round"),
    ("pruner=imp", "sparsity=0.2", "pruner.rewind=step:2"),
    ("pruner=magnitude", "pruner.reinit=original"),
    ("pruner=random", "pruner.reinit=random"),
    ("pruner=unit", "pruner.reinit=original"),
    ("pruner=snip",),
    ("pruner=synflow", "pruner.rounds=5", "pruner.reinit=random"),
], ids=lambda o: "-".join(o))
def test_sparsity_aware_init_composes_with_every_pruner_that_resets_survivors(tmp_path: Path, overrides):
    job = job_from_config(tmp_path, "init=sparsity_aware", "model.hidden=[64]", "train.epochs=1",
                          "train.finetune_epochs=1", *overrides)
    job.pruner.run(job)
    reset = [p for p in job.starts if p != "dense"]
    assert reset, "the pruner trained after pruning"
    for phase in reset:
        start, mask = job.starts[phase]
        values = reset_values(job, overrides, phase)
        for n, keep in mask.tensors.items():
            units = keep.shape[0]
            dense, kept = values[n].reshape(units, -1), (start[n] * keep).reshape(units, -1)
            alive = keep.reshape(units, -1).any(1)
            # Each unit keeps its dense sum of squares (so its pre-activation variance) ...
            torch.testing.assert_close(kept.pow(2).sum(1)[alive], dense.pow(2).sum(1)[alive], rtol=1e-5, atol=0)
            # ... through one positive factor per unit on the values the pruner reset it to.
            factor = kept.pow(2).sum(1, keepdim=True).sqrt() / (dense * keep.reshape(units, -1)).pow(2).sum(
                1, keepdim=True).sqrt()
            torch.testing.assert_close(kept[alive], (dense * keep.reshape(units, -1) * factor)[alive])
            if "pruner=unit" in overrides:  # whole units survive: nothing to compensate
                torch.testing.assert_close(kept, dense * keep.reshape(units, -1))
            else:
                assert bool((factor[alive] > 1).any())


def test_sparsity_aware_init_is_the_base_scheme_until_a_mask_is_known():
    spec = built_init("init@init.base=xavier_normal")
    assert isinstance(spec.init, SparsityAware)
    a, b = nn.Sequential(nn.Linear(30, 20)), nn.Sequential(nn.Linear(30, 20))
    spec.init(a, torch.Generator().manual_seed(3))
    spec.init.base(b, torch.Generator().manual_seed(3))
    assert torch.equal(a[0].weight, b[0].weight)
