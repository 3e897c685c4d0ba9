"""Cora (Planetoid citation graph: 2708 papers, 1433 bag-of-words features, 7 topics) with the public split.

Files: the Planetoid pickles `ind.cora.{x,y,tx,ty,allx,ally,graph,test.index}` in `<data_dir>/Cora/raw/`
(torch_geometric's layout), downloaded from the Planetoid repository only with `download: true`.
The split is Kipf & Welling's / Planetoid's public one: 140 training nodes (20 per class), 500 validation,
1000 test. Features are row-normalised and the adjacency is D^-1/2 (A + I) D^-1/2, as in Kipf & Welling.

The samples are node *indices* (x = node ids, int64), so the trainer batches and evaluates by index as
for any dataset; the graph itself travels in DataInfo.extras: "adjacency" (sparse COO [N, N]) and
"features" ([N, 1433]). A graph model reads them at construction (see prune_lab/models/gcn.py).
"""

from __future__ import annotations

import collections
import pickle
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from prune_lab.data.splits import DataInfo, Splits, TensorSet, resolve_data_dir
from prune_lab.errors import DataAbsent, UserError

URL = "https://github.com/kimiyoung/planetoid/raw/master/data"  # torch_geometric's Planetoid source
PARTS = ("x", "y", "tx", "ty", "allx", "ally", "graph", "test.index")


class _PlanetoidUnpickler(pickle.Unpickler):
    """Pickle runs whatever a file names; these files may only build numpy arrays, scipy CSR and dicts."""

    def find_class(self, module: str, name: str):
        import scipy.sparse

        if name == "csr_matrix" and module.startswith("scipy.sparse"):
            return scipy.sparse.csr_matrix
        if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
            try:
                from numpy._core import multiarray  # numpy >= 2
            except ImportError:
                from numpy.core import multiarray
            return getattr(multiarray, name)
        if module == "numpy" and name in ("ndarray", "dtype"):
            return getattr(np, name)
        if (module, name) == ("collections", "defaultdict"):
            return collections.defaultdict
        if (module, name) in (("builtins", "list"), ("builtins", "int"), ("__builtin__", "list")):
            return list if name == "list" else int
        raise UserError(f"cora: a Planetoid file refers to {module}.{name}, which these files never hold; "
                        "replace the files in Cora/raw with the originals")


def _read(path: Path):
    with open(path, "rb") as f:
        return _PlanetoidUnpickler(f, encoding="latin1").load()


@dataclass(frozen=True)
class Cora:
    data_dir: str | None = None  # null: $PRUNE_LAB_DATA_DIR, else ~/.cache/prune_lab/data
    download: bool = False  # false: never touch the network (offline cluster nodes)
    normalize_features: bool = True  # row-normalise the bag-of-words, as Kipf & Welling do

    name = "cora"

    def _raw(self) -> Path:
        raw = resolve_data_dir(self.data_dir) / "Cora" / "raw"
        missing = [p for p in PARTS if not (raw / f"ind.cora.{p}").exists()]
        if missing and self.download:
            raw.mkdir(parents=True, exist_ok=True)
            for p in missing:
                try:
                    urllib.request.urlretrieve(f"{URL}/ind.cora.{p}", raw / f"ind.cora.{p}.part")
                except OSError as e:
                    raise UserError(f"cora: downloading {URL}/ind.cora.{p} failed ({e}); copy the Planetoid "
                                    f"files into {raw} by hand") from e
                (raw / f"ind.cora.{p}.part").replace(raw / f"ind.cora.{p}")
        elif missing:
            raise DataAbsent(
                f"cora: {raw} lacks {', '.join('ind.cora.' + p for p in missing)} and dataset.download=false. "
                "Put the Planetoid files there, point dataset.data_dir or $PRUNE_LAB_DATA_DIR at the folder "
                "holding Cora/raw/, or set dataset.download=true where online"
            )
        return raw

    def load(self) -> Splits:
        import scipy.sparse as sp

        raw = self._raw()
        x, y, tx, ty, allx, ally, graph = (_read(raw / f"ind.cora.{p}") for p in PARTS[:-1])
        test_index = [int(line) for line in (raw / "ind.cora.test.index").read_text().split()]
        # Planetoid stores the test nodes (tx) after the others, in shuffled order: put each at its index.
        order = np.sort(test_index)
        features = sp.vstack((allx, tx)).tolil()
        features[test_index, :] = features[order, :]
        labels = np.vstack((ally, ty))
        labels[test_index, :] = labels[order, :]
        n = features.shape[0]

        feats = torch.tensor(features.toarray(), dtype=torch.float32)  # [2708, 1433]
        if self.normalize_features:
            feats = feats / feats.sum(1, keepdim=True).clamp_min(1.0)
        adjacency = _normalised_adjacency(graph, n)
        labels_t = torch.tensor(labels.argmax(1), dtype=torch.int64)

        train = torch.arange(len(y))  # 140
        val = torch.arange(len(y), len(y) + 500)
        test = torch.tensor(order, dtype=torch.int64)  # 1000
        info = DataInfo("cora", (), int(labels.shape[1]), {"adjacency": adjacency, "features": feats})
        return Splits(info, TensorSet(train, labels_t[train]), TensorSet(val, labels_t[val]),
                      TensorSet(test, labels_t[test]))


def _normalised_adjacency(graph: dict, n: int) -> Tensor:
    """D^-1/2 (A + I) D^-1/2 of the undirected graph, sparse COO [n, n]."""
    src = [i for i, nbrs in graph.items() for _ in nbrs]
    dst = [j for nbrs in graph.values() for j in nbrs]
    edges = torch.tensor([src + dst + list(range(n)), dst + src + list(range(n))])  # both directions + loops
    edges = torch.unique(edges, dim=1)  # the raw graph lists some edges twice
    deg = torch.bincount(edges[0], minlength=n).float()
    values = deg[edges[0]].rsqrt() * deg[edges[1]].rsqrt()
    return torch.sparse_coo_tensor(edges, values, (n, n), check_invariants=True).coalesce()
