"""The pruners' schedules on real penguin training: IMP's rewinding and sparsity law, the gradual and cubic
schedules, pruning at initialisation (SNIP, GraSP, SynFlow) and structured unit pruning."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torch.nn.utils.prune as torch_prune
from conftest import job_from_config
from torch import nn
from torch.func import functional_call

from prune_lab.data.splits import Splits, TensorSet
from prune_lab.errors import UserError
from prune_lab.job import copy_state
from prune_lab.masks import Mask
from prune_lab.pruners.at_init import AtInit
from prune_lab.pruners.during_training import Cubic, Gradual
from prune_lab.pruners.iterative import SNAPSHOT, Iterative
from prune_lab.pruners.scores import GraSP, Magnitude, ScoreInputs
from prune_lab.pruners.selection import Units, select_mask


def zeros_where_pruned(state: dict[str, torch.Tensor], mask: Mask) -> bool:
    return all(torch.count_nonzero(state[n][~keep]) == 0 for n, keep in mask.tensors.items())


# --- iterative magnitude pruning ------------------------------------------------------------------------
@pytest.mark.parametrize("rewind", ["init", "step:3", "epoch:1"])
def test_imp_rewinds_survivors_exactly_and_pruned_weights_stay_zero(tmp_path: Path, rewind: str):
    job = job_from_config(tmp_path / "run", "pruner=imp", "sparsity=0.5", "train.epochs=2",
                          f"pruner.rewind={rewind}")
    job.pruner.run(job)
    if rewind == "init":
        target = job.initial_state
    else:  # an independent replay of dense training, read at step K by our own hook
        k = 3 if rewind == "step:3" else math.ceil(len(job.data.train) / job.settings.batch_size)
        ref = job_from_config(tmp_path / "ref", "pruner=imp", "sparsity=0.5", "train.epochs=2")
        seen = {}

        def capture(step: int, total: int, model: nn.Module) -> None:
            if step == k:
                seen["w"] = copy_state(model)

        ref.train("dense", 2, on_step=capture)
        target = seen["w"]
        assert all(torch.equal(target[n], v) for n, v in job.load_snapshot(SNAPSHOT).items())
        assert not torch.equal(target["net.1.weight"], job.initial_state["net.1.weight"])
    rounds = [p for p in job.starts if p.startswith("round-")]
    # 1 - 0.8^3 = 0.488 < 0.5: the last 0.1 of a round joins round 3 (MERGE_BELOW), which goes to 0.5
    assert rounds == ["round-1", "round-2", "round-3"]
    previous = Mask.ones(job.model, job.prunable)
    for phase in rounds:
        start, mask = job.starts[phase]
        for name, value in start.items():
            keep = mask.tensors.get(name)
            expected = target[name] if keep is None else target[name] * keep
            assert torch.equal(value, expected), f"{phase}: {name} is not the rewind point's value"
        assert all(torch.equal(keep & previous.tensors[n], keep) for n, keep in mask.tensors.items()), \
            "a pruned weight came back"
        assert zeros_where_pruned(job.ends[phase][0], mask), f"{phase}: a pruned weight trained away from zero"
        previous = mask


def test_imp_sparsity_after_round_r_per_layer_within_one_weight(tmp_path: Path):
    job = job_from_config(tmp_path, "pruner=imp", "sparsity=0.7", "train.epochs=1",
                          "pruner.layer_rates={net.3.weight:0.1}")
    job.pruner.run(job)
    rounds = [lv for lv in job.levels if lv.name.startswith("round-")]
    # net.1 (144 weights) at 20% a round, the output layer (36) at 10%: after 6 rounds the overall
    # sparsity is (144 (1 - 0.8^6) + 36 (1 - 0.9^6)) / 180 = 0.684, so 0.7 takes a 7th, partial round.
    assert [lv.extra["round"] for lv in rounds] == [1, 2, 3, 4, 5, 6, 7]
    for lv in rounds[:-1]:
        r = lv.extra["round"]
        for name, rate in (("net.1.weight", 0.2), ("net.3.weight", 0.1)):
            layer = lv.layers[name]
            pruned = layer["numel"] - layer["nonzero"]
            assert abs(pruned - (1 - (1 - rate) ** r) * layer["numel"]) <= 1, (name, r, pruned)
    last = rounds[-1]
    assert abs(last.sparsity - 0.7) * last.prunable_total <= 1 + len(last.layers) / 2
    # The last round keeps the layers' proportions: both at the same fractional round t.
    t = math.log(1 - last.extra["layer_targets"]["net.1.weight"]) / math.log(0.8)
    assert math.isclose(1 - 0.9**t, last.extra["layer_targets"]["net.3.weight"], rel_tol=1e-9)
    assert 6 < t <= 7


def test_imp_with_global_scope_uses_one_threshold(tmp_path: Path):
    job = job_from_config(tmp_path, "pruner=imp", "sparsity=0.36", "train.epochs=1", "pruner.select.scope=global")
    job.pruner.run(job)
    assert [round(lv.target_sparsity, 4) for lv in job.levels] == [0.0, 0.2, 0.36]
    for lv in job.levels[1:]:
        assert abs(lv.sparsity - lv.target_sparsity) * lv.prunable_total <= 0.5 + 1e-9


def test_imp_plan_stops_exactly_at_the_target():
    imp = Iterative(sparsity=0.9, epochs=1)
    plan = imp.plan({"a": 1000, "b": 10})
    assert len(plan) == math.ceil(math.log(0.1) / math.log(0.8))
    assert plan[-1][0] == 0.9 and all(math.isclose(p, 0.9) for p in plan[-1][1].values())
    overall = [o for o, _ in plan]
    assert overall == sorted(overall) and math.isclose(overall[0], 0.2)


def test_imp_rounds_match_torch_iterative_l1_unstructured_on_the_same_weights(tmp_path: Path):
    # torch's PruningContainer prunes `amount` of the *remaining* weights each call: IMP's rate.
    job = job_from_config(tmp_path, "pruner=imp", "sparsity=0.8", "model.hidden=[40]")
    imp: Iterative = job.pruner
    reference = {n: nn.Linear(*reversed(w.shape), bias=False) for n, w in job.weights().items()}
    for n, module in reference.items():
        module.weight.data.copy_(job.weights()[n])
    equal_counts = 0
    for r, (overall, per_layer) in enumerate(imp.plan({n: w.numel() for n, w in job.weights().items()})[:5], 1):
        job.set_mask(imp.prune(job, r, overall, per_layer))
        job.rewind(job.initial_state)  # same weights every round: only the masks differ
        for n, module in reference.items():
            torch_prune.l1_unstructured(module, "weight", amount=0.2)
            theirs, ours = module.weight_mask.bool(), job.mask.tensors[n]
            assert abs(int((~theirs).sum()) - int((~ours).sum())) <= 1, n  # torch rounds each round's share
            if int(theirs.sum()) == int(ours.sum()):
                assert torch.equal(theirs, ours), n
                equal_counts += 1
    assert equal_counts >= 5, "too few rounds where the counts agree to compare the masks"


# --- gradual and cubic (AGP) schedules ------------------------------------------------------------------
def test_cubic_schedule_is_monotone_and_reaches_the_final_sparsity_at_its_end():
    cubic = Cubic(score=None, select=None, epochs=1, sparsity=0.9, initial_sparsity=0.1, start=0.2, end=0.8, every=7)
    total = 1000
    curve = [cubic.sparsity_at(s, total) for s in range(total + 1)]
    assert all(a <= b for a, b in zip(curve, curve[1:])), "not monotone"
    assert curve[200] == pytest.approx(0.1) and curve[800] == 0.9 and curve[-1] == 0.9
    assert 0.1 < curve[500] < 0.9
    events = cubic.schedule(total)
    assert events[0] == (200, pytest.approx(0.1)) and events[-1] == (800, 0.9)
    steps = [s for s, _ in events]
    assert all(b - a == 7 for a, b in zip(steps[:-2], steps[1:-1])) and steps[-1] - steps[-2] <= 7
    assert [t for _, t in events] == sorted(t for _, t in events)


def test_agp_run_ends_at_the_final_sparsity_in_every_layer(tmp_path: Path):
    job = job_from_config(tmp_path, "pruner=agp", "sparsity=0.6", "train.epochs=10", "pruner.every=3")
    job.pruner.run(job)
    assert list(job.starts) == ["pruning"], "one training phase, no reset"
    (level,) = job.levels
    for layer in level.layers.values():
        assert abs(layer["numel"] - layer["nonzero"] - 0.6 * layer["numel"]) <= 1
    total = level.extra["total_steps"]
    assert level.extra["prune_steps"] == [round(0.1 * total), round(0.75 * total)]


def test_gradual_prunes_the_same_share_of_the_remaining_weights_at_each_event(tmp_path: Path):
    gradual = Gradual(score=None, select=None, epochs=1, sparsity=1 - 0.83**2)  # the study's 17% at 1/3 and at 2/3
    assert gradual.schedule(300) == [(100, pytest.approx(0.17)), (200, pytest.approx(1 - 0.83**2))]
    job = job_from_config(tmp_path, "pruner=gradual", "sparsity=0.3111", "train.epochs=6")
    job.pruner.run(job)
    (level,) = job.levels
    assert level.target_sparsity == pytest.approx(0.3111)
    for layer in level.layers.values():
        assert abs(layer["numel"] - layer["nonzero"] - 0.3111 * layer["numel"]) <= 1


@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_gradual_honours_sparsity(tmp_path: Path, sparsity: float):
    """A sweep over sparsity used to give three identical runs: the rate was fixed at 17%."""
    job = job_from_config(tmp_path, "pruner=gradual", f"sparsity={sparsity}", "train.epochs=6")
    job.pruner.run(job)
    (level,) = job.levels
    assert level.target_sparsity == sparsity
    for layer in level.layers.values():
        assert abs(layer["numel"] - layer["nonzero"] - sparsity * layer["numel"]) <= 1


# --- pruning at initialisation --------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["snip", "grasp", "synflow"])
@pytest.mark.parametrize("scope", ["global", "layerwise"])
def test_pruning_at_init_reaches_the_target_before_any_training_step(tmp_path: Path, method: str, scope: str):
    job = job_from_config(tmp_path, f"pruner={method}", "sparsity=0.8", "train.epochs=1",
                          f"pruner.select.scope={scope}")
    job.pruner.run(job)
    assert list(job.starts) == ["sparse"], "pruned before the first (and only) training phase"
    start, mask = job.starts["sparse"]
    sizes = {n: start[n].numel() for n in job.prunable}
    zeros = {n: int((start[n] == 0).sum()) for n in job.prunable}
    if scope == "global":
        assert abs(sum(zeros.values()) - 0.8 * sum(sizes.values())) <= 1
    else:
        assert all(abs(zeros[n] - 0.8 * sizes[n]) <= 1 for n in sizes)
    # The survivors are the initial values themselves.
    for n, keep in mask.tensors.items():
        assert torch.equal(start[n], job.initial_state[n] * keep)


def test_scores_spanning_many_orders_of_magnitude_keep_their_order():
    from prune_lab.pruners.selection import prune_lowest

    g = torch.Generator().manual_seed(0)
    # 1e-100 .. 1: the cut (near 1e-60) lies far below float32's smallest number, as SynFlow's can.
    scores = {"a": 10 ** (torch.rand(50, 4, generator=g, dtype=torch.float64) * 100 - 100),
              "b": 10 ** (torch.rand(30, generator=g, dtype=torch.float64) * 100 - 100)}
    mask = Mask({n: torch.ones_like(v, dtype=torch.bool) for n, v in scores.items()})
    ours = prune_lowest(scores, mask, 0.4, "global")  # float64 scores are ranked before the float32 cut
    flat = torch.cat([v.reshape(-1) for v in scores.values()])
    threshold = flat.sort().values[round(0.4 * flat.numel()) - 1]
    for n, v in scores.items():
        assert torch.equal(ours.tensors[n], v > threshold), n


def nan_data(data: Splits) -> Splits:
    def poison(s: TensorSet) -> TensorSet:
        return TensorSet(torch.full_like(s.x, float("nan")), s.y)

    return Splits(data.info, poison(data.train), poison(data.val), poison(data.test))


@pytest.mark.parametrize(("method", "data_free"), [("synflow", True), ("snip", False)])
def test_synflow_touches_no_data(tmp_path: Path, method: str, data_free: bool):
    job = job_from_config(tmp_path, f"pruner={method}", "sparsity=0.7")
    assert isinstance(job.pruner, AtInit)
    real = job.pruner.prune(job)
    job.data = nan_data(job.data)  # any look at an input would now poison the scores
    blind = job.pruner.prune(job)
    same = all(torch.equal(real.tensors[n], blind.tensors[n]) for n in real.tensors)
    assert same == data_free


def test_grasp_scores_are_weights_times_hessian_gradient_product(tmp_path: Path):
    """w * (H g) as the authors' code computes it: the batch in two halves, g and H g each summed over them."""
    job = job_from_config(tmp_path, "pruner=grasp")
    model, data, names = job.model, job.data, job.prunable
    grasp = GraSP(batches=1, batch_size=len(data.train))  # one batch: the whole training set
    scores = grasp.weights(ScoreInputs(model, job.mask, data, torch.Generator().manual_seed(0)))
    params = dict(model.named_parameters())
    w0 = tuple(params[n].detach() for n in names)
    order = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))  # the batch drawn
    half = len(order) // 2
    halves = [order[:half], order[half:]]

    def loss(idx, *ws):
        out = functional_call(model, {**{k: v.detach() for k, v in params.items()}, **dict(zip(names, ws))},
                              (data.train.x[idx],))
        return F.cross_entropy(out / grasp.temperature, data.train.y[idx])

    ws = tuple(w.clone().requires_grad_() for w in w0)
    g = [sum(parts) for parts in zip(*(torch.autograd.grad(loss(idx, *ws), ws) for idx in halves))]
    hg = [sum(parts) for parts in zip(*(
        torch.autograd.functional.hvp(lambda *w, idx=idx: loss(idx, *w), w0, tuple(x.detach() for x in g))[1]
        for idx in halves))]
    for n, w, h in zip(names, w0, hg):
        torch.testing.assert_close(scores[n], w * h, rtol=1e-4, atol=1e-9)


