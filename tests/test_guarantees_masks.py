"""Masks, unstructured ranking and unit pruning, checked against hand counts and torch.nn.utils.prune.

Written to kill the mutants `make mutation` finds in prune_lab/masks.py, pruners/criteria.py and
pruners/structured.py: each test states a property a plausible small bug would break.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.utils.prune as torch_prune
from torch import nn

from prune_lab.errors import UserError
from prune_lab.masks import LayerSparsity, Mask, PrunableSelection, measured_sparsity
from prune_lab.pruners.scores import Magnitude, Random, row_norms
from prune_lab.pruners.selection import Units, Unstructured, _prune_more, prune_lowest, select_mask


def net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))


def weights(m: nn.Module) -> dict[str, torch.Tensor]:
    params = dict(m.named_parameters())
    return {n: params[n].detach().clone() for n in PrunableSelection().names(m)}


def ones(w: dict[str, torch.Tensor]) -> Mask:
    return Mask({n: torch.ones_like(t, dtype=torch.bool) for n, t in w.items()})


# --- masks.py -----------------------------------------------------------------------------------


class Linear(nn.Module):
    """Named like torch's Linear, but its weight is a plain tensor: not a parameter, so not prunable."""

    def __init__(self) -> None:
        super().__init__()
        self.weight = torch.ones(2, 2)


class Conv3d(nn.Module):
    """Named like a prunable type, with no weight at all."""


def test_selection_takes_only_parameter_weights_of_the_listed_types_and_keeps_tuples():
    m = nn.Sequential(nn.Linear(2, 3), Linear(), nn.BatchNorm1d(3), nn.Conv2d(1, 2, 1), Conv3d())
    assert PrunableSelection().names(m) == ["0.weight", "3.weight"]
    selection = PrunableSelection(layer_types=["Linear", "Conv2d"], exclude=["nothing"])
    assert selection.layer_types == ("Linear", "Conv2d") and selection.exclude == ("nothing",)
    hash(selection)  # frozen and hashable: lists were turned into tuples
    # The fake Linear (weight not a Parameter) and BatchNorm (type not listed) are skipped; the loop goes on.
    assert selection.names(m) == ["0.weight", "3.weight"]
    assert PrunableSelection(layer_types=("BatchNorm1d",)).names(m) == ["2.weight"]


def test_selection_of_a_bare_layer_names_its_weight_and_exclude_patterns_are_shell_style():
    assert PrunableSelection().names(nn.Linear(2, 2)) == ["weight"]
    m = net()
    assert PrunableSelection(exclude=("0.*", "4.weight")).names(m) == ["2.weight"]
    with pytest.raises(UserError, match=r"^no prunable weights in Sequential.*\['Linear'\].*exclude=\['\*'\]"):
        PrunableSelection(layer_types=("Linear",), exclude=("*",)).names(m)


def test_layer_sparsity_is_the_share_of_zeros_and_zero_for_an_empty_layer():
    assert LayerSparsity(8, 2).sparsity == pytest.approx(0.75)
    assert LayerSparsity(0, 0).sparsity == 0.0


def test_a_mask_holds_bool_tensors_only_and_a_copy_of_the_mapping():
    with pytest.raises(TypeError, match=r"^mask for w must be a bool tensor, got torch.float32"):
        Mask({"w": torch.ones(2)})
    with pytest.raises(TypeError, match=r"got <class 'list'>"):
        Mask({"w": [True]})
    source = {"w": torch.ones(2, dtype=torch.bool)}
    mask = Mask(source)
    source["v"] = torch.zeros(1, dtype=torch.bool)
    assert mask.names() == ["w"] and type(mask.tensors) is dict


def test_ones_from_weights_and_apply():
    m = net()
    names = PrunableSelection().names(m)
    full = Mask.ones(m, names)
    assert full.names() == names
    assert all(t.dtype == torch.bool and t.all() and t.shape == dict(m.named_parameters())[n].shape
               for n, t in full.tensors.items())
    with torch.no_grad():
        m[0].weight[0, :2] = 0
    carried = Mask.from_weights(m, ["0.weight"])
    assert carried.names() == ["0.weight"] and int((~carried.tensors["0.weight"]).sum()) == 2
    keep = torch.rand(5, 6) > 0.5
    expected = m[2].weight.detach() * keep
    Mask({"2.weight": keep}).apply_(m)
    assert torch.equal(m[2].weight.detach(), expected)
    assert m[2].weight.requires_grad  # in place, under no_grad: still the same trainable parameter


