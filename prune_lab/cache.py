"""Train the dense network once per sweep: a content-addressed cache of pure dense training phases.

In a sweep of one-shot pruners, every job with the same dataset, model, init, seed and training settings
starts by training the same dense network. `Job.train` asks this cache for such a phase, and only for a
phase that is pure dense training: the first thing the job does, with the model still at its initial
weights, an all-ones mask, no step hook and the default loss (see `Job._shareable`). The key is a sha256
of exactly what that phase's outcome depends on (`dense_basis`): the resolved dataset/model/init/train
groups minus locations and bookkeeping, the seed, the phase name and epochs (its random streams derive from
them), the device type, the torch version and a digest of prune_lab's own source, so editing the code never
reuses a stale entry.

Concurrency (several jobs, one folder, maybe a shared filesystem): a job that misses takes an exclusive
lock on `<key>.lock` (fcntl `flock` through the `filelock` package) and trains; the others block on the
lock and then read its entry. The kernel drops the lock when its holder dies, so a crashed trainer
leaves no stale lock: the next waiter trains instead. An entry is `<key>.pt` (written to a temp name and
renamed) plus `<key>.json` with its sha256 (written after it: the completion marker); an entry without
a manifest, or whose bytes do not match it, is never used, and is retrained under the lock.
NFS: flock works on Linux NFS clients (emulated with NFS byte-range locks, NFSv4 or lockd); on a mount
with `nolock`/`local_lock=all`, locks are per node, so jobs on different nodes may both train the same
entry. That costs time, never correctness: both write the same content by atomic rename. Where locking
fails outright (ENOLCK), the job trains without the lock and says so.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import torch

import prune_lab
from prune_lab.bookkeeping import BOOKKEEPING, without
from prune_lab.errors import UserError
from prune_lab.storage import atomic_write_bytes, atomic_write_json, build_once

FORMAT = 1  # bump when the entry layout or what the key covers changes
# Keys of the resolved config a dense phase does not depend on beyond bookkeeping (prune_lab.bookkeeping):
# budgets of later phases (the phase's own epochs are in the key).
PHASE_INDEPENDENT = ("train.finetune_epochs", "train.epochs")
DENSE_GROUPS = ("dataset", "model", "init", "train")


@lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 over prune_lab's Python source (a few ms): any code change gives new keys."""
    root = Path(prune_lab.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def dense_basis(config: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    """The part of a resolved run config that a pure dense training phase depends on."""
    basis: dict[str, Any] = {"format": FORMAT, "seed": config["seed"], "device": torch.device(device).type,
                             "torch": torch.__version__, "code": source_digest()}
    basis.update(without({group: config.get(group) for group in DENSE_GROUPS}, (*BOOKKEEPING, *PHASE_INDEPENDENT)))
    return basis


@dataclass(frozen=True)
class CacheOutcome:
    key: str
    hit: bool  # True: read from the cache; False: trained here and stored
    state: dict[str, Any]  # {"model": state_dict on CPU, "history": per-epoch records}


class DenseCache:
    def __init__(self, folder: Path, basis: Mapping[str, Any]):
        self.folder, self.basis = folder, dict(basis)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            # A probe of its own: jobs starting together must not delete each other's.
            fd, probe = tempfile.mkstemp(dir=folder, prefix=".write_test.")
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise UserError(f"cache_dir={folder} is not a writable folder ({e}); set cache_dir to another "
                            "folder, or cache_dir=null to train every dense network") from e

    @classmethod
    def open(cls, cache_dir: str | None, config: Mapping[str, Any], device: torch.device) -> DenseCache | None:
        """The cache of a run, or None when `cache_dir` is null (disabled)."""
        if cache_dir is None or str(cache_dir).strip().lower() in ("", "null", "none", "false"):
            return None
        return cls(Path(str(cache_dir)).expanduser(), dense_basis(config, device))

    def key(self, phase: str, epochs: int) -> str:
        identity = {**self.basis, "phase": phase, "epochs": epochs}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        return self.folder / f"{key}.pt", self.folder / f"{key}.json", self.folder / f"{key}.lock"

    def load(self, key: str) -> dict[str, Any] | None:
        """A complete, intact entry, or None (missing, partial or corrupt entries count as absent)."""
        data_path, manifest_path, _ = self._paths(key)
        try:
            manifest = json.loads(manifest_path.read_text())
            data = data_path.read_bytes()
        except (OSError, ValueError):
            return None
        if not isinstance(manifest, dict) or hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
            print(f"prune_lab: ignoring a corrupt dense-cache entry {data_path}", file=sys.stderr)
            return None
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=False)

    def store(self, key: str, state: dict[str, Any], identity: Mapping[str, Any]) -> None:
        data_path, manifest_path, _ = self._paths(key)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        atomic_write_bytes(data_path, data)
        atomic_write_json(manifest_path, {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                                          "identity": dict(identity)})

    def fetch_or_train(self, phase: str, epochs: int, train: Callable[[], dict[str, Any]]) -> CacheOutcome:
        """The phase's outcome from the cache, or `train()`'s, stored for the next job. One trains at a time
        (prune_lab.storage.build_once: the same lock-then-check-again mechanism that prepares datasets)."""
        key = self.key(phase, epochs)
        state, trained = build_once(
            self._paths(key)[2], lambda locked: self.load(key),
            lambda: self._train_and_store(key, phase, epochs, train).state,
            f"another job is training this dense network (cache key {key}); waiting for it")
        return CacheOutcome(key, not trained, state)

    def _train_and_store(self, key: str, phase: str, epochs: int,
                         train: Callable[[], dict[str, Any]]) -> CacheOutcome:
        state = train()
        self.store(key, state, {**self.basis, "phase": phase, "epochs": epochs})
        return CacheOutcome(key, False, state)


def load_once(dataset: Any) -> Any:
    """`dataset.load()`, memoised for the last dataset config: a local sweep's jobs share one load.

    Datasets are frozen dataclasses (hashable, equal when their settings are); anything else loads anew.
    The loaded tensors are only read by training (batches are gathered copies), never modified.
    """
    try:
        hash(dataset)
    except TypeError:
        return dataset.load()
    return _load_memo(dataset)


@lru_cache(maxsize=1)
def _load_memo(dataset: Any) -> Any:
    return dataset.load()
