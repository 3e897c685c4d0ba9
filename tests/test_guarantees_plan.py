"""The IMP plan (prune_lab/pruners/iterative.py): every number decided before training, checked by hand.

Rounds, per-layer laws, merged slivers, refusals and the order of a round's steps, written to kill the
mutants `make mutation` finds in the module. The schedule test drives `Iterative.run` with a
recording job: the order of the steps is the property under test, not any trained number.
"""

from __future__ import annotations

import contextlib
import math
import re
from types import SimpleNamespace

import pytest
import torch

from prune_lab.distillation import Distillation, distillation_loss
from prune_lab.errors import UserError
from prune_lab.masks import Mask
from prune_lab.pruners.iterative import (
    SNAPSHOT,
    Iterative,
    check_rate,
    final_round,
    layer_sparsity,
    parse_rewind,
    shuffled,
)
from prune_lab.pruners.scores import Magnitude, ScoreInputs
from prune_lab.pruners.selection import Units, Unstructured
from prune_lab.training import cross_entropy

DATA = SimpleNamespace(train=SimpleNamespace(x=torch.zeros(2, 3)))  # what check reads of the data: tensor inputs


def imp(**kwargs) -> Iterative:
    return Iterative(**{"sparsity": 0.5, "epochs": 2, **kwargs})


def test_layer_sparsity_is_the_compound_law_by_hand():
    assert layer_sparsity(0.2, 1) == pytest.approx(0.2)
    assert layer_sparsity(0.2, 2) == pytest.approx(0.36)
    assert layer_sparsity(0.5, 0.5) == pytest.approx(1 - 0.5**0.5)
    assert layer_sparsity(0.3, 0) == 0.0


def test_final_round_solves_the_weighted_law():
    # One layer: 1 - 0.8^t = 0.36 at t = 2; below one round too (t < 1, lo starts at 0).
    assert final_round({"a": 0.2}, {"a": 10}, 0.36) == pytest.approx(2.0, abs=1e-12)
    assert final_round({"a": 0.2}, {"a": 10}, 0.1) == pytest.approx(math.log(0.9) / math.log(0.8), abs=1e-12)
    # Far past one round: hi doubles until it brackets the target.
    assert final_round({"a": 0.2}, {"a": 10}, 0.99) == pytest.approx(math.log(0.01) / math.log(0.8), abs=1e-9)
    # Two layers: weighted by size.
    rates, sizes = {"a": 0.2, "b": 0.5}, {"a": 30, "b": 10}
    t = final_round(rates, sizes, 0.4)
    assert (30 * layer_sparsity(0.2, t) + 10 * layer_sparsity(0.5, t)) / 40 == pytest.approx(0.4, abs=1e-12)


def test_check_rate_takes_fractions_in_zero_one_only():
    assert check_rate(0, "k") == 0.0 and type(check_rate(0, "k")) is float
    assert check_rate(0.5, "k") == 0.5
    for bad in (True, "0.2", 1, 1.0, -0.1, None):
        with pytest.raises(UserError, match=r"^k=.* must be a fraction in \[0, 1\) of the remaining weights"):
            check_rate(bad, "k")


@pytest.mark.parametrize(("text", "expected"), [("init", ("step", 0)), ("epoch:3", ("epoch", 3)),
                                                ("step:12", ("step", 12)), ("step:0", ("step", 0))])
def test_parse_rewind(text: str, expected: tuple[str, int]):
    assert parse_rewind(text) == expected


@pytest.mark.parametrize("text", ["epoch:", "iter:3", "init:1", "epoch:x", " init", "epoch:3 ", "Init", 3])
def test_parse_rewind_refuses_anything_else(text):
    with pytest.raises(UserError, match=r"^pruner.rewind=.* must be init, epoch:K or step:K"):
        parse_rewind(text)