def test_check_fits_names_the_problem():
    m = net()
    Mask.ones(m, ["0.weight"]).check_fits(m)  # fits: no error
    with pytest.raises(ValueError, match=r"^mask names 'x.weight', which the model does not have"):
        Mask({"x.weight": torch.ones(1, dtype=torch.bool)}).check_fits(m)
    with pytest.raises(ValueError, match=r"^mask for 0.weight has shape \(4, 6\), weight \(6, 4\)"):
        Mask({"0.weight": torch.ones(4, 6, dtype=torch.bool)}).check_fits(m)


def test_counts_sparsity_and_intersection_by_hand():
    a = Mask({"x": torch.tensor([True, False, True, True]), "y": torch.tensor([[False, False], [True, True]])})
    assert a.layers() == {"x": LayerSparsity(4, 3), "y": LayerSparsity(4, 2)}
    assert a.sparsity() == pytest.approx(3 / 8)
    assert Mask({}).sparsity() == 0.0
    b = Mask({"x": torch.tensor([False, True, True, True]), "y": torch.ones(2, 2, dtype=torch.bool)})
    both = a & b
    assert torch.equal(both.tensors["x"], torch.tensor([False, False, True, True]))
    assert torch.equal(both.tensors["y"], a.tensors["y"])
    with pytest.raises(ValueError, match=r"^masks over different parameters cannot be combined$"):
        a & Mask({"x": a.tensors["x"]})


def test_state_dict_round_trip_turns_saved_numbers_back_into_bools():
    a = Mask({"x": torch.tensor([True, False])})
    state = a.state_dict()
    assert state["x"].device.type == "cpu" and torch.equal(state["x"], a.tensors["x"])
    back = Mask.from_state_dict({"x": torch.tensor([1, 0], dtype=torch.uint8)})
    assert back.tensors["x"].dtype == torch.bool and torch.equal(back.tensors["x"], a.tensors["x"])
    assert Mask.from_state_dict(state, device="meta").tensors["x"].device.type == "meta"


def test_measured_sparsity_counts_actual_zeros():
    m = nn.Linear(3, 2)
    with torch.no_grad():
        m.weight.copy_(torch.tensor([[0.0, 1.0, 0.0], [2.0, 0.0, 3.0]]))
    assert measured_sparsity(m, ["weight"]) == {"weight": LayerSparsity(6, 3)}


# --- criteria.py --------------------------------------------------------------------------------


def test_unknown_scope_is_refused_with_the_choices():
    for make in (lambda: Unstructured("local"), lambda: Units("local")):
        with pytest.raises(UserError, match=r"^pruner scope='local' is not one of \('layerwise', 'global'\)"):
            make()
    with pytest.raises(UserError, match="scope"):
        prune_lowest({}, Mask({}), 0.5, "local")


def test_prune_more_removes_exactly_count_of_the_lowest_live_scores():
    scores = torch.tensor([5.0, -3.0, 1.0, 0.5, 2.0, -7.0])
    keep = torch.tensor([True, True, True, True, True, False])
    assert torch.equal(_prune_more(scores, keep, 0), keep)
    one = _prune_more(scores, keep, 1)
    assert torch.equal(one, torch.tensor([True, False, True, True, True, False]))
    three = _prune_more(scores, keep, 3)
    assert torch.equal(three, torch.tensor([True, False, False, False, True, False]))
    assert torch.equal(keep, torch.tensor([True, True, True, True, True, False])), "the input mask is untouched"
    # Integer scores rank as numbers too.
    assert torch.equal(_prune_more(torch.tensor([3, 1, 2]), torch.ones(3, dtype=torch.bool), 1),
                       torch.tensor([True, False, True]))