# --- structured unit pruning ----------------------------------------------------------------------------
def structured_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Conv2d(8, 16, 3), nn.Flatten(), nn.Linear(16, 20),
                         nn.ReLU(), nn.Linear(20, 5))


def weights_and_mask(m: nn.Module) -> tuple[dict[str, torch.Tensor], Mask]:
    names = [n for n, p in m.named_parameters() if n.endswith("weight")]
    params = dict(m.named_parameters())
    return {n: params[n].detach() for n in names}, Mask.ones(m, names)


@pytest.mark.parametrize("scope", ["layerwise", "global"])
@pytest.mark.parametrize("sparsity", [0.25, 0.5, 0.8])
def test_unit_pruning_zeroes_whole_rows_or_filters_and_nothing_else(scope: str, sparsity: float):
    m = structured_model()
    weights, full = weights_and_mask(m)
    mask = select_mask(Magnitude(), Units(scope), weights, full, sparsity)
    for name, keep in mask.tensors.items():
        per_unit = keep.reshape(keep.shape[0], -1)
        assert bool((per_unit.all(1) | ~per_unit.any(1)).all()), f"{name}: a unit is partly pruned"
    assert bool(mask.tensors["6.weight"].all()), "the output layer's rows are the classes: untouched"
    total = sum(w.numel() for w in weights.values())
    pruned = sum(int((~k).sum()) for k in mask.tensors.values())
    if scope == "layerwise":  # every candidate layer loses the same share, which makes up for the output layer
        share = sparsity * total / sum(weights[n].numel() for n in ("0.weight", "2.weight", "4.weight"))
        for name in ("0.weight", "2.weight", "4.weight"):
            units = mask.tensors[name].shape[0]
            assert int((~mask.tensors[name].reshape(units, -1).any(1)).sum()) == round(share * units)
        # the target counts ALL prunable weights (the protected output layer's too): within a unit per layer
        assert abs(pruned - sparsity * total) <= sum(w[0].numel() for w in weights.values()) / 2
    else:  # whole units until the weight count is closest to the target: within half the largest unit
        assert abs(pruned - sparsity * total) <= max(w[0].numel() for w in weights.values()) / 2 + 0.5