def test_shuffled_keeps_each_layers_count_and_shape_and_follows_the_generator():
    torch.manual_seed(0)
    mask = Mask({"a": torch.rand(6, 5) > 0.7, "b": torch.rand(40) > 0.2})
    one = shuffled(mask, torch.Generator().manual_seed(1))
    two = shuffled(mask, torch.Generator().manual_seed(1))
    other = shuffled(mask, torch.Generator().manual_seed(2))
    for n, keep in mask.tensors.items():
        assert one.tensors[n].shape == keep.shape and int(one.tensors[n].sum()) == int(keep.sum())
        assert torch.equal(one.tensors[n], two.tensors[n])
        perm = torch.randperm(keep.numel(), generator=torch.Generator().manual_seed(1))
        if n == "a":  # the first layer takes the generator's first permutation
            assert torch.equal(one.tensors[n].reshape(-1), keep.reshape(-1)[perm])
    assert any(not torch.equal(one.tensors[n], other.tensors[n]) for n in mask.names())
    assert any(not torch.equal(one.tensors[n], mask.tensors[n]) for n in mask.names())


# --- settings -------------------------------------------------------------------------------------


def test_defaults_are_the_lottery_ticket_papers():
    p = Iterative(sparsity=0.5, epochs=2)
    assert (p.rate, p.layer_rates, p.select, p.rewind, p.reinit, p.controls) == (
        0.2, {}, Unstructured("layerwise"), "init", "original", [])
    assert p.score == Magnitude()
    assert p.rewind_at == ("step", 0) and p.target == 0.5 and not p.distill.active
    assert isinstance(p.sparsity, float) and isinstance(p.rate, float)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"sparsity": 1.0}, "sparsity"),
    ({"rate": 0}, r"^pruner.rate=0 never prunes; use a fraction in \(0, 1\), e.g. pruner.rate=0.2$"),
    ({"rate": 1.5}, r"^pruner.rate=1.5 must be a fraction"),
    ({"layer_rates": {"a*": 1.0}}, r"^pruner.layer_rates.a\*=1.0 must be a fraction"),
    ({"select": Unstructured("global"), "layer_rates": {"a": 0.3}},
     r"^pruner.layer_rates needs pruner/select=layerwise \(uniform unstructured; global, er, erk, nm and unit "
     r"selection set the layers' shares themselves\); or drop them with pruner.layer_rates=null$"),
    ({"select": Units(), "layer_rates": {"a": 0.3}}, r"^pruner.layer_rates needs pruner/select=layerwise"),
    ({"select": Unstructured(distribution="erk"), "layer_rates": {"a": 0.3}},
     r"^pruner.layer_rates needs pruner/select=layerwise"),
    ({"reinit": "random"}, "^" + re.escape(
        "pruner=imp pruner.reinit=random is not the Lottery Ticket control: the paper retrains the ticket's mask "
        "from a fresh init (pruner.controls=[randomly_reinitialize]); for a fresh draw before each round's "
        "retraining say pruner.reinit=redraw_each_round") + "$"),
    ({"reinit": "fresh"}, r"^pruner.reinit='fresh' is not one of \('original', 'keep', 'redraw_each_round'\)"),
    ({"controls": ["other"]}, r"^pruner.controls has 'other'; choose from \['randomly_reinitialize', "
                              r"'randomly_prune'\]"),
    ({"controls": ["randomly_prune"], "reinit": "keep"},
     r"^pruner.controls are controls of the winning ticket, which needs pruner.reinit=original \(got keep\)"),
    ({"rewind": "epoch:1", "reinit": "keep"}, r"^pruner.rewind=epoch:1 rewinds survivors.*\(got keep\)"),
    ({"rewind": "later"}, r"^pruner.rewind='later'"),
    ({"epochs": True}, r"^pruner.epochs=True must be a whole number"),
    ({"epochs": 1.5}, r"^pruner.epochs=1.5"),
    ({"epochs": -1}, r"^pruner.epochs=-1"),
])
def test_bad_settings_are_refused_with_the_key(kwargs: dict, message: str):
    with pytest.raises(UserError, match=message):
        imp(**kwargs)