def test_prune_lowest_counts_weights_already_pruned_by_hand():
    scores = {"a": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "b": torch.tensor([0.1, 9.0, 8.0, 7.0, 6.0, 5.0])}
    mask = Mask({"a": torch.tensor([[True, True], [True, False]]), "b": torch.ones(6, dtype=torch.bool)})
    layer = prune_lowest(scores, mask, 0.5, "layerwise")
    # a: 2 of 4 must be pruned, 1 already is (the 4.0): the lowest live one (1.0) goes. b: 3 of 6.
    assert torch.equal(layer.tensors["a"], torch.tensor([[False, True], [True, False]]))
    assert torch.equal(layer.tensors["b"], torch.tensor([False, True, True, True, False, False]))
    assert layer.tensors["a"].shape == (2, 2)
    glob = prune_lowest(scores, mask, 0.5, "global")
    # 10 weights, 5 to prune, 1 already: 0.1, 1.0, 2.0 and 3.0 go (live scores only).
    assert torch.equal(glob.tensors["a"], torch.tensor([[False, False], [False, False]]))
    assert torch.equal(glob.tensors["b"], torch.tensor([False, True, True, True, True, True]))
    # A target below what is already pruned prunes nothing more and revives nothing.
    assert torch.equal(prune_lowest(scores, mask, 0.0, "global").tensors["a"], mask.tensors["a"])


@pytest.mark.parametrize("sparsity", [0.2, 0.5, 0.9])
def test_magnitude_ranks_by_absolute_value_like_torch(sparsity: float):
    w = {"x": torch.tensor([[-5.0, 0.1, 3.0], [-0.2, 2.0, -1.0]])}
    ours = select_mask(Magnitude(), Unstructured(), w, ones(w), sparsity).tensors["x"]
    theirs = torch_prune.L1Unstructured(sparsity).compute_mask(w["x"], torch.ones_like(w["x"]))
    assert torch.equal(ours, theirs.bool())


def test_magnitude_and_random_respect_their_scope():
    m = net()
    w = weights(m)
    for score in (Magnitude(), Random()):
        g = torch.Generator().manual_seed(3)
        layer = select_mask(score, Unstructured("layerwise"), w, ones(w), 0.5, g)
        assert all(s.nonzero == s.numel - round(0.5 * s.numel) for s in layer.layers().values())
        glob = select_mask(score, Unstructured("global"), w, ones(w), 0.3, torch.Generator().manual_seed(3))
        total = sum(t.numel() for t in w.values())
        assert sum(s.numel - s.nonzero for s in glob.layers().values()) == round(0.3 * total)
    assert Unstructured().scope == "layerwise" and Units().scope == "layerwise"


def test_random_needs_a_generator_and_draws_uniform_scores_from_it():
    w = {"x": torch.zeros(400)}
    with pytest.raises(ValueError, match=r"^the Random score needs a generator for reproducibility$"):
        select_mask(Random(), Unstructured(), w, ones(w), 0.5)
    mask = select_mask(Random(), Unstructured(), w, ones(w), 0.5, torch.Generator().manual_seed(0)).tensors["x"]
    # The same draw torch.rand makes with that generator: the lowest half of those scores go.
    scores = torch.rand(400, generator=torch.Generator().manual_seed(0))
    assert torch.equal(mask, scores > scores.sort().values[199])
    assert mask[:200].sum() not in (0, 200)  # spread over the layer, not a block


# --- structured.py ------------------------------------------------------------------------------


def test_magnitude_unit_scores_are_l2_norms_of_surviving_weights():
    w = torch.tensor([[3.0, 4.0, 1.0], [1.0, 1.0, 1.0], [2.0, 0.0, 0.0]])
    keep = torch.tensor([[True, True, False], [True, True, True], [False, False, False]])
    assert torch.allclose(row_norms(w.abs(), keep), torch.tensor([5.0, 3**0.5, 0.0]))
    conv = torch.ones(2, 1, 2, 2)
    assert torch.allclose(row_norms(conv, torch.ones_like(conv, dtype=torch.bool)), torch.tensor([2.0, 2.0]))


