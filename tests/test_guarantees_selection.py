"""What a selection promises before training (prune_lab/pruners/selection.py), in process, by hand: where layerwise
unit pruning lands, which targets it can reach and the refusal that names the nearest two; the rank transform
that keeps float64 scores apart; N:M's grid. Also the small pieces around them a run leans on (the phase's
hook list, the cache's names for users and groups). Fast: `make mutation` runs these per mutant.
"""

from __future__ import annotations

import grp
import math
import os
import pwd
from typing import Any

import pytest
import torch
from torch import nn

from prune_lab import cache as cache_module
from prune_lab.errors import UserError
from prune_lab.masks import Mask
from prune_lab.pruners.selection import NM, Units, prune_lowest, rankable
from prune_lab.training import Hooks, StepHook, combine

# two hidden layers and the output layer: [out, in]; 54 weights, 36 of them in the candidate (hidden) layers
SHAPES = {"a": (4, 3), "b": (6, 4), "c": (3, 6)}


def by_hand(share: float) -> float:
    """Layerwise units at one share f of each hidden layer's units: a loses round(4f) of 4 rows of 3 weights,
    b round(6f) of 6 rows of 4, each keeping one; over all 54 weights."""
    da, db = min(round(share * 4), 3), min(round(share * 6), 5)
    return (3 * da + 4 * db) / 54


def test_landing_by_hand() -> None:
    units = Units()
    assert units.layer_drops(SHAPES, 1 / 3) == {"a": 2, "b": 3}  # share = 1/3 * 54 / 36 = 0.5
    assert units.landing(SHAPES, 1 / 3) == pytest.approx(18 / 54)
    assert units.layer_drops(SHAPES, 0.3) == {"a": 2, "b": 3}  # share 0.45: 1.8 -> 2, 2.7 -> 3
    assert units.landing(SHAPES, 0.0) == 0.0
    assert units.layer_drops(SHAPES, 0.65) == {"a": 3, "b": 5}  # share 0.975: never the last unit
    assert units.landing(SHAPES, 0.65) == pytest.approx((9 + 20) / 54)
    assert units.max_sparsity(SHAPES) == pytest.approx((9 + 20) / 54)
    whole = Units(skip_output=False)
    assert whole.layer_drops(SHAPES, 0.5) == {"a": 2, "b": 3, "c": 2}  # share 0.5 of every layer: 1.5 -> 2


def test_reachable_is_every_landing_by_brute_force() -> None:
    grid = {round(by_hand((i + 0.37) / 20000), 12) for i in range(20001)}  # shares from 0 to 1, off the halves
    found = Units().reachable(SHAPES)
    assert found == sorted(found) and len(found) == len(set(found))
    assert {round(v, 12) for v in found} == grid
    assert found[0] == 0.0 and found[-1] == pytest.approx(Units().max_sparsity(SHAPES))


def test_a_reachable_target_is_accepted_and_an_unreachable_one_names_the_nearest_two() -> None:
    units = Units()
    for value in Units().reachable(SHAPES):
        units.check_target(SHAPES, value, "magnitude")  # every value it lists is accepted
    units.check_target(SHAPES, 0.0, "magnitude")
    values = units.reachable(SHAPES)
    below, above = max(v for v in values if v < 0.3), min(v for v in values if v > 0.3)
    with pytest.raises(UserError) as refused:
        units.check_target(SHAPES, 0.3, "imp round 2")
    assert str(refused.value) == (
        f"sparsity=0.3 cannot be reached by removing whole units layerwise (imp round 2 would land on "
        f"{units.landing(SHAPES, 0.3):.4f}); the nearest reachable targets are sparsity={below:.4f} and "
        f"sparsity={above:.4f}: use one of them, or pruner.select.scope=global (lands as close as the scores "
        "allow, marked off_target)")
    assert (below, above) == (pytest.approx(14 / 54), pytest.approx(18 / 54))  # a 2 of 4 + b 2 of 6; b 3 of 6


def test_the_tolerance_decides_what_is_near_enough() -> None:
    # tolerance here: half a weight per layer, 3 / (2 * 54) = 0.0278; 1/3 lands on 1/3 exactly
    Units().check_target(SHAPES, 1 / 3 - 0.027, "magnitude")  # lands on 1/3: 0.027 away, accepted
    with pytest.raises(UserError):
        Units().check_target(SHAPES, 1 / 3 + 0.029, "magnitude")  # lands on 1/3 (round): 0.029 away


def test_a_target_past_every_landing_names_only_the_one_below() -> None:
    top = Units().max_sparsity(SHAPES)
    with pytest.raises(UserError) as refused:
        Units().check_target(SHAPES, 0.7, "magnitude")
    assert f"the nearest reachable targets are sparsity={top:.4f}: use one" in str(refused.value)


def test_global_unit_selection_is_not_held_to_the_layerwise_grid() -> None:
    Units("global").check_target(SHAPES, 0.3, "magnitude")  # lands as close as the scores allow


def test_rankable_orders_all_layers_as_one_and_keeps_float64_apart() -> None:
    scores = {"a": torch.tensor([[1e-30, 1e10], [3.0, 1e-30 * (1 + 1e-12)]], dtype=torch.float64),
              "b": torch.tensor([5.0, -1.0, 3.0], dtype=torch.float64)}
    ranks = rankable(scores)
    assert list(ranks) == ["a", "b"] and ranks["a"].shape == (2, 2) and ranks["b"].shape == (3,)
    assert all(r.dtype == torch.float32 for r in ranks.values())
    assert ranks["a"].tolist() == [[1.0, 6.0], [3.0, 2.0]]  # 1e-30 and 1e-30(1+1e-12) stay apart
    assert ranks["b"].tolist() == [5.0, 0.0, 4.0]  # the two 3.0s: the first one first (stable)
    assert (scores["a"].float()[0, 0] == scores["a"].float()[1, 1]).item()  # float32 alone would tie them