def test_good_settings_are_kept():
    p = imp(rate=0.3, layer_rates={"b": 0, "a": 0.5}, controls=("randomly_prune", "randomly_reinitialize"),
            rewind="epoch:1", epochs=0)
    assert p.layer_rates == {"b": 0.0, "a": 0.5} and p.controls == ["randomly_prune", "randomly_reinitialize"]
    assert p.rewind_at == ("epoch", 1)
    assert imp(reinit="keep").reinit == "keep" and imp(reinit="redraw_each_round", rewind="init").rewind_at[1] == 0
    assert imp(controls=None).controls == []
    assert imp(select=Unstructured("global")).select.scope == "global"


# --- the plan -------------------------------------------------------------------------------------


def test_rates_for_takes_the_first_matching_pattern_and_refuses_one_that_matches_nothing():
    p = imp(layer_rates={"net.1.*": 0.5, "net.*": 0.1})
    assert p.rates_for(["net.1.weight", "net.2.weight", "other"]) == {"net.1.weight": 0.5, "net.2.weight": 0.1,
                                                                      "other": 0.2}
    with pytest.raises(UserError, match=r"^pruner.layer_rates pattern 'net.1.\*' matches no prunable weight; "
                                        r"the prunable weights are \['x'\]"):
        p.rates_for(["x"])


def test_a_zero_target_plans_no_round():
    assert Iterative(sparsity=0.0, epochs=1).plan({"a": 10}) == []


def test_full_rounds_then_the_exact_target():
    p = imp(sparsity=0.5)  # 1 - 0.8^t = 0.5 at t = 3.106: rounds 1, 2, 3 and a 0.106 sliver merged into 3
    plan = p.plan({"a": 1000, "b": 1000})
    assert [o for o, _ in plan][:2] == [pytest.approx(0.2), pytest.approx(0.36)]
    assert len(plan) == 3 and plan[-1][0] == 0.5
    assert plan[-1][1] == {"a": pytest.approx(0.5), "b": pytest.approx(0.5)}
    # An exact number of rounds: no empty extra round.
    plan = imp(sparsity=1 - 0.8**2).plan({"a": 1000})
    assert len(plan) == 2 and plan[0][0] == pytest.approx(0.2) and plan[1][0] == 1 - 0.8**2
    # Less than one round: a single round straight to the target.
    plan = imp(sparsity=0.1).plan({"a": 1000, "b": 10})
    assert len(plan) == 1 and plan[0][0] == 0.1 and plan[0][1]["a"] == pytest.approx(0.1)


def test_a_last_round_of_a_quarter_or_more_is_kept_and_a_smaller_one_merged():
    kept = imp(sparsity=layer_sparsity(0.2, 2.3)).plan({"a": 10_000})
    assert len(kept) == 3 and kept[1][1]["a"] == pytest.approx(0.36)
    merged = imp(sparsity=layer_sparsity(0.2, 2.2)).plan({"a": 10_000})
    assert len(merged) == 2 and merged[0][1]["a"] == pytest.approx(0.2)
    assert merged[1][0] == layer_sparsity(0.2, 2.2)
    # A sliver after a single full round: one round, straight to the target.
    single = imp(sparsity=layer_sparsity(0.2, 1.1)).plan({"a": 10_000})
    assert len(single) == 1 and single[0][0] == layer_sparsity(0.2, 1.1)


def test_a_last_round_that_prunes_fewer_weights_than_layers_is_merged():
    # t_end = 2.5 (not a sliver by time), but 3 layers of 3 weights prune nothing in the last half round:
    # 0.36 * 3 and 0.43 * 3 both round to 1 weight per layer.
    sizes = {"a": 3, "b": 3, "c": 3}
    target = layer_sparsity(0.2, 2.5)
    plan = imp(sparsity=target).plan(sizes)
    counts = [sum(round(per[n] * 3) for n in sizes) for _, per in plan]
    assert len(plan) == 2 and plan[-1][0] == target and counts == [3, 3]
    big = imp(sparsity=target).plan({n: 3000 for n in sizes})
    assert len(big) == 3
    # Exactly one weight per layer in the last round is not a sliver: 4 weights per layer, 1 then 2 pruned each.
    four = imp(sparsity=target).plan({n: 4 for n in sizes})
    assert len(four) == 3 and [sum(round(per[n] * 4) for n in sizes) for _, per in four] == [3, 3, 6]


