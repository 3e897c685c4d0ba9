"""Masks and the unstructured criteria: measured sparsity, one global threshold, equality with torch.nn.utils.prune."""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from prune_lab.masks import Mask, PrunableSelection, measured_sparsity
from prune_lab.pruners.scores import Magnitude, Random
from prune_lab.pruners.selection import Unstructured, select_mask


def model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(13, 17), nn.ReLU(), nn.Conv1d(1, 5, 3), nn.Flatten(), nn.Linear(7, 3))


def weights_of(m: nn.Module) -> dict[str, torch.Tensor]:
    names = PrunableSelection().names(m)
    params = dict(m.named_parameters())
    return {n: params[n].detach() for n in names}


def full_mask(m: nn.Module) -> Mask:
    return Mask.ones(m, PrunableSelection().names(m))


@pytest.mark.parametrize("sparsity", [0.0, 0.3, 0.5, 0.8, 0.95])
def test_layerwise_magnitude_matches_torch_l1_unstructured(sparsity: float):
    m = model()
    ours = select_mask(Magnitude(), Unstructured("layerwise"), weights_of(m), full_mask(m), sparsity)
    for name, module in [("0.weight", m[0]), ("2.weight", m[2]), ("4.weight", m[4])]:
        theirs = torch_prune.L1Unstructured(sparsity).compute_mask(module.weight.detach(),
                                                                   torch.ones_like(module.weight))
        assert torch.equal(ours.tensors[name], theirs.bool()), name


@pytest.mark.parametrize("sparsity", [0.3, 0.8, 0.95])
def test_global_magnitude_matches_torch_global_unstructured(sparsity: float):
    m = model()
    ours = select_mask(Magnitude(), Unstructured("global"), weights_of(m), full_mask(m), sparsity)
    reference = model()
    torch_prune.global_unstructured([(reference[0], "weight"), (reference[2], "weight"), (reference[4], "weight")],
                                    pruning_method=torch_prune.L1Unstructured, amount=sparsity)
    for name, module in [("0.weight", reference[0]), ("2.weight", reference[2]), ("4.weight", reference[4])]:
        assert torch.equal(ours.tensors[name], module.weight_mask.bool()), name


@pytest.mark.parametrize("sparsity", [0.1, 0.5, 0.77, 0.9])
def test_layerwise_prunes_every_layer_to_the_fraction_within_one_weight(sparsity: float):
    m = model()
    mask = select_mask(Magnitude(), Unstructured("layerwise"), weights_of(m), full_mask(m), sparsity)
    mask.apply_(m)
    for name, layer in measured_sparsity(m, mask.names()).items():
        assert abs(layer.sparsity * layer.numel - sparsity * layer.numel) <= 1, name


def test_global_uses_one_threshold_and_reaches_the_total():
    m = model()
    w = weights_of(m)
    mask = select_mask(Magnitude(), Unstructured("global"), w, full_mask(m), 0.6)
    pruned = torch.cat([w[n][~mask.tensors[n]].abs() for n in w])
    kept = torch.cat([w[n][mask.tensors[n]].abs() for n in w])
    assert pruned.max() <= kept.min()
    total = sum(t.numel() for t in w.values())
    assert abs(mask.sparsity() * total - 0.6 * total) <= 1
    # One threshold over unequal layers means unequal per-layer sparsities.
    assert len({round(s.sparsity, 3) for s in mask.layers().values()}) > 1


@pytest.mark.parametrize(("score", "scope"), [(Magnitude(), "layerwise"), (Magnitude(), "global"),
                                              (Random(), "layerwise")])
def test_pruned_weights_stay_pruned_and_count_towards_the_target(score, scope):
    m = model()
    g = torch.Generator().manual_seed(0)
    first = select_mask(score, Unstructured(scope), weights_of(m), full_mask(m), 0.5, g)
    first.apply_(m)
    second = select_mask(score, Unstructured(scope), weights_of(m), first, 0.8, g)
    assert all(not (second.tensors[n] & ~first.tensors[n]).any() for n in first.names()), "nothing regrows"
    total = sum(t.numel() for t in first.tensors.values())
    assert abs(second.sparsity() - 0.8) * total <= len(first.names())


def test_random_is_reproducible_and_seed_dependent():
    m = model()
    a = select_mask(Random(), Unstructured(), weights_of(m), full_mask(m), 0.5, torch.Generator().manual_seed(1))
    b = select_mask(Random(), Unstructured(), weights_of(m), full_mask(m), 0.5, torch.Generator().manual_seed(1))
    c = select_mask(Random(), Unstructured(), weights_of(m), full_mask(m), 0.5, torch.Generator().manual_seed(2))
    assert all(torch.equal(a.tensors[n], b.tensors[n]) for n in a.names())
    assert any(not torch.equal(a.tensors[n], c.tensors[n]) for n in a.names())


def test_selection_is_pure():
    m = model()
    w = weights_of(m)
    before = {n: t.clone() for n, t in w.items()}
    select_mask(Magnitude(), Unstructured("global"), w, full_mask(m), 0.7)
    assert all(torch.equal(before[n], w[n]) for n in w)


def test_mask_is_validated():
    with pytest.raises(TypeError, match="bool"):
        Mask({"w": torch.ones(3)})
    m = model()
    with pytest.raises(ValueError, match="shape"):
        Mask({"0.weight": torch.ones(2, 2, dtype=torch.bool)}).check_fits(m)
    with pytest.raises(ValueError, match="does not have"):
        Mask({"nope.weight": torch.ones(2, dtype=torch.bool)}).check_fits(m)


def test_prunable_selection_defaults_to_linear_and_conv_weights_and_honours_exclude():
    m = model()
    assert PrunableSelection().names(m) == ["0.weight", "2.weight", "4.weight"]
    assert PrunableSelection(exclude=("4.*",)).names(m) == ["0.weight", "2.weight"]
    assert PrunableSelection(layer_types=("Linear",)).names(m) == ["0.weight", "4.weight"]