def test_float64_scores_prune_by_rank() -> None:
    tiny = torch.tensor([3e-40, 1e-45, 2e-40, 5e-40], dtype=torch.float64)  # all 0 in float32... nearly
    mask = Mask({"w": torch.ones(4, dtype=torch.bool)})
    out = prune_lowest({"w": tiny}, mask, 0.5, "layerwise")
    assert out.tensors["w"].tolist() == [True, False, False, True]


def test_nm_reaches_whole_numbers_of_every_group() -> None:
    assert NM().reachable() == [0.0, 0.25, 0.5, 0.75]
    assert NM(n=1, m=2).reachable() == [0.0, 0.5]
    assert NM(n=3, m=8).max_sparsity({}) == pytest.approx(7 / 8)


# --- a phase's hooks -----------------------------------------------------------------------------------------

class Recorder(StepHook):
    def __init__(self, name: str, log: list[Any], prunes_at: int | None = None):
        self.name, self.log, self.prunes_at, self.loaded = name, log, prunes_at, None

    def after_backward(self, model: nn.Module) -> None:
        self.log.append(("backward", self.name))

    def after_step(self, step: int, total: int, model: nn.Module, mask: Mask) -> Mask | None:
        self.log.append(("step", self.name, step, total))
        return mask if step == self.prunes_at else None

    def state_dict(self) -> dict[str, Any]:
        return {"name": self.name}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.loaded = state


def test_hooks_are_called_in_order_and_one_of_them_may_prune() -> None:
    log: list[Any] = []
    mask = Mask({"w": torch.ones(2, dtype=torch.bool)})
    hooks = Hooks([Recorder("a", log), Recorder("b", log, prunes_at=3)])
    model = nn.Linear(1, 1)
    hooks.after_backward(model)
    assert hooks.after_step(2, 10, model, mask) is None
    assert hooks.after_step(3, 10, model, mask) is mask
    assert log == [("backward", "a"), ("backward", "b"), ("step", "a", 2, 10), ("step", "b", 2, 10),
                   ("step", "a", 3, 10), ("step", "b", 3, 10)]
    both = Hooks([Recorder("a", log, prunes_at=1), Recorder("b", log, prunes_at=1)])
    with pytest.raises(RuntimeError, match="two step hooks pruned at the same step"):
        both.after_step(1, 10, model, mask)


def test_hooks_save_and_restore_each_one_s_state_by_position() -> None:
    a, b = Recorder("a", []), Recorder("b", [])
    hooks = Hooks([a, b])
    assert hooks.state_dict() == {"0": {"name": "a"}, "1": {"name": "b"}}
    hooks.load_state_dict({"1": {"x": 1}})
    assert a.loaded == {} and b.loaded == {"x": 1}  # a hook with nothing saved starts from an empty state


def test_combine_drops_absent_hooks() -> None:
    a, b = Recorder("a", []), Recorder("b", [])
    assert combine() is None and combine(None, None) is None
    assert combine(None, a) is a
    both = combine(a, None, b)
    assert isinstance(both, Hooks) and both.hooks == [a, b]


# --- the cache's names for users and groups ------------------------------------------------------------------

def test_users_and_groups_are_named_or_numbered() -> None:
    me = pwd.getpwuid(os.getuid())
    assert cache_module._name(os.getuid()) == me.pw_name
    assert cache_module._group(me.pw_gid) == grp.getgrgid(me.pw_gid).gr_name
    unused = next(i for i in range(54321, 65000) if not any(p.pw_uid == i for p in pwd.getpwall()))
    assert cache_module._name(unused) == f"uid {unused}"
    unused_gid = next(i for i in range(54321, 65000) if not any(g.gr_gid == i for g in grp.getgrall()))
    assert cache_module._group(unused_gid) == f"gid {unused_gid}"
    assert cache_module._in_group(os.getuid(), me.pw_gid) is True  # its primary group
    assert cache_module._in_group(unused, me.pw_gid) is False
    assert cache_module._in_group(os.getuid(), unused_gid) is False
    members = [g for g in grp.getgrall() if me.pw_name in g.gr_mem and g.gr_gid != me.pw_gid]
    for g in members:  # a supplementary group
        assert cache_module._in_group(os.getuid(), g.gr_gid) is True
    others = [g for g in grp.getgrall() if me.pw_name not in g.gr_mem and g.gr_gid != me.pw_gid]
    assert others and not cache_module._in_group(os.getuid(), others[0].gr_gid)


def test_a_cache_that_cannot_store_or_use_an_entry_says_what_to_set(tmp_path, capsys) -> None:
    cache = cache_module.DenseCache.open(str(tmp_path / "c"), {"seed": 0}, torch.device("cpu"), 1)
    if cache is None:
        pytest.skip("the cache is off here")
    cache._failed("store", "k" * 16, OSError(28, "No space left on device"))
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "cannot store the dense-cache entry " in err
    assert "(it is full: free space there)" in err
    assert err.rstrip().endswith("the run goes on with its own training, stored in its run folder (set cache_dir to "
                                 "another folder, or cache_dir=null)")
    cache._failed("use", "k" * 16, OSError(13, "Permission denied"))
    err = capsys.readouterr().err
    assert "cannot use the dense-cache entry" in err and "it is full" not in err
    assert math.isfinite(1.0)
