"""Palmer penguins (shipped by the `palmerpenguins` package, so it works offline), as in the dynamic-pruning study.

Inputs (12): island one-hot (3), sex one-hot (2), year one-hot (3: 2007-2009, as the study encoded it),
and bill length, bill depth, flipper length, body mass standardised with the training split's statistics.
Target: species (Adelie, Chinstrap, Gentoo). Rows with any missing value are dropped (333 remain).
"""

from __future__ import annotations

import csv
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import torch

from prune_lab.data.splits import DataInfo, Splits, TensorSet, split_indices
from prune_lab.errors import UserError

SPECIES = ("Adelie", "Chinstrap", "Gentoo")
ISLANDS = ("Biscoe", "Dream", "Torgersen")
SEXES = ("female", "male")
YEARS = ("2007", "2008", "2009")
NUMERIC = ("bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g")


def _rows() -> list[dict[str, str]]:
    # Read the CSV directly: importing pandas would cost ~0.5 s on the training path, and so would importing
    # the palmerpenguins package itself (its __init__ imports pandas), so find its folder without importing it.
    spec = importlib.util.find_spec("palmerpenguins")
    folder = Path(next(iter(spec.submodule_search_locations))) if spec and spec.submodule_search_locations else None
    if folder is None:
        raise UserError("dataset=penguins needs the palmerpenguins package: pip install palmerpenguins")
    text = (folder / "data" / "penguins.csv").read_text()
    rows = list(csv.DictReader(text.splitlines()))
    fields = ("species", "island", "sex", "year", *NUMERIC)
    return [r for r in rows if all(r[f] not in ("", "NA") for f in fields)]


@dataclass(frozen=True)
class Penguins:
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    split_seed: int = 0

    def load(self) -> Splits:
        rows = _rows()
        onehot = [
            [float(r["island"] == v) for v in ISLANDS]
            + [float(r["sex"] == v) for v in SEXES]
            + [float(r["year"] == v) for v in YEARS]
            for r in rows
        ]
        numeric = torch.tensor([[float(r[f]) for f in NUMERIC] for r in rows])
        y = torch.tensor([SPECIES.index(r["species"]) for r in rows])
        train, val, test = split_indices(len(rows), self.val_fraction, self.test_fraction, self.split_seed)
        mean, std = numeric[train].mean(0), numeric[train].std(0)  # training split only: no test leakage
        x = torch.cat([torch.tensor(onehot), (numeric - mean) / std], dim=1).float()
        info = DataInfo("penguins", (x.shape[1],), len(SPECIES))
        return Splits(info, TensorSet(x[train], y[train]), TensorSet(x[val], y[val]), TensorSet(x[test], y[test]))