def test_a_dead_unit_goes_before_any_live_one_whatever_its_score():
    # Unit 2 is dead already; unit 0's Taylor-like score of 0 is the lowest live one, so it goes next.
    class Fixed(Magnitude):
        def units(self, inputs):
            return {"a": torch.tensor([0.0, 5.0, 9.0, 7.0]), "out": torch.zeros(2)}

    w = {"a": torch.ones(4, 3), "out": torch.ones(2, 4)}
    mask = ones(w)
    mask.tensors["a"][2] = False
    out = select_mask(Fixed(), Units("global"), w, mask, 0.3)  # 20 weights, 6 pruned: dead unit 2, then unit 0
    assert out.tensors["a"].any(1).tolist() == [False, True, False, True]


def test_candidates_skip_the_output_layer_unless_it_is_the_only_one():
    assert Units().candidates(["a", "b", "c"]) == ["a", "b"]
    assert Units().candidates(["a"]) == ["a"]
    assert Units(skip_output=False).candidates(["a", "b"]) == ["a", "b"]
    assert Units().scope == "layerwise" and Units().skip_output is True


def test_max_sparsity_by_hand():
    shapes = {"a": (6, 4), "b": (5, 6), "c": (3, 5)}
    # a may lose 5 rows of 4, b 4 rows of 6; c (output) stays: (20 + 24) / (24 + 30 + 15).
    assert Units().max_sparsity(shapes) == pytest.approx(44 / 69)
    assert Units(skip_output=False).max_sparsity(shapes) == pytest.approx((20 + 24 + 10) / 69)
    assert Units().max_sparsity({"conv": (4, 2, 3, 3)}) == pytest.approx(3 / 4)


@pytest.mark.parametrize("sparsity", [0.2, 0.5, 0.7])
def test_layerwise_units_match_torch_ln_structured_without_a_protected_layer(sparsity: float):
    m = net()
    w = weights(m)
    ours = select_mask(Magnitude(), Units("layerwise", skip_output=False), w, ones(w), sparsity)
    for n, t in w.items():
        theirs = torch_prune.LnStructured(sparsity, n=2, dim=0).compute_mask(t, torch.ones_like(t))
        assert torch.equal(ours.tensors[n], theirs.bool()), n


def test_layerwise_share_counts_all_weights_and_never_takes_the_last_unit():
    m = net()
    w = weights(m)  # 24 + 30 + 15 = 69 weights; candidates 0 and 2 hold 54
    mask = select_mask(Magnitude(), Units("layerwise"), w, ones(w), 0.3)
    share = 0.3 * 69 / 54
    for n, rows in (("0.weight", 6), ("2.weight", 5)):
        dead_rows = int((~mask.tensors[n].any(1)).sum())
        assert dead_rows == round(share * rows), n
        assert not (mask.tensors[n].any(1) & ~mask.tensors[n].all(1)).any(), "whole rows only"
    assert mask.tensors["4.weight"].all(), "the output layer is protected"
    near_all = select_mask(Magnitude(), Units("layerwise"), w, ones(w), 0.99)
    assert all(int(near_all.tensors[n].any(1).sum()) == 1 for n in ("0.weight", "2.weight"))
    # The strongest unit is the one left.
    assert near_all.tensors["0.weight"][w["0.weight"].norm(dim=1).argmax()].all()


def test_layerwise_conv_filters_go_whole():
    torch.manual_seed(1)
    w = {"c": torch.randn(4, 2, 3, 3), "o": torch.randn(2, 36)}
    mask = select_mask(Magnitude(), Units("layerwise"), w, ones(w), 0.25)
    dead = ~mask.tensors["c"].reshape(4, -1).any(1)
    assert int(dead.sum()) == round(0.25 * (72 + 72) / 72 * 4)
    assert torch.equal(dead, w["c"].reshape(4, -1).norm(dim=1) <= w["c"].reshape(4, -1).norm(dim=1).sort()[0][1])
    assert mask.tensors["c"].reshape(4, -1).all(1).eq(~dead).all()