def test_layers_with_their_own_rate_keep_the_per_layer_law():
    sizes = {"a": 1000, "b": 100}
    p = imp(sparsity=0.3, layer_rates={"b": 0.5})
    plan = p.plan(sizes)
    for overall, per in plan:
        t = math.log(1 - per["a"]) / math.log(0.8)
        assert per["b"] == pytest.approx(layer_sparsity(0.5, t))
        assert overall == pytest.approx((1000 * per["a"] + 100 * per["b"]) / 1100)
    assert plan[-1][0] == 0.3


def test_layers_with_rate_zero_cap_what_can_be_reached():
    p = imp(sparsity=0.5, layer_rates={"b": 0})
    with pytest.raises(UserError, match=r"^sparsity=0.5 cannot be reached: layers with rate 0 hold 50.0% "):
        p.plan({"a": 50, "b": 50})
    with pytest.raises(UserError, match="cannot be reached"):
        p.check({"a": (5, 10), "b": (50,)}, DATA)
    plan = imp(sparsity=0.45, layer_rates={"b": 0}).plan({"a": 50, "b": 50})
    assert plan[-1][0] == 0.45 and all(per["b"] == 0 for _, per in plan)
    assert plan[-1][1]["a"] == pytest.approx(0.9)


def test_check_plans_from_shapes():
    imp(sparsity=0.9).check({"a": (3, 4), "b": (5,)}, DATA)  # reachable: no error


# --- one round's pruning ------------------------------------------------------------------------


def test_prune_takes_each_layer_to_its_own_target_or_one_global_threshold():
    w = {"a": torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0]), "b": torch.tensor([0.5, 6.0, -7.0, 8.0, 9.0])}
    full = Mask({n: torch.ones(5, dtype=torch.bool) for n in w})
    job = SimpleNamespace(score_inputs=lambda *purpose: ScoreInputs(None, job.mask, params=w), mask=full)
    layer = imp().prune(job, 1, 0.3, {"a": 0.4, "b": 0.2})
    assert torch.equal(layer.tensors["a"], torch.tensor([False, False, True, True, True]))
    assert torch.equal(layer.tensors["b"], torch.tensor([False, True, True, True, True]))
    glob = imp(select=Unstructured("global")).prune(job, 1, 0.3, {"a": 0.4, "b": 0.2})  # 3 lowest of all: 0.5, 1, 2
    assert torch.equal(glob.tensors["a"], torch.tensor([False, False, True, True, True]))
    assert torch.equal(glob.tensors["b"], torch.tensor([False, True, True, True, True]))
    glob = imp(select=Unstructured("global")).prune(job, 1, 0.5, {"a": 0.0, "b": 0.0})  # 5 lowest: 0.5, 1, 2, 3, 4
    assert int(glob.tensors["a"].sum()) == 1 and int(glob.tensors["b"].sum()) == 4
    # Already pruned weights stay pruned and count.
    job.mask = Mask({"a": torch.tensor([True, True, True, True, False]), "b": full.tensors["b"]})
    again = imp().prune(job, 2, 0.3, {"a": 0.4, "b": 0.0})
    assert torch.equal(again.tensors["a"], torch.tensor([False, True, True, True, False]))


# --- rewinding ------------------------------------------------------------------------------------


def rewind_job(n: int = 10, batch_size: int = 4) -> SimpleNamespace:
    saved: list[str] = []
    return SimpleNamespace(data=SimpleNamespace(train=range(n)), settings=SimpleNamespace(batch_size=batch_size),
                           save_snapshot=saved.append, saved=saved)


def test_rewind_step_counts_optimizer_steps():
    job = rewind_job()  # 10 examples, batches of 4: 3 steps per epoch
    assert imp(rewind="init").rewind_step(job) == 0
    assert imp(rewind="epoch:2", epochs=2).rewind_step(job) == 6
    assert imp(rewind="step:5", epochs=2).rewind_step(job) == 5
    assert imp(rewind="step:6", epochs=2).rewind_step(job) == 6  # the very end is allowed
    with pytest.raises(UserError, match=r"^pruner.rewind=step:7 is past the end of dense training \(2 epochs = "
                                        r"6 steps\)"):
        imp(rewind="step:7", epochs=2).rewind_step(job)
    with pytest.raises(UserError, match="past the end"):
        imp(rewind="epoch:3", epochs=2).rewind_step(job)


