"""Pruned weights stay exactly zero through training, whatever the optimizer's state, and masks use no hooks."""

from __future__ import annotations

import functools

import pytest
import torch

from prune_lab.data.penguins import Penguins
from prune_lab.data.splits import Splits
from prune_lab.masks import Mask, PrunableSelection
from prune_lab.models.mlp import MLP
from prune_lab.pruners.scores import Magnitude
from prune_lab.pruners.selection import Unstructured, select_mask
from prune_lab.training import TrainSettings, train

OPTIMIZERS = {
    "adam": functools.partial(torch.optim.Adam),
    "sgd_momentum": functools.partial(torch.optim.SGD, momentum=0.9),
    "adamw": functools.partial(torch.optim.AdamW, weight_decay=0.1),
}


@pytest.fixture(scope="module")
def penguins() -> Splits:
    return Penguins().load()


@pytest.mark.parametrize("optimizer", OPTIMIZERS, ids=list(OPTIMIZERS))
def test_weights_pruned_mid_training_stay_exactly_zero(penguins: Splits, optimizer: str):
    torch.manual_seed(0)
    model = MLP(penguins.info, hidden=[16, 16])
    names = PrunableSelection().names(model)
    settings = TrainSettings(optimizer=OPTIMIZERS[optimizer], lr=0.01, batch_size=32)
    chosen: dict[str, Mask] = {}

    def prune_at_step_10(step: int, total: int, m: torch.nn.Module) -> Mask | None:
        # By step 10 the optimizer holds momentum / Adam moments for every weight, pruned ones included.
        if step != 10:
            return None
        params = dict(m.named_parameters())
        chosen["mask"] = select_mask(Magnitude(), Unstructured(), {n: params[n].detach() for n in names},
                                                  Mask.ones(m, names), 0.7)
        return chosen["mask"]

    result = train(model, Mask.ones(model, names), penguins, settings, epochs=6, seed=0, phase="t",
                   on_step=prune_at_step_10)
    params = dict(model.named_parameters())
    mask = chosen["mask"]
    for n in names:
        assert torch.count_nonzero(params[n][~mask.tensors[n]]) == 0, f"{n}: a pruned weight came back"
        assert torch.count_nonzero(params[n][mask.tensors[n]]) == mask.tensors[n].sum(), f"{n}: survivors zeroed"
    assert result.mask is mask


def test_masks_add_no_hooks(penguins: Splits):
    model = MLP(penguins.info, hidden=[8])
    names = PrunableSelection().names(model)
    settings = TrainSettings(optimizer=OPTIMIZERS["adam"], lr=0.01)
    weights = {n: p.detach() for n, p in model.named_parameters() if n in names}
    mask = select_mask(Magnitude(), Unstructured(), weights, Mask.ones(model, names), 0.5)
    train(model, mask, penguins, settings, epochs=1, seed=0, phase="t")
    for module in model.modules():
        assert not module._forward_hooks and not module._forward_pre_hooks
    assert not any("_orig" in n or "_mask" in n for n, _ in model.named_parameters())
