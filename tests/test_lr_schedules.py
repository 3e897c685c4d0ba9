"""Learning-rate schedules: hand-computed values, the rates the optimizer really steps with, exact resume,
and late rewinding that restarts the schedule at step k (OpenLTH's lottery runner)."""

from __future__ import annotations

import copy
import functools
import math
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from prune_lab.api import prepare
from prune_lab.config import compose_run
from prune_lab.data.splits import DataInfo, Splits, TensorSet
from prune_lab.errors import UserError
from prune_lab.job import copy_state
from prune_lab.lr_schedules import Constant, Cosine, Linear, MultiStep, OneCycle, lr_factor
from prune_lab.masks import Mask
from prune_lab.training import TrainSettings, train

CONF = Path(__file__).resolve().parent.parent / "conf"
SCHEDULES = sorted(p.stem for p in (CONF / "train" / "schedule").glob("*.yaml"))


@pytest.mark.parametrize(("schedule", "step", "expected"), [
    (Constant(), 37, 1.0),
    (MultiStep(milestones=[2, 4], gamma=0.1), 19, 1.0),  # 10 steps per epoch: drops at steps 20 and 40
    (MultiStep(milestones=[2, 4], gamma=0.1), 20, 0.1),
    (MultiStep(milestones=[2, 4], gamma=0.1), 45, 0.01),
    (Cosine(), 50, 0.5),  # half way down a half cosine
    (Cosine(final=0.2), 100, 0.2),
    (Cosine(), 25, 0.5 * (1 + math.cos(math.pi / 4))),
    (Linear(), 25, 0.75),
    (Linear(final=0.5), 100, 0.5),
    (OneCycle(peak=0.3), 0, 1 / 25),
    (OneCycle(peak=0.3), 30, 1.0),
    (OneCycle(peak=0.3), 100, 1 / (25 * 1e4)),
])
def test_each_schedule_matches_a_hand_computation(schedule, step: int, expected: float):
    assert schedule.factor(step, 100, 10) == pytest.approx(expected)


def test_warmup_is_linear_then_the_schedule():
    assert [lr_factor(Constant(), 4, s, 100, 10) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert lr_factor(Linear(), 4, 50, 100, 10) == pytest.approx(0.5)


@pytest.mark.parametrize("name", SCHEDULES)
def test_every_schedule_yaml_composes(name: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[f"train/schedule={name}", "train.warmup=step:3"])
    spec = compose_run(cfg, {})
    assert type(spec.train.schedule).__name__.lower() == name


@pytest.mark.parametrize("override", ["train.warmup=3", "train.warmup=epochs:3", "train.weight_decay=-1",
                                      "train.weight_decay=true"])
def test_bad_schedule_settings_are_refused(override: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[override])
    with pytest.raises(UserError, match=override.split("=")[0].replace(".", r"\.")):
        compose_run(cfg, {})


# --- the rates the optimizer really steps with ------------------------------------------------------------
class RecordingSGD(torch.optim.SGD):
    """SGD that notes the learning rate of every step it takes."""

    rates: list[float] = []

    def step(self, closure=None):
        RecordingSGD.rates.append(self.param_groups[0]["lr"])
        return super().step(closure)


def toy() -> tuple[Splits, nn.Module, Mask]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(40, 5, generator=g), torch.randint(0, 3, (40,), generator=g)
    data = Splits(DataInfo("toy", (5,), 3), TensorSet(x, y), TensorSet(x[:8], y[:8]), TensorSet(x[:8], y[:8]))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 16), nn.ReLU(), nn.Dropout(0.3), nn.Linear(16, 3))
    return data, model, Mask.ones(model, ["0.weight", "3.weight"])


def settings(schedule, **kw) -> TrainSettings:  # 40 rows / 10 = 4 steps per epoch
    return TrainSettings(optimizer=functools.partial(RecordingSGD, momentum=0.9), lr=0.1, batch_size=10,
                         schedule=schedule, checkpoint_every_s=0, **kw)


def test_the_optimizer_steps_with_the_schedules_rates():
    data, model, mask = toy()
    RecordingSGD.rates = []
    train(model, mask, data, settings(Cosine(), warmup="step:2"), 5, seed=0, phase="p")
    expected = [0.1 * lr_factor(Cosine(), 2, s, 20, 4) for s in range(20)]
    assert RecordingSGD.rates == pytest.approx(expected)
    assert RecordingSGD.rates[0] == pytest.approx(0.05) and RecordingSGD.rates[10] == pytest.approx(0.05)