def test_the_snapshot_is_taken_after_exactly_the_rewind_step():
    job = rewind_job()
    assert Iterative.snapshot_at(job, 0) is None
    hook = Iterative.snapshot_at(job, 3)
    for done in range(1, 7):
        assert hook.after_step(done, 6, None, None) is None
        assert job.saved == ([] if done < 3 else [SNAPSHOT])
    assert SNAPSHOT == "rewind-point"


# --- the schedule -----------------------------------------------------------------------------------


class RecordingJob:
    """Records the calls Iterative.run makes: the order of a round's steps is what is tested."""

    def __init__(self, sizes: dict[str, int]):
        torch.manual_seed(0)
        self.w = {n: torch.randn(s) for n, s in sizes.items()}
        self.mask = Mask({n: torch.ones(s, dtype=torch.bool) for n, s in sizes.items()})
        self.calls: list[tuple] = []
        self.losses: dict[str, object] = {}
        self.model = torch.nn.Linear(1, 1)
        self.initial_state = "initial"
        self.data = SimpleNamespace(train=range(8))
        self.settings = SimpleNamespace(batch_size=4)  # 2 steps per epoch
        self.prunable = list(sizes)

    def weights(self):
        return {n: w * self.mask.tensors[n] for n, w in self.w.items()}

    def train(self, phase, epochs, on_step=None, **kwargs):
        self.calls.append(("train", phase, epochs, on_step is not None))
        self.losses[phase] = kwargs.get("loss_fn", "default")
        total = epochs * 2
        for step in range(1, total + 1):
            if on_step is not None:
                on_step.after_step(step, total, self.model, self.mask)

    def evaluate(self, name, target, **extra):
        self.calls.append(("evaluate", name, target, extra))

    def set_mask(self, mask):
        self.mask = mask
        self.calls.append(("set_mask", round(mask.sparsity(), 3)))

    def score_test(self):
        return {"acc": 1 - self.mask.sparsity()}

    def rewind(self, state):
        self.calls.append(("rewind", state))

    def load_snapshot(self, name):
        self.calls.append(("load_snapshot", name))
        return "snapshot"

    def save_snapshot(self, name):
        self.calls.append(("save_snapshot", name))

    def reinitialize(self, *stream):
        self.calls.append(("reinitialize", *stream))

    def generator(self, *purpose):
        self.calls.append(("generator", *purpose))

    def score_inputs(self, *purpose, mask=None):
        return ScoreInputs(None, self.mask if mask is None else mask, params=self.weights())
        return torch.Generator().manual_seed(7)

    @contextlib.contextmanager
    def branch(self):
        mask = self.mask
        self.calls.append(("branch",))
        yield
        self.mask = mask
        self.calls.append(("end branch",))


def test_a_round_prunes_scores_the_pruned_network_rewinds_retrains_and_evaluates():
    job = RecordingJob({"a": 100, "b": 100})
    p = imp(sparsity=0.36, epochs=3)
    p.run(job)
    c = job.calls
    assert c[0] == ("train", "dense", 3, False)
    assert c[1] == ("evaluate", "dense", 0.0, {"round": 0})
    assert c[2:5] == [("set_mask", 0.2), ("rewind", "initial"), ("train", "round-1", 3, False)]
    assert c[5][:3] == ("evaluate", "round-1", pytest.approx(0.2))
    extra = c[5][3]
    assert extra["round"] == 1 and extra["rewind"] == "init" and extra["before_retrain"] == {"acc": 0.8}
    assert extra["layer_targets"] == {"a": pytest.approx(0.2), "b": pytest.approx(0.2)}
    assert c[6][:2] == ("set_mask", 0.36) and c[-1][:3] == ("evaluate", "round-2", 0.36)
    assert len(c) == 10