@pytest.mark.parametrize("sparsity", [0.2, 0.5, 0.75])
def test_layerwise_unit_pruning_matches_torch_ln_structured(sparsity: float):
    m = structured_model()
    weights, full = weights_and_mask(m)
    ours = select_mask(Magnitude(), Units("layerwise", skip_output=False), weights, full, sparsity)
    for name, w in weights.items():
        theirs = torch_prune.LnStructured(sparsity, n=2, dim=0).compute_mask(w, torch.ones_like(w))
        assert torch.equal(ours.tensors[name], theirs.bool()), name


def test_unit_pruning_keeps_pruned_units_pruned_and_counts_them():
    m = structured_model()
    weights, full = weights_and_mask(m)
    first = select_mask(Magnitude(), Units("layerwise"), weights, full, 0.25)
    second = select_mask(Magnitude(), Units("layerwise"), weights, first, 0.5)
    share = 0.5 * sum(w.numel() for w in weights.values()) / sum(
        w.numel() for n, w in weights.items() if n != "6.weight")
    for name, keep in second.tensors.items():
        assert torch.equal(keep & first.tensors[name], keep)
        units = keep.shape[0]
        if name != "6.weight":
            assert int((~keep.reshape(units, -1).any(1)).sum()) == round(share * units)


# --- bad settings ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(("overrides", "fix"), [
    (("pruner=imp", "pruner.rewind=epoch:-1"), "pruner.rewind"),
    (("pruner=imp", "pruner.rewind=epoch:5", "train.epochs=2"), "past the end of dense training"),
    (("pruner=imp", "pruner.rate=1.2"), "pruner.rate"),
    (("pruner=imp", "pruner.layer_rates={nope.weight:0.1}"), "matches no prunable weight"),
    (("pruner=imp", "pruner.layer_rates={net.1.weight:0.1}", "pruner.select.scope=global"),
     "pruner/select=layerwise"),
    (("pruner=imp", "pruner.layer_rates={net.*:0.0}"), "cannot be reached"),
    (("pruner=imp", "pruner.reinit=keep", "pruner.rewind=step:2"), "pruner.reinit=original"),
    (("pruner=imp", "pruner.reinit=random"), "randomly_reinitialize"),
    (("pruner=imp", "pruner.controls=[shuffle]"), "randomly_prune"),
    (("pruner=unit", "sparsity=0.8"), "at most 0.7333"),  # 11 of 12 hidden units, the output layer whole
    (("pruner=magnitude", "pruner.sparsity=0.5"), "disagrees with sparsity=0.3"),
    (("pruner=agp", "pruner.start=0.9", "pruner.end=0.1"), "pruner.start"),
    (("pruner=agp", "pruner.initial_sparsity=0.5", "sparsity=0.2"), "pruner.initial_sparsity"),
    (("pruner=gradual", "pruner.events=[0.5,1.5]"), "pruner.events"),
    (("pruner=magnitude", "pruner.distill.alpha=2"), "pruner.distill.alpha"),
    (("pruner=synflow", "pruner.rounds=0"), "pruner.rounds"),
    (("pruner=snip", "pruner.score.batches=0"), "pruner.score.batches"),
    (("pruner=unit", "pruner.select.scope=per_layer"), "scope"),
], ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_bad_pruner_settings_say_what_to_fix_before_any_training(tmp_path: Path, overrides, fix: str):
    job = None
    with pytest.raises(UserError, match=fix.replace(".", r"\.").replace("*", r"\*")):
        job = job_from_config(tmp_path, *overrides)  # most settings fail here, as the config is built
        job.pruner.run(job)  # the rest as the pruner plans, before its first phase
    assert job is None or not job.starts, "trained before refusing"