@pytest.mark.parametrize("schedule", [MultiStep(milestones=[1, 3]), Cosine(), OneCycle()])
def test_a_phase_killed_mid_schedule_resumes_the_same_rates_and_weights(schedule):
    data, model, mask = toy()
    checkpoints: list[dict] = []
    RecordingSGD.rates = []
    train(model, mask, data, settings(schedule), 5, seed=1, phase="p",
          save=lambda state: checkpoints.append(copy.deepcopy(state)))
    uninterrupted, rates = copy_state(model), list(RecordingSGD.rates)
    at_two = next(c for c in checkpoints if c["epoch"] == 2)
    data, model, mask = toy()
    torch.manual_seed(99)
    RecordingSGD.rates = []
    train(model, mask, data, settings(schedule), 5, seed=1, phase="p", resume=at_two)
    assert RecordingSGD.rates == rates[8:]  # steps 8..19, at exactly the rates they had
    assert all(torch.equal(v, uninterrupted[k]) for k, v in copy_state(model).items())


def test_late_rewinding_restarts_the_schedule_at_step_k():
    data, model, mask = toy()
    RecordingSGD.rates = []
    train(model, mask, data, settings(MultiStep(milestones=[2])), 4, seed=0, phase="dense")
    full = list(RecordingSGD.rates)
    data, model, mask = toy()
    RecordingSGD.rates = []
    seen: list[torch.Tensor] = []

    def loss(logits, y, x):
        seen.append(y.clone())
        return nn.functional.cross_entropy(logits, y)

    train(model, mask, data, settings(MultiStep(milestones=[2])), 4, seed=0, phase="dense", start_step=9,
          loss_fn=loss)
    assert RecordingSGD.rates == full[9:]  # 7 steps from step 9: rate 0.1 then 0.01 from step 8 on
    assert RecordingSGD.rates[0] == pytest.approx(0.01)
    assert len(seen) == 16 - 9


def test_imp_rounds_with_late_rewinding_train_from_step_k(tmp_path: Path):
    """Every round retrains the steps k..end of the dense schedule: fewer steps, the schedule's rate at k."""
    spec, job = prepare("pruner=imp", "sparsity=0.36", "train.epochs=3", "pruner.rewind=step:5",
                        "train/schedule=linear", "cache_dir=null", run_dir=tmp_path)
    spec.pruner.run(job)
    steps = {r["phase"]: r["step"] for r in job.history}  # the last step of each phase
    assert steps["dense"] == steps["round-1"] == steps["round-2"]  # rounds end where dense training ended
    first = next(r for r in job.history if r["phase"] == "round-1")
    assert first["step"] == 8  # 4 steps per epoch: the round began at step 5, mid-way through epoch 2
    per_epoch = {r["phase"]: r["lr"] for r in job.history if r["epoch"] == 2}
    assert per_epoch["round-1"] == pytest.approx(per_epoch["dense"])  # the same schedule, the same place
    assert [lv.extra["epochs_trained"] for lv in job.levels] == [3, 3 + 7 / 4, 3 + 14 / 4]


def test_weight_decay_reaches_the_optimizer_and_zero_passes_none():
    """train.weight_decay is handed to the optimizer (not every optimizer takes it, so 0 passes nothing)."""
    seen: list[dict] = []

    def factory(params, **kwargs):
        seen.append(kwargs)
        return torch.optim.SGD(params, **kwargs)

    for decay in (0.0, 0.25):
        data, model, mask = toy()
        train(model, mask, data, TrainSettings(optimizer=factory, lr=0.1, batch_size=10, weight_decay=decay), 1,
              seed=0, phase="p")
    assert seen == [{"lr": 0.1}, {"lr": 0.1, "weight_decay": 0.25}]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"weight_decay": -0.5}, "train.weight_decay=-0.5 must be in [0, inf], e.g. train.weight_decay=1e-4"),
    ({"warmup": "soon"}, "train.warmup='soon' must be epoch:K or step:K (or null), e.g. train.warmup=epoch:5"),
])
def test_bad_settings_say_the_key_and_an_example(kwargs: dict, message: str):
    with pytest.raises(UserError) as e:
        TrainSettings(optimizer=torch.optim.SGD, **kwargs)
    assert str(e.value) == message
