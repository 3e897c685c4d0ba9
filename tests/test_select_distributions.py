"""Layer sparsity distributions (pruner/select=er, erk) against google-research/rigl's own arithmetic, and
N:M semi-structured selection (pruner/select=nm) against masks worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from prune_lab.errors import UserError
from prune_lab.masks import Mask
from prune_lab.pruners.at_init import AtInit
from prune_lab.pruners.during_training import Cubic, Gradual
from prune_lab.pruners.iterative import Iterative
from prune_lab.pruners.scores import Magnitude
from prune_lab.pruners.selection import NM, Unstructured, layer_sparsities, select_mask
from prune_lab.record import tolerance

# ---- the oracle: rigl/sparse_utils.py, google-research/rigl at d39fc7d46505cb3196cb1edeb32ed0b6dd44c0f9
# (Apache 2.0), get_sparsities_erdos_renyi and get_n_zeros, copied with only the TensorFlow parts taken out:
# a mask is (name, TF shape list) instead of a tf.Variable, tf.logging dropped, custom_sparsity_map empty.


def rigl_get_n_zeros(size, sparsity):
    return int(np.floor(sparsity * size))


def rigl_get_sparsities_erdos_renyi(all_masks, default_sparsity, include_kernel, erk_power_scale=1.0):
    custom_sparsity_map = {}
    is_eps_valid = False
    dense_layers = set()
    while not is_eps_valid:
        divisor = 0
        rhs = 0
        raw_probabilities = {}
        for name, shape_list in all_masks:
            var_name = name
            n_param = np.prod(shape_list)
            n_zeros = rigl_get_n_zeros(n_param, default_sparsity)
            if var_name in dense_layers:
                rhs -= n_zeros
            elif var_name in custom_sparsity_map:
                pass
            else:
                n_ones = n_param - n_zeros
                rhs += n_ones
                if include_kernel:
                    raw_probabilities[name] = (np.sum(shape_list) / np.prod(shape_list)) ** erk_power_scale
                else:
                    n_in, n_out = shape_list[-2:]
                    raw_probabilities[name] = (n_in + n_out) / (n_in * n_out)
                divisor += raw_probabilities[name] * n_param
        eps = rhs / divisor
        max_prob = np.max(list(raw_probabilities.values()))
        max_prob_one = max_prob * eps
        if max_prob_one > 1:
            is_eps_valid = False
            for mask_name, mask_raw_prob in raw_probabilities.items():
                if mask_raw_prob == max_prob:
                    dense_layers.add(mask_name)
        else:
            is_eps_valid = True
    sparsities = {}
    for name, _shape_list in all_masks:
        if name in dense_layers:
            sparsities[name] = 0.
        else:
            sparsities[name] = 1. - eps * raw_probabilities[name]
    return sparsities

# ---- end of the copy


def tf_layout(shape: tuple[int, ...]) -> list[int]:
    """A torch weight's shape as TF holds it: Linear [out, in] -> [in, out]; Conv [out, in, kh, kw] ->
    [kh, kw, in, out] (rigl's masks are TF kernels)."""
    out, inp, *kernel = shape
    return [*kernel, inp, out]


LENET = {"net.1.weight": (300, 784), "net.3.weight": (100, 300), "net.5.weight": (10, 100)}
CONV4 = {"c1": (64, 3, 3, 3), "c2": (64, 64, 3, 3), "c3": (128, 64, 3, 3), "c4": (128, 128, 3, 3),
         "f1": (256, 8192), "f2": (256, 256), "f3": (10, 256)}
RESNET_BITS = {"stem": (16, 3, 3, 3), "a": (16, 16, 3, 3), "b": (16, 16, 3, 3), "down": (32, 16, 1, 1),
               "c": (32, 16, 3, 3), "d": (32, 32, 3, 3), "fc": (10, 32)}  # equal shapes: rigl's ties go dense together
PENGUIN = {"net.1.weight": (12, 12), "net.3.weight": (3, 12)}


@pytest.mark.parametrize("distribution", ["er", "erk"])
@pytest.mark.parametrize("shapes", [LENET, CONV4, RESNET_BITS, PENGUIN], ids=["lenet", "conv4", "resnet", "penguin"])
@pytest.mark.parametrize("sparsity", [0.3, 0.5, 0.8, 0.9, 0.95, 0.99])
def test_layer_sparsities_are_rigls(distribution: str, shapes: dict, sparsity: float) -> None:
    theirs = rigl_get_sparsities_erdos_renyi([(n, tf_layout(s)) for n, s in shapes.items()], sparsity,
                                             include_kernel=distribution == "erk")
    ours = layer_sparsities(shapes, sparsity, distribution)
    assert ours.keys() == theirs.keys()
    for name in shapes:
        assert ours[name] == pytest.approx(float(theirs[name]), abs=1e-12), name


def test_er_and_erk_differ_on_convs_and_agree_on_linears() -> None:
    assert layer_sparsities(LENET, 0.9, "er") == layer_sparsities(LENET, 0.9, "erk")
    er, erk = layer_sparsities(CONV4, 0.9, "er"), layer_sparsities(CONV4, 0.9, "erk")
    assert er["c2"] < 0.5 < 0.9 < erk["c2"]  # ER ignores the 3x3 kernel: a 64x64 conv counts as a 64x64 matrix


def test_lenet_erk_at_90_by_hand() -> None:
    """The issue's check: the 100->10 output layer's raw density (110/1000) would exceed 1, so it is dense; layer 2's
    density is layer 1's times ((300+100)/(300*100)) / ((784+300)/(784*300)) = 2.893."""
    per = layer_sparsities(LENET, 0.9, "erk")
    assert per["net.5.weight"] == 0.0
    ratio = (1 - per["net.3.weight"]) / (1 - per["net.1.weight"])
    assert ratio == pytest.approx((400 / 30000) / (1084 / 235200))
    assert round(ratio, 3) == 2.893
    # The measured sparsity of the mask is the target: all 235,200 + 30,000 + 1,000 weights counted.
    weights = {n: torch.randn(s, generator=torch.Generator().manual_seed(0)) for n, s in LENET.items()}
    dense = Mask({n: torch.ones(s, dtype=torch.bool) for n, s in LENET.items()})
    mask = select_mask(Magnitude(), Unstructured(distribution="erk"), weights, dense, 0.9)
    zeros = {n: int((~t).sum()) for n, t in mask.tensors.items()}
    assert zeros == {n: round(per[n] * math.prod(s)) for n, s in LENET.items()}
    assert zeros["net.5.weight"] == 0
    assert abs(mask.sparsity() - 0.9) <= tolerance(266200, 3)
    Unstructured(distribution="erk").check_target(LENET, 0.9, "one-shot pruning")  # lands: no refusal


def test_a_target_the_distribution_cannot_land_on_is_refused_before_training() -> None:
    shapes = {"a": (30, 30), "b": (2, 3), "c": (2, 3), "d": (2, 3), "e": (2, 3)}  # tiny layers round their share
    select = Unstructured(distribution="erk")
    assert abs(select.landing(shapes, 0.96) - 0.96) > tolerance(924, 5)
    with pytest.raises(UserError, match=r"sparsity=0.96 .*erk would land on 0.9545"):
        select.check_target(shapes, 0.96, "one-shot pruning")


def test_a_distribution_needs_layerwise_scope_and_a_known_name() -> None:
    with pytest.raises(UserError, match="choose one"):
        Unstructured(scope="global", distribution="erk")
    with pytest.raises(UserError, match="not one of"):
        Unstructured(distribution="erdos")


def test_imp_rounds_with_erk_distribute_each_rounds_overall_target() -> None:
    assert not Unstructured(distribution="erk").takes_layer_targets()  # imp hands it the overall target
    with pytest.raises(UserError, match="pruner/select=layerwise"):
        Iterative(sparsity=0.9, epochs=1, select=Unstructured(distribution="erk"), layer_rates={"net.5.weight": 0.1})


# ---- N:M ----------------------------------------------------------------------------------------------------


def nm_mask(weights: dict[str, torch.Tensor], sparsity: float, n: int = 2, m: int = 4,
            mask: Mask | None = None) -> Mask:
    mask = mask or Mask({k: torch.ones_like(w, dtype=torch.bool) for k, w in weights.items()})
    return select_mask(Magnitude(), NM(n, m), weights, mask, sparsity)


def test_two_of_four_by_hand() -> None:
    w = torch.tensor([[0.1, -0.9, 0.3, 0.05, 5.0, -4.0, 0.2, 0.0],
                      [1.0, 2.0, -3.0, 4.0, -0.5, 0.4, 0.3, -0.2]])
    keep = nm_mask({"w": w}, 0.5).tensors["w"]
    assert keep.tolist() == [[False, True, True, False, True, True, False, False],
                             [False, False, True, True, True, True, False, False]]
    assert (keep.reshape(2, 2, 4).sum(2) == 2).all()  # every group of 4 keeps exactly 2


def test_one_of_four_and_a_conv_is_grouped_along_its_flattened_rows() -> None:
    # [out=1, in=2, kh=1, kw=2] -> [1, 4]: one group of the 4 weights in torch's flatten order (in, kh, kw).
    w = torch.tensor([[[[0.4, -0.1]], [[0.3, 0.2]]]])
    keep = select_mask(Magnitude(), NM(1, 4), {"c": w}, Mask({"c": torch.ones_like(w, dtype=torch.bool)}), 0.25)
    assert keep.tensors["c"].reshape(-1).tolist() == [True, False, True, True]
    assert keep.tensors["c"].shape == w.shape


def test_weights_already_pruned_stay_pruned_and_count() -> None:
    w = torch.tensor([[9.0, 8.0, 0.1, 0.2]])
    before = Mask({"w": torch.tensor([[False, True, True, True]])})  # the largest is gone already
    keep = nm_mask({"w": w}, 0.5, mask=before).tensors["w"]
    assert keep.tolist() == [[False, True, False, True]]  # 1 more goes: 2 of 4 in all


def test_a_2_4_mask_is_what_torch_sparse_semi_structured_takes() -> None:
    """to_sparse_semi_structured needs every 4 consecutive elements of a row to hold at most 2 nonzeros; its
    kernels run on CUDA only, so the pattern is checked here as that function's docs state it."""
    w = torch.randn(64, 128, generator=torch.Generator().manual_seed(1))
    keep = nm_mask({"w": w}, 0.5).tensors["w"]
    assert ((w * keep).reshape(64, 32, 4) != 0).sum(2).max() <= 2
    assert keep.float().mean() == 0.5


def test_targets_off_the_k_over_m_grid_are_refused_naming_the_nearest() -> None:
    with pytest.raises(UserError, match=r"sparsity=0.6 is not reachable.*sparsity=0.5 \(pruner.select.n=2\) and "
                                        r"sparsity=0.75 \(pruner.select.n=3\)"):
        NM().check_target(LENET, 0.6, "one-shot pruning")
    with pytest.raises(UserError, match="set pruner.select.n=3"):
        NM().check_target(LENET, 0.75, "one-shot pruning")
    NM().check_target(LENET, 0.5, "one-shot pruning")
    NM(3, 4).check_target(LENET, 0.75, "one-shot pruning")


def test_a_layer_whose_inputs_are_not_a_multiple_of_m_is_refused_by_name() -> None:
    with pytest.raises(UserError, match=r"net.1.weight \(6 inputs\).*prunable.exclude=\[net.1.weight\]"):
        NM().check_target({"net.1.weight": (4, 6), "net.3.weight": (3, 4)}, 0.5, "one-shot pruning")
    NM().check_target({"c": (8, 3, 2, 2)}, 0.5, "one-shot pruning")  # 3*2*2 = 12 inputs per row


def test_imps_rounds_between_k_over_m_are_refused_with_what_to_set() -> None:
    imp = Iterative(sparsity=0.5, epochs=1, select=NM())
    with pytest.raises(UserError, match=r"intermediate target.*sparsity=0.2 .*set pruner.rate=0.5"):
        imp.check(LENET, None)
    Iterative(sparsity=0.5, epochs=1, select=NM(), rate=0.5).check(LENET, None)  # one round: 0.5


def test_n_must_leave_a_weight_in_each_group() -> None:
    with pytest.raises(UserError, match="n < m"):
        NM(4, 4)


def test_erk_s_small_dense_layers_keep_a_layer_that_uniform_empties() -> None:
    """Certain layer collapse is asked of the selection: uniform rounds the 36-weight output layer away at 0.99,
    ERK gives it a lower sparsity (0.968, 1 weight kept)."""
    assert Unstructured().empties(PENGUIN, 0.99) == ["net.3.weight"]
    assert Unstructured(distribution="erk").empties(PENGUIN, 0.99) == []
    assert Unstructured("global").empties(PENGUIN, 0.99) == []


@pytest.mark.parametrize(("schedule", "hint"), [
    (lambda select: Gradual(Magnitude(), select, epochs=1, sparsity=0.5), r"set pruner.events=\[0.5\]"),
    (lambda select: Cubic(Magnitude(), select, epochs=1, sparsity=0.5), "use pruner=gradual"),
    (lambda select: AtInit(Magnitude(), select, sparsity=0.5, epochs=1, rounds=3), "set pruner.rounds=1"),
])
def test_schedules_stepping_between_k_over_m_say_what_to_set(schedule, hint: str) -> None:
    with pytest.raises(UserError, match=f"intermediate target.*{hint}"):
        schedule(NM()).check(PENGUIN, None)
    schedule(Unstructured()).check(PENGUIN, None)  # single weights land on any step


def test_what_the_refusals_say_to_set_is_accepted() -> None:
    Gradual(Magnitude(), NM(), epochs=1, sparsity=0.5, events=[0.5]).check(PENGUIN, None)
    AtInit(Magnitude(), NM(), sparsity=0.5, epochs=1, rounds=1).check(PENGUIN, None)
    Iterative(sparsity=0.75, epochs=1, select=NM(3, 4), rate=0.5).check(PENGUIN, None)  # rounds 0.5, 0.75