# --- resuming a phase that prunes as it trains ----------------------------------------------------------
class InterruptedGradual(Gradual):
    """Gradual pruning that dies at `stop_at` steps on its first attempt, like a job killed mid-phase."""

    stop_at: int | None = None

    def target_at(self, step: int, total: int) -> float | None:
        if step == self.stop_at:
            raise KeyboardInterrupt
        return super().target_at(step, total)


def test_gradual_pruning_resumed_mid_phase_ends_where_an_uninterrupted_run_does(tmp_path: Path):
    # Random scores ignore the weights: only the right mask in force keeps pruned weights pruned on resume.
    settings = ("pruner=gradual", "pruner/score=random", "train.epochs=6",
                "train.checkpoint_every_s=0")
    whole = job_from_config(tmp_path / "whole", *settings)
    whole.pruner.run(whole)
    steps = math.ceil(len(whole.data.train) / whole.settings.batch_size)
    first, second = whole.pruner.event_steps(6 * steps)
    stop = next(s for s in range(first + 1, second) if s % steps)  # after a checkpoint that holds event 1
    assert (stop // steps) * steps >= first, "the checkpoint before the crash must already hold event 1's mask"

    crashed = job_from_config(tmp_path / "resumed", *settings)
    pruner = InterruptedGradual(score=crashed.pruner.score, select=crashed.pruner.select, epochs=6)
    pruner.stop_at = stop
    with pytest.raises(KeyboardInterrupt):
        pruner.run(crashed)
    resumed = job_from_config(tmp_path / "resumed", *settings)
    pruner.stop_at = None
    pruner.run(resumed)
    for n in whole.prunable:
        assert torch.equal(resumed.mask.tensors[n], whole.mask.tensors[n]), n
        assert torch.equal(dict(resumed.model.named_parameters())[n], dict(whole.model.named_parameters())[n]), n


def test_synflow_refuses_index_samples_before_training(tmp_path: Path):
    job = job_from_config(tmp_path, "pruner=synflow", "pruner.distill.alpha=0.5")
    as_indices = TensorSet(torch.arange(len(job.data.train)), job.data.train.y)  # like a graph's node ids
    job.data = Splits(job.data.info, as_indices, job.data.val, job.data.test)
    with pytest.raises(UserError, match="use pruner/score=snip or grasp"):
        job.pruner.check({n: tuple(w.shape) for n, w in job.weights().items()}, job.data)
    assert not job.starts, "refused before training, the distillation teacher included"
