"""The sanity checks of pruning at initialisation (`pruner.controls` of snip, grasp, synflow): Frankle et al. 2021's
layerwise shuffling, reinitialisation and inversion (Section 5) and Su et al. 2020's random pruning at the method's
layer ratios, each checked by hand on the penguin MLP; then the CLI run, kill -9 and resume, and the config hash of
a run without controls."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import TINY, computed, job_from_config, killed_and_reference, read_json, run_cli
from omegaconf import OmegaConf

from prune_lab.api import compose
from prune_lab.config import config_hash
from prune_lab.errors import UserError
from prune_lab.masks import Mask
from prune_lab.pruners.at_init import CONTROLS
from prune_lab.pruners.scores import ScoreInputs

ALL = list(CONTROLS)
ARGS = ["pruner=snip", "sparsity=0.5", f"pruner.controls=[{','.join(ALL)}]"]


def control_masks(folder: Path, *overrides: str) -> tuple[Mask, dict[str, Mask], object]:
    """(the method's mask, each control's mask, the job) computed from the initial weights, as `run` does."""
    job = job_from_config(folder, *ARGS, *overrides)
    mask = job.pruner.prune(job)
    return mask, {c: CONTROLS[c].mask(job.pruner, job, mask) for c in ALL}, job


def kept(mask: Mask) -> dict[str, int]:
    return {n: int(keep.sum()) for n, keep in mask.tensors.items()}


def test_layerwise_shuffle_keeps_each_layers_count_and_moves_the_survivors(tmp_path: Path) -> None:
    mask, controls, _ = control_masks(tmp_path)
    shuffled = controls["layerwise_shuffle"]
    assert kept(shuffled) == kept(mask)
    assert all(not torch.equal(shuffled.tensors[n], keep) for n, keep in mask.tensors.items())


def test_random_ratios_has_the_methods_per_layer_ratios_at_random_places(tmp_path: Path) -> None:
    mask, controls, _ = control_masks(tmp_path)
    rand = controls["random_ratios"]
    assert kept(rand) == kept(mask)  # SNIP's global ranking gives the layers unequal ratios: these
    assert len({round(1 - k / mask.tensors[n].numel(), 3) for n, k in kept(mask).items()}) > 1
    assert not torch.equal(rand.tensors["net.1.weight"], mask.tensors["net.1.weight"])
    assert not torch.equal(rand.tensors["net.1.weight"], controls["layerwise_shuffle"].tensors["net.1.weight"])


def test_invert_scores_prunes_exactly_the_top_scored_weights_with_the_methods_global_selection(tmp_path: Path) -> None:
    mask, controls, job = control_masks(tmp_path)
    # the method's scores by hand: SNIP on the same batches (the "saliency" stream of round 1), the dense mask
    ones = Mask.ones(job.model, job.prunable)
    inputs = ScoreInputs(job.model, ones, job.data, job.generator("saliency", 1))
    scores = torch.cat([s.reshape(-1) for s in job.pruner.score.weights(inputs).values()])
    inverted = torch.cat([k.reshape(-1) for k in controls["invert_scores"].tensors.values()])
    own = torch.cat([k.reshape(-1) for k in mask.tensors.values()])
    n = scores.numel()
    assert int((~inverted).sum()) == int((~own).sum()) == round(0.5 * n)  # the method's target, over all layers
    assert scores[~inverted].min() >= scores[inverted].max()  # every pruned weight outscores every kept one
    assert scores[own].min() >= scores[~own].max()  # and the method keeps the top ones
    assert kept(controls["invert_scores"]) != kept(mask)  # one global ranking: the layer ratios move too


def test_controls_draw_from_their_own_streams_reproducibly(tmp_path: Path) -> None:
    _, first, _ = control_masks(tmp_path / "a")
    _, again, _ = control_masks(tmp_path / "b")
    _, other, _ = control_masks(tmp_path / "c", "seed=1")
    for c in ("layerwise_shuffle", "random_ratios"):
        assert all(torch.equal(first[c].tensors[n], again[c].tensors[n]) for n in first[c].tensors)
        assert not all(torch.equal(first[c].tensors[n], other[c].tensors[n]) for n in first[c].tensors)


def test_each_control_trains_the_methods_budget_from_the_initial_weights_or_a_fresh_draw(tmp_path: Path) -> None:
    job = job_from_config(tmp_path, *ARGS, "train.epochs=1")
    job.pruner.run(job)
    init = job.initial_state
    method_state, method_mask = job.starts["sparse"]
    for phase in ALL:
        state, mask = job.starts[phase]
        for n, keep in mask.tensors.items():
            assert torch.count_nonzero(state[n][~keep]) == 0, (phase, n)
            if phase == "reinitialize":  # the method's mask, new weights from the init scheme
                assert torch.equal(keep, method_mask.tensors[n])
                assert not torch.equal(state[n][keep], init[n][keep])
            else:  # the run's own initial weights under the control's mask
                assert torch.equal(state[n], init[n] * keep), (phase, n)
    levels = {level.name: level.to_json() for level in job.levels}
    assert list(levels) == ["pruned", *ALL]
    assert "branch" not in levels["pruned"]
    for c in ALL:
        assert levels[c]["branch"] == c
        assert levels[c]["epochs_trained"] == levels["pruned"]["epochs_trained"] == 1
        assert levels[c]["target_sparsity"] == 0.5 and abs(levels[c]["sparsity"] - 0.5) < 0.01
    final = dict(job.model.state_dict())  # the run ends as the method: model.pt is the method's network
    assert all(torch.equal(final[k], v) for k, v in job.ends["sparse"][0].items())
    assert all(torch.equal(job.mask.tensors[n], k) for n, k in method_mask.tensors.items())


def test_an_unknown_control_is_refused_before_training_naming_the_valid_ones(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=r"pruner.controls has 'shuffle'; choose from \['layerwise_shuffle', "):
        job_from_config(tmp_path, "pruner=snip", "pruner.controls=[shuffle]")
    proc = run_cli("pruner=grasp", "pruner.controls=[invert]", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if "invert" in line]
    assert len(lines) == 1 and all(c in lines[0] for c in ALL), proc.stderr[-2000:]
    assert not (tmp_path / "run" / "checkpoints").exists() and not (tmp_path / "run" / "results.json").exists()


def hash_of(*overrides: str, drop_controls: bool = False) -> str:
    cfg, _ = compose(*overrides)
    config = OmegaConf.to_container(cfg, resolve=True)
    if drop_controls:  # the config as it was before at-init pruners had the key
        config = copy.deepcopy(config)
        del config["pruner"]["controls"]
    return config_hash(config)


@pytest.mark.parametrize("pruner", ["snip", "grasp", "synflow"])
def test_no_controls_keeps_the_config_hash_of_runs_made_before_the_key(pruner: str) -> None:
    before = hash_of(f"pruner={pruner}", drop_controls=True)
    assert hash_of(f"pruner={pruner}") == before
    assert hash_of(f"pruner={pruner}", "pruner.controls=[reinitialize]") != before


def test_imps_own_empty_controls_stay_part_of_imps_hash() -> None:
    # imp has had `controls: []` all along: neutral only where the key is new (bookkeeping.NEUTRAL_WHERE)
    assert hash_of("pruner=imp") != hash_of("pruner=imp", drop_controls=True)


def test_the_cli_records_the_method_and_each_control_as_a_branch_level(tmp_path: Path) -> None:
    proc = run_cli(*ARGS, *TINY, "device=cpu", "threads=1", "hydra.run.dir=run", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    levels = read_json(tmp_path / "run" / "results.json")["levels"]
    assert [(lv["name"], lv.get("branch")) for lv in levels] == [("pruned", None), *((c, c) for c in ALL)]
    assert all(lv["target_sparsity"] == 0.5 and abs(lv["sparsity"] - 0.5) < 0.01 for lv in levels)
    assert {lv["epochs_trained"] for lv in levels} == {3}


@pytest.mark.slow
def test_a_run_killed_inside_a_control_resumes_to_the_uninterrupted_result(tmp_path: Path) -> None:
    args = ["pruner=snip", f"pruner.controls=[{','.join(ALL)}]"]  # with conftest.ARGS: penguins, 20 epochs
    reference, killed = killed_and_reference(tmp_path, args, "invert_scores.partial.pt")
    ref, res = read_json(reference / "results.json"), read_json(killed / "results.json")
    resumed = {r["phase"]: r for r in res["resumed"]}
    assert resumed["sparse"]["restored"] and "from_epoch" in resumed["invert_scores"], res["resumed"]
    assert computed(res["levels"]) == computed(ref["levels"])


def test_the_report_says_per_score_whether_the_method_beat_each_control(tmp_path: Path) -> None:
    """A sweep of two at-init scores with every control (`++`: the sweep's base config, pruner=magnitude, has no
    such key): the report compares each control with its method's level per score, in the one Holm family."""
    sweep = tmp_path / "sweep"
    done = run_cli("-m", f"hydra.sweep.dir={sweep}", "pruner=snip,grasp", f"++pruner.controls=[{','.join(ALL)}]",
                   "seed=0,1,2", "sparsity=0.5", *TINY, "device=cpu", "threads=1", cwd=tmp_path,
                   env={"OMP_NUM_THREADS": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    gaps = {0: 0.29, 1: 0.30, 2: 0.31}  # snip's inverted scores made 30 points worse on every seed: significant
    for path in sweep.glob("*pruner=snip*/results.json"):
        record = read_json(path)
        own = next(lv for lv in record["levels"] if lv["name"] == "pruned")
        inv = next(lv for lv in record["levels"] if lv["name"] == "invert_scores")
        inv["test_acc"] = own["test_acc"] - gaps[record["seed"]]
        path.write_text(json.dumps(record))
    out = tmp_path / "out"
    done = run_cli(str(sweep), "--out", str(out), module="multirun_analysis", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    report = (out / "report.md").read_text()
    answer = report.split("## Answer")[1].split("## Checks")[0]
    assert "Compared: `pruner` (grasp, snip), within each `branch`" in answer
    lines = {c: line for line in answer.splitlines() for c in ("grasp", "snip")
             if line.startswith(f"- pruner={c}, at 50% sparsity, the method (**main**)")}
    assert set(lines) == {"grasp", "snip"}
    assert all(f"**{c}**" in line for line in lines.values() for c in ALL)
    assert "**invert_scores**" in lines["snip"] and "the method beat it, the method 30.0 points above" in lines["snip"]
    controls = pd.read_csv(out / "controls.csv")
    assert len(controls) == 8 and set(controls["pruner"]) == {"grasp", "snip"}
    comparisons = pd.read_csv(out / "comparisons.csv")
    tests = int(comparisons["p_holm"].notna().sum() + controls["p_holm"].notna().sum())
    assert f"over all {tests} tests in the comparisons table and the controls table" in answer
    assert "### Controls against their method" in report