def test_global_units_leave_in_norm_order_until_closest_to_the_target_by_hand():
    # Row norms: a = [1, 10, 2], b = [3, 0.5]; 2 weights per row; c (output, 4 weights) is protected.
    w = {"a": torch.tensor([[1.0, 0.0], [10.0, 0.0], [2.0, 0.0]]),
         "b": torch.tensor([[3.0, 0.0], [0.5, 0.0]]),
         "c": torch.ones(2, 2)}
    # 14 weights; 0.3 -> round(4.2) = 4 weights = 2 rows: the two lowest norms, b1 (0.5) then a0 (1).
    mask = select_mask(Magnitude(), Units("global"), w, ones(w), 0.3)
    assert torch.equal(mask.tensors["a"].all(1), torch.tensor([False, True, True]))
    assert torch.equal(mask.tensors["b"].all(1), torch.tensor([True, False]))
    assert mask.tensors["c"].all()
    # 0.5 -> 7 weights: 3 rows (6) is closer than 4 rows (8): b1, a0, a2; b0 is b's last unit and stays.
    mask = select_mask(Magnitude(), Units("global"), w, ones(w), 0.5)
    assert torch.equal(mask.tensors["a"].all(1), torch.tensor([False, True, False]))
    assert torch.equal(mask.tensors["b"].all(1), torch.tensor([True, False]))
    # Nothing left to prune: the mask comes back as it was.
    again = select_mask(Magnitude(), Units("global"), w, mask, 0.2)
    assert all(torch.equal(again.tensors[n], mask.tensors[n]) for n in w)


def test_global_units_count_only_surviving_weights_and_already_pruned_ones():
    w = {"a": torch.tensor([[1.0, 1.0, 1.0, 1.0], [5.0, 5.0, 5.0, 5.0], [9.0, 9.0, 9.0, 9.0]]),
         "o": torch.ones(1, 4)}
    # 16 weights. a0 keeps only 1 of its 4 weights (3 pruned already).
    keep = torch.tensor([[True, False, False, False], [True] * 4, [True] * 4])
    mask = Mask({"a": keep, "o": torch.ones(1, 4, dtype=torch.bool)})
    # 0.25 -> 4 pruned; 3 already: removing a0 (norm 1, gains 1 weight) hits exactly 4.
    out = select_mask(Magnitude(), Units("global"), w, mask, 0.25)
    assert torch.equal(out.tensors["a"].any(1), torch.tensor([False, True, True]))
    assert out.sparsity() == pytest.approx(4 / 16)
    # 0.5 -> 8: a0 (+1) then a1 (+4) = 8 exactly.
    out = select_mask(Magnitude(), Units("global"), w, mask, 0.5)
    assert torch.equal(out.tensors["a"].any(1), torch.tensor([False, False, True]))
    assert out.sparsity() == pytest.approx(8 / 16)


def test_global_units_with_equal_norms_go_in_order_and_across_layers():
    w = {"a": torch.ones(4, 2), "b": torch.ones(4, 2), "o": torch.ones(1, 8)}
    # 24 weights, 0.25 -> 6 -> 3 rows of equal norm: a stable order removes a1, a2, a3 (a0 is a's kept unit
    # by argmax).
    out = select_mask(Magnitude(), Units("global"), w, ones(w), 0.25)
    assert torch.equal(out.tensors["a"].all(1), torch.tensor([True, False, False, False]))
    assert out.tensors["b"].all()
    out = select_mask(Magnitude(), Units("global"), w, ones(w), 0.5)  # 12 -> 6 rows: a1-a3, then b1-b3
    assert torch.equal(out.tensors["b"].all(1), torch.tensor([True, False, False, False]))


def test_global_units_walk_every_candidate_layer_in_order():
    # Three candidate layers and a protected output: each unit's place in the global order maps back to its layer.
    w = {"a": torch.tensor([[1.0], [9.0]]), "b": torch.tensor([[8.0], [2.0]]), "c": torch.tensor([[3.0], [7.0]]),
         "o": torch.ones(1, 2)}
    # 8 weights, 0.375 -> 3 weights = 3 units: norms 1 (a0), 2 (b1), 3 (c0).
    out = select_mask(Magnitude(), Units("global"), w, ones(w), 0.375)
    assert [out.tensors[n].reshape(-1).tolist() for n in ("a", "b", "c")] == [[False, True], [True, False],
                                                                              [False, True]]
