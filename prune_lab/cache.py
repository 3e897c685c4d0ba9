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

What is read back is verified and never executed: the manifest's sha256 first, then the bytes are read as data
only (`torch.load(weights_only=True)`: tensors, dicts, lists, numbers, strings; a pickle naming any other class
or function is refused), then the shape of what was read (a `model` dict of tensors matching the job's model,
an epoch `history` list). An entry that fails any of these is moved aside (`<name>.corrupt-<time>`) with one
line, and the job trains and stores its own.

Trust (`cache_trust`): a checksum only proves that the bytes are what the manifest's writer meant, so an
entry is only as trustworthy as whoever could write it. `owner` (the default): only entries (.pt and .json)
owned by the current user, in a folder owned by them (or root) that neither group nor others can write;
prune_lab makes a cache folder 0700 (the default one is under ~/.cache). `group`, for a lab's shared cache: also
entries written by members of the folder's group, in a folder others cannot write. `everyone`: any entry (a
shared cache trusts everyone who can write it). A folder the setting does not trust turns the cache off for the
run, with one line; an untrusted entry is ignored with one line and left in place (it may be someone else's):
the job trains its own and does not overwrite it.

The cache is an optimisation: a read or write failure (a full disk, a quota, no permission) is one line, and
the job goes on with its own training, stored in its run folder as always.
"""

from __future__ import annotations

import errno
import grp
import hashlib
import importlib.metadata
import io
import json
import os
import pwd
import stat
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
from prune_lab.storage import (
    FILE_MODE,
    atomic_write_bytes,
    atomic_write_json,
    build_once,
    load_plain,
    one_line,
    set_aside,
)

FORMAT = 1  # bump when the entry layout or what the key covers changes
# Keys of the resolved config a dense phase does not depend on beyond bookkeeping (prune_lab.bookkeeping):
# budgets of later phases (the phase's own epochs are in the key).
PHASE_INDEPENDENT = ("train.finetune_epochs", "train.epochs")
DENSE_GROUPS = ("dataset", "model", "init", "train")
MAX_USER_FILES = 500  # a user's folder with more .py files than this is not hashed: no sharing
TRUST = ("owner", "group", "everyone")  # `cache_trust`: whose entries are used (module docstring)
ENTRY_MODE = FILE_MODE & ~0o022  # an entry is never writable by group or others, whatever the umask
FULL = (errno.ENOSPC, errno.EDQUOT)  # a full disk or quota: the folder is fine, the cache is just off


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
    basis.update(bookkeeping.without(groups, (*bookkeeping.BOOKKEEPING, *bookkeeping.neutral_keys(groups),
                                              *PHASE_INDEPENDENT)))
    return basis


def _name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _group(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return f"gid {gid}"


def _in_group(uid: int, gid: int) -> bool:
    """Whether user `uid` is a member of group `gid` (as its primary group or a supplementary one)."""
    try:
        user = pwd.getpwuid(uid)
        return user.pw_gid == gid or user.pw_name in grp.getgrgid(gid).gr_mem
    except KeyError:  # a uid or gid this machine cannot name: not known to be a member
        return False


def folder_distrust(st: os.stat_result, trust: str) -> str | None:
    """Why `cache_trust=trust` does not trust a cache folder with this stat, or None when it does.

    Whoever can write the folder can put any entry there (or replace ours), so that is what decides."""
    if trust == "everyone":
        return None
    me, mode = os.geteuid(), stat.S_IMODE(st.st_mode)
    if trust == "owner":
        if st.st_uid not in (me, 0):
            return f"is owned by {_name(st.st_uid)}, not you"
        if mode & 0o022:
            return f"is writable by {'its group' if mode & 0o020 else 'everyone'} ({mode:04o})"
        return None
    if st.st_uid not in (me, 0) and not _in_group(st.st_uid, st.st_gid):
        return f"is owned by {_name(st.st_uid)}, who is not in its group {_group(st.st_gid)}"
    if mode & 0o002:
        return f"is writable by everyone ({mode:04o})"
    return None


def entry_distrust(st: os.stat_result, folder: os.stat_result, trust: str) -> str | None:
    """Why `cache_trust=trust` does not trust one file of an entry (its .pt or .json), or None when it does."""
    if trust == "everyone":
        return None
    me, mode = os.geteuid(), stat.S_IMODE(st.st_mode)
    if mode & 0o002:
        return f"is writable by everyone ({mode:04o})"
    if trust == "owner":
        if st.st_uid != me:
            return f"is owned by {_name(st.st_uid)}, not you"
        if mode & 0o020:
            return f"is writable by its group ({mode:04o})"
        return None
    if st.st_uid != me and not _in_group(st.st_uid, folder.st_gid):
        return f"is owned by {_name(st.st_uid)}, who is not in the cache folder's group {_group(folder.st_gid)}"
    if mode & 0o020 and st.st_gid != folder.st_gid:
        return f"is writable by the group {_group(st.st_gid)}, not the cache folder's"
    return None


def make_private_folder(folder: Path) -> None:
    """`folder` and any missing parents, each made 0700 (only its owner can list or write it)."""
    missing = []
    for path in (folder, *folder.parents):
        if path.is_dir():
            break
        missing.append(path)
    for path in reversed(missing):
        try:
            path.mkdir(mode=0o700)
        except FileExistsError:  # made by a job starting beside us: as it made it
            continue
        os.chmod(path, 0o700)  # exactly 0700, whatever the umask


def _read_entry_file(path: Path, folder: os.stat_result, trust: str) -> tuple[bytes | None, str | None]:
    """(the file's bytes, None), or (None, why it is not trusted): checked on the open file, then read from it."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)  # a planted FIFO must not block us
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            return None, "is not a regular file"
        why = entry_distrust(st, folder, trust)
        return (None, why) if why is not None else (f.read(), None)


def entry_problem(state: Any, like: Mapping[str, torch.Tensor] | None) -> str | None:
    """Why what an entry holds is not a dense phase's outcome (for a model with state_dict `like`), or None."""
    if not isinstance(state, dict) or not isinstance(state.get("model"), dict):
        return "it holds no model state"
    model = state["model"]
    if not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in model.items()):
        return "its model state is not a dict of tensors"
    history = state.get("history", [])
    if not isinstance(history, list) or not all(isinstance(record, dict) for record in history):
        return "its epoch history is not a list of records"
    if like is not None:
        if model.keys() != like.keys():
            return "its weights are not this model's (other parameter names)"
        for name, tensor in like.items():
            if model[name].shape != tensor.shape or model[name].dtype != tensor.dtype:
                return f"its {name} is {tuple(model[name].shape)} {model[name].dtype}, not {tuple(tensor.shape)} " \
                       f"{tensor.dtype}"
    return None


def _say(line: str) -> None:
    print(f"prune_lab: {line}", file=sys.stderr, flush=True)


@dataclass(frozen=True)
class CacheOutcome:
    key: str
    hit: bool  # True: read from the cache; False: trained here (and stored, unless storing failed)
    state: dict[str, Any]  # {"model": state_dict on CPU, "history": per-epoch records}


class DenseCache:
    def __init__(self, folder: Path, basis: Mapping[str, Any], trust: str = "owner"):
        self.folder, self.basis, self.trust = folder, dict(basis), trust
        self._untrusted: set[str] = set()  # keys whose entry is someone else's: ignored once, never overwritten
        self._unreadable: set[str] = set()  # keys whose entry could not be read (said once)
        self._seen_corrupt: dict[Path, str] = {}  # corrupt entries found without the lock, not named yet
        try:
            make_private_folder(folder)
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
        """The cache of a run, or None when `cache_dir` is null (disabled), the run's code cannot be known, the
        folder is full, or `cache_trust` (read from `config`) does not trust the folder."""
        trust = config.get("cache_trust", "owner")
        if trust not in TRUST:
            raise UserError(f"cache_trust={trust} is not a choice: choose one of {', '.join(TRUST)} (whose dense-cache "
                            "entries are used: yours only, also your group's, or anyone's)")
        if cache_dir is None or str(cache_dir).strip().lower() in ("", "null", "none", "false"):
            return None
        try:
            basis = dense_basis(config, device, threads)
        except LookupError as e:
            _say(f"the dense cache is off for this run: the code of {e.args[0]} cannot be located, so "
                 "a cached network could be stale")
            return None
        folder = Path(str(cache_dir)).expanduser()
        try:
            cache = cls(folder, basis, trust)
        except UserError as e:
            if not (isinstance(e.__cause__, OSError) and e.__cause__.errno in FULL):
                raise
            _say(f"the dense cache is off for this run: cache_dir={folder} is full ({e.__cause__.strerror}); "
                 "free space there, or set cache_dir to another folder")
            return None
        why = folder_distrust(os.stat(folder), trust)
        if why is not None:
            if "owned by" in why:
                fix = "set cache_dir to a folder of your own"
            else:
                fix = f"chmod {'go-w' if trust == 'owner' else 'o-w'} {folder}"
            wider = "group (a lab's shared cache) or everyone" if trust == "owner" else "everyone"
            fix += f", or set cache_trust={wider} (a shared cache trusts everyone who can write it)"
            _say(f"the dense cache is off for this run: cache_dir={folder} {why}, and cache_trust={trust} does not "
                 f"trust a folder others could plant networks in; {fix}")
            return None
        return cache

    def key(self, phase: str, epochs: int) -> str:
        identity = {**self.basis, "phase": phase, "epochs": epochs}
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:32]

    def _paths(self, key: str) -> tuple[Path, Path, Path]:
        return self.folder / f"{key}.pt", self.folder / f"{key}.json", self.folder / f"{key}.lock"

    def load(self, key: str, locked: bool = True, like: Mapping[str, torch.Tensor] | None = None
             ) -> dict[str, Any] | None:
        """A complete, trusted, intact entry, or None (missing, partial, untrusted or corrupt entries count as
        absent). `like`: the state_dict the entry's model must match (names, shapes, dtypes).

        Both files are checked against `cache_trust` before either is parsed: the manifest's checksum vouches
        only for what its writer meant, so an untrusted manifest makes the entry untrusted, whatever its .pt. A
        corrupt entry is set aside only with `locked` (no one else is writing it then); without, it counts
        as absent and the locked look that follows names it and sets it aside."""
        data_path, manifest_path, _ = self._paths(key)
        try:
            folder = os.stat(self.folder)
            raw, why = _read_entry_file(manifest_path, folder, self.trust)
            if why is None:
                data, why = _read_entry_file(data_path, folder, self.trust)
                where = data_path
            else:
                where = manifest_path
        except FileNotFoundError:
            return None  # no entry, or one being written (its manifest comes last)
        except OSError as e:  # said once, though build_once looks twice
            if key not in self._unreadable:
                self._unreadable.add(key)
                _say(f"cannot read the dense-cache entry {data_path} ({e}); this job trains its own (check "
                     "cache_dir's permissions, or set cache_dir=null)")
            return None
        if why is not None:
            if key not in self._untrusted:
                self._untrusted.add(key)
                _say(f"ignoring the dense-cache entry {where}: it {why}, and cache_trust={self.trust} does not "
                     "trust it; this job trains its own and leaves the entry in place (remove it, or set cache_trust "
                     "if you trust its writer)")
            return None
        try:
            manifest = json.loads(raw)
        except ValueError:
            return None  # not a finished manifest: absent, trained and written anew under the lock
        if not isinstance(manifest, dict):
            return None
        if hashlib.sha256(data).hexdigest() != manifest.get("sha256"):
            return self._corrupt(data_path, "its bytes fail the manifest's sha256", locked)
        try:
            state = load_plain(data)  # data only: nothing in it is executed
        except Exception as e:  # a pickle naming code, a torn zip, ...
            return self._corrupt(data_path, one_line(e, 120), locked)
        problem = entry_problem(state, like)
        if problem is not None:
            return self._corrupt(data_path, problem, locked)
        return state

    def _corrupt(self, data_path: Path, why: str, locked: bool) -> None:
        if not locked:  # named by the locked look that follows, or by build() when locking fails
            self._seen_corrupt[data_path] = why
            return None
        self._seen_corrupt.pop(data_path, None)
        try:
            moved = f"moved it to {set_aside(data_path).name}"
            set_aside(data_path.with_suffix(".json"))
        except OSError as e:
            moved = f"could not move it aside ({e.strerror})"
        _say(f"ignoring a corrupt dense-cache entry {data_path} ({why}); {moved}, and this job trains its own")
        return None

    def store(self, key: str, state: dict[str, Any], identity: Mapping[str, Any]) -> None:
        data_path, manifest_path, _ = self._paths(key)
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()
        atomic_write_bytes(data_path, data, ENTRY_MODE)
        atomic_write_json(manifest_path, {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
                                          "identity": dict(identity)}, ENTRY_MODE)

    def fetch_or_train(self, phase: str, epochs: int, train: Callable[[], dict[str, Any]],
                       like: Mapping[str, torch.Tensor] | None = None) -> CacheOutcome:
        """The phase's outcome from the cache, or `train()`'s, stored for the next job. One trains at a time
        (prune_lab.storage.build_once: the same lock-then-check-again mechanism that prepares datasets).

        A failure of the cache itself (reading, locking, storing: a full disk, a quota, no permission) is one
        line, and the outcome is `train()`'s; a failure inside `train()` is the run's own and propagates."""
        key = self.key(phase, epochs)
        trained: dict[str, Any] = {}

        def build() -> dict[str, Any]:
            trained["running"] = True
            why = self._seen_corrupt.pop(self._paths(key)[0], None)
            if why is not None:  # built without the lock (locking failed): the corrupt entry is replaced, not kept
                _say(f"ignoring a corrupt dense-cache entry {self._paths(key)[0]} ({why}); this job trains its own "
                     "and replaces it")
            state = train()
            trained.update(running=False, state=state)
            if key not in self._untrusted:  # never replace someone else's entry
                try:
                    self.store(key, state, {**self.basis, "phase": phase, "epochs": epochs})
                except OSError as e:
                    self._failed("store", key, e)
            return state

        try:
            state, built = build_once(
                self._paths(key)[2], lambda locked: self.load(key, locked, like), build,
                f"another job is training this dense network (cache key {key}); waiting for it")
        except OSError as e:
            if trained.get("running"):
                raise  # train() itself failed (the run folder's disk, say): not the cache's to swallow
            self._failed("use", key, e)
            return CacheOutcome(key, False, trained["state"] if "state" in trained else train())
        return CacheOutcome(key, not built, state)

    def _failed(self, what: str, key: str, error: OSError) -> None:
        full = " (it is full: free space there)" if error.errno in FULL else ""
        _say(f"cannot {what} the dense-cache entry {self._paths(key)[0]} ({error}){full}; the run goes on with its "
             "own training, stored in its run folder (set cache_dir to another folder, or cache_dir=null)")


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