def test_late_rewinding_snapshots_and_rewinds_to_the_snapshot_and_global_records_no_layer_targets():
    job = RecordingJob({"a": 100})
    imp(sparsity=0.2, epochs=2, rewind="epoch:1", select=Unstructured("global")).run(job)
    assert job.calls[0] == ("train", "dense", 2, True)  # the snapshot hook is passed, and fires after step 2
    assert job.calls[1] == ("save_snapshot", SNAPSHOT)
    assert ("load_snapshot", SNAPSHOT) in job.calls and ("rewind", "snapshot") in job.calls
    final = job.calls[-1]
    assert final[1] == "round-1" and "layer_targets" not in final[3] and final[3]["rewind"] == "epoch:1"


def test_other_fates_apply_instead_of_rewinding():
    job = RecordingJob({"a": 100})
    imp(sparsity=0.2, reinit="redraw_each_round").run(job)
    assert ("reinitialize", "round", 1) in job.calls and not any(c[0] == "rewind" for c in job.calls)
    job = RecordingJob({"a": 100})
    imp(sparsity=0.2, reinit="keep").run(job)
    assert not any(c[0] in ("rewind", "reinitialize") for c in job.calls)


def test_controls_run_as_branches_of_every_round():
    job = RecordingJob({"a": 100, "b": 100})
    imp(sparsity=0.36, controls=["randomly_reinitialize", "randomly_prune"]).run(job)
    c = job.calls
    start = c.index(("evaluate", "round-1", pytest.approx(0.2), c[5][3]))
    assert c[start + 1:start + 5] == [("branch",), ("reinitialize", "control", 1),
                                      ("train", "randomly_reinitialize-1", 2, False),
                                      ("evaluate", "randomly_reinitialize-1", pytest.approx(0.2),
                                       {"round": 1, "branch": "randomly_reinitialize", "rewind": "init"})]
    assert c[start + 5:start + 12] == [
        ("end branch",), ("branch",), ("generator", "randomly_prune", 1), ("set_mask", 0.2), ("rewind", "initial"),
        ("train", "randomly_prune-1", 2, False),
        ("evaluate", "randomly_prune-1", pytest.approx(0.2),
         {"round": 1, "branch": "randomly_prune", "rewind": "init"})]
    assert ("reinitialize", "control", 2) in c and ("generator", "randomly_prune", 2) in c
    assert c[-1] == ("end branch",)


def test_without_distillation_every_phase_trains_on_cross_entropy():
    job = RecordingJob({"a": 100})
    imp(sparsity=0.36, controls=["randomly_reinitialize", "randomly_prune"]).run(job)
    assert job.losses.pop("dense") == "default"
    assert len(job.losses) == 6 and all(loss is cross_entropy for loss in job.losses.values())


def test_distillation_retrains_rounds_and_controls_against_the_dense_teacher():
    job = RecordingJob({"a": 100})
    with torch.no_grad():
        job.model.weight.fill_(2.0)
    p = imp(sparsity=0.36, controls=["randomly_reinitialize", "randomly_prune"],
            distill=Distillation(alpha=0.5, temperature=2.0))
    p.run(job)
    with torch.no_grad():
        job.model.weight.fill_(-1.0)  # the teacher is a copy taken after dense training, not the live model
    x, y = torch.tensor([[1.0], [3.0]]), torch.tensor([0, 0])
    logits = torch.tensor([[0.5], [0.1]])
    teacher = torch.nn.Linear(1, 1)
    with torch.no_grad():
        teacher.weight.fill_(2.0)
        teacher.bias.copy_(job.model.bias)
    expected = distillation_loss(logits, y, teacher(x), 0.5, 2.0)
    assert job.losses.pop("dense") == "default"
    assert set(job.losses) == {"round-1", "round-2", "randomly_reinitialize-1", "randomly_reinitialize-2",
                               "randomly_prune-1", "randomly_prune-2"}
    for phase, loss in job.losses.items():
        assert torch.allclose(loss(logits, y, x), expected), phase
