"""Train the dense network once per sweep: a content-addressed cache of pure dense training phases.

In a sweep of one-shot pruners, every job with the same dataset, model, init, seed and training settings
starts by training the same dense network. `Job.train` asks this cache for such a phase, and only for a
phase that is pure dense training: the first thing the job does, with the model still at its initial
weights, an all-ones mask, no step hook and the default loss (see `Job._shareable`). The key is a sha256
of exactly what that phase's outcome depends on (`dense_basis`): the resolved dataset/model/init/train
groups minus bookkeeping (prune_lab.bookkeeping), the seed, the phase name and epochs (its random streams
derive from them), the device type, the CPU thread count (float sums are not bit-identical across thread
counts), the torch version, a digest of prune_lab's own source, and the code of every `_target_` those
groups instantiate (`target_code`): the files of a user's own package or module, the version of an
installed distribution. Editing any of it never reuses a stale entry; a target whose code cannot be found
(a class defined in a notebook, say) turns sharing off for the run, with a note.
"Identical" means: the same bits as the job that trained the entry, on the same device type, torch version
and thread count.

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
import importlib.metadata
import io
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import prune_lab
from prune_lab import bookkeeping
from prune_lab.errors import UserError
from prune_lab.storage import atomic_write_bytes, atomic_write_json, build_once

FORMAT = 1  # bump when the entry layout or what the key covers changes
# Keys of the resolved config a dense phase does not depend on beyond bookkeeping (prune_lab.bookkeeping):
# budgets of later phases (the phase's own epochs are in the key).
PHASE_INDEPENDENT = ("train.finetune_epochs", "train.epochs")
DENSE_GROUPS = ("dataset", "model", "init", "train")
MAX_USER_FILES = 500  # a user's folder with more .py files than this is not hashed: no sharing


@lru_cache(maxsize=1)
def source_digest() -> str:
    """sha256 over prune_lab's Python source (a few ms): any code change gives new keys."""
    root = Path(prune_lab.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def _targets(node: Any) -> Iterator[str]:
    """Every `_target_` string in a resolved config subtree."""
    if isinstance(node, Mapping):
        if isinstance(node.get("_target_"), str):
            yield node["_target_"]
        for value in node.values():
            yield from _targets(value)
    elif isinstance(node, list):
        for value in node:
            yield from _targets(value)


def _module_of(target: str) -> ModuleType | None:
    """The imported module a dotted `_target_` lives in (the longest prefix already imported)."""
    parts = target.split(".")
    for i in range(len(parts), 0, -1):
        module = sys.modules.get(".".join(parts[:i]))
        if module is not None:
            return module
    return None


def _installed(path: Path) -> bool:
    return any(part in ("site-packages", "dist-packages") for part in path.parts)


def _files_digest(files: list[Path]) -> str | None:
    if len(files) > MAX_USER_FILES:
        return None
    h = hashlib.sha256()
    for path in sorted(files):
        h.update(str(path).encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def target_code(target: str) -> str | None:
    """What the code behind one `_target_` is, as a short string for the key; None when it cannot be known.

    prune_lab's own modules: covered by `source_digest`. An installed distribution (site-packages): its
    name and version. Anything else (a user's module found through PYTHONPATH / --config-dir): a digest of
    every .py file of its top-level package, or, for a plain module, of the .py files beside it, since it
    may import its neighbours."""
    module = _module_of(target)
    if module is None:
        return None
    top = module.__name__.split(".")[0]
    if top == "prune_lab":
        return "prune_lab"
    top_module = sys.modules.get(top)
    origin = getattr(top_module, "__file__", None)
    if origin is None:
        return None  # a namespace package, a class made in a notebook's __main__, ...: unknown code
    path = Path(origin).resolve()
    if _installed(path):
        dists = importlib.metadata.packages_distributions().get(top, [])
        versions = sorted(f"{d}=={importlib.metadata.version(d)}" for d in dists)
        return f"{top}:{','.join(versions) or 'unknown'}" if versions else None
    if top == "__main__":
        return None
    folder = path.parent
    files = list(folder.rglob("*.py")) if path.name == "__init__.py" else list(folder.glob("*.py"))
    digest = _files_digest(files)
    return None if digest is None else f"{top}:{digest}"


def dense_basis(config: Mapping[str, Any], device: torch.device | str, threads: int) -> dict[str, Any]:
    """The part of a resolved run config (and of the machine) that a pure dense training phase depends on.

    Raises LookupError naming a `_target_` whose code cannot be known (the caller then does not share)."""
    groups = {group: config.get(group) for group in DENSE_GROUPS}
    code = {}
    for target in sorted(set(_targets(groups))):
        found = target_code(target)
        if found is None:
            raise LookupError(target)
        code[target] = found
    basis: dict[str, Any] = {"format": FORMAT, "seed": config["seed"], "device": torch.device(device).type,
                             "threads": threads, "torch": torch.__version__, "code": source_digest(),
                             "targets": code}
    basis.update(bookkeeping.without(groups, (*bookkeeping.BOOKKEEPING, *PHASE_INDEPENDENT)))
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
    def open(cls, cache_dir: str | None, config: Mapping[str, Any], device: torch.device,
             threads: int) -> DenseCache | None:
        """The cache of a run, or None when `cache_dir` is null (disabled) or the run's code cannot be known."""
        if cache_dir is None or str(cache_dir).strip().lower() in ("", "null", "none", "false"):
            return None
        try:
            basis = dense_basis(config, device, threads)
        except LookupError as e:
            print(f"prune_lab: the dense cache is off for this run: the code of {e.args[0]} cannot be located, so "
                  "a cached network could be stale", file=sys.stderr)
            return None
        return cls(Path(str(cache_dir)).expanduser(), basis)

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
