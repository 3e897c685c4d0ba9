"""Atomic files and the run's phase store (what makes an interrupted run resume where it stopped).

Every file is written to a temporary name in the same folder and renamed into place, so a reader (or
a rerun after `kill -9`) sees either the old complete file or the new complete one, never a torn one.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from prune_lab.errors import FolderTaken

T = TypeVar("T")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; a run folder's files are readable as the user's umask says (0644 under the usual
# 022), like `.hydra/`, so labmates on a shared filesystem can read results.
FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any, mode: int = FILE_MODE) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode(), mode)


def one_line(error: BaseException, most: int = 160) -> str:
    """An exception as one short line (torch's weights-only refusal, say, spans several lines)."""
    return f"{type(error).__name__}: {' '.join(str(error).split())[:most]}"


def load_plain(data: bytes) -> Any:
    """What prune_lab wrote with torch.save, read back as data only (`weights_only=True`): tensors, dicts, lists,
    numbers, strings. Nothing in the file is executed; a pickle that names any other class or function is refused
    (an UnpicklingError), so a tampered checkpoint or cache entry cannot run code."""
    return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)


def atomic_torch_save(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, FILE_MODE)
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def build_once(lock_path: Path, load: Callable[[bool], T | None], build: Callable[[], T],
               waiting: str) -> tuple[T, bool]:
    """Something made once across processes and nodes (a dense-cache entry, an unpacked dataset file).

    `load(locked)` returns the finished, verified product or None (missing, partial, or failing its check;
    with `locked` True it may also discard a bad one, since no one else is building it then). `build()`
    makes it, writing every file atomically (a temp name, then a rename) with its check last, and returns it.
    A process that finds no product takes an exclusive lock on `lock_path` (fcntl `flock` through the
    `filelock` package) and, if the product is still missing, builds it; the others wait for the lock
    (printing `waiting`) and then load what it built. The kernel drops the lock when its holder dies, so a
    killed builder leaves no stale lock: the next waiter builds instead. Where locking fails outright
    (ENOLCK on an NFS mount without locks, a read-only folder), it builds without the lock and says so:
    that may cost time, never correctness, because each builder renames whole, identical files into place.
    Returns (product, built_here).
    """
    from filelock import FileLock, Timeout

    found = load(False)
    if found is not None:
        return found, False
    lock = FileLock(str(lock_path))
    try:
        try:
            lock.acquire(timeout=0)
        except Timeout:
            print(f"prune_lab: {waiting}", file=sys.stderr, flush=True)
            lock.acquire()
    except OSError as e:
        if e.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):  # those fail the build too, with its own line
            print(f"prune_lab: cannot lock {lock_path} ({e}); going on without the lock", file=sys.stderr, flush=True)
        return build(), True
    try:
        found = load(True)  # built by the process we waited for
        if found is not None:
            return found, False
        return build(), True
    finally:
        lock.release()


def set_aside(path: Path) -> Path:
    """Rename a bad file out of the way (kept for a post-mortem, never read again): `<name>.corrupt-<time>`."""
    aside = path.with_name(f"{path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):  # another process set it aside first
        os.replace(path, aside)
    return aside


CHECKSUM = b"\nprune_lab sha256 "  # a checkpoint's last bytes: this, then the hex sha256 of what precedes it


class PhaseStore:
    """`checkpoints/` of one run: `<phase>.done.pt` for finished phases, `<phase>.partial.pt` for one under way.

    The folder is tied to one config hash (`config_hash`: resuming it under another config is refused) and to
    the code that wrote it (`code`, prune_lab.results.code_digest): after a code change its checkpoints are
    moved aside, with one line, and every phase trains again with the new code, so a run never mixes the two.
    """

    @staticmethod
    def check_owner(folder: Path, config_hash: str) -> str | None:
        """The config hash `folder` is tied to (None: no checkpoints yet); FolderTaken if it is another's."""
        marker = folder / "config_hash"
        recorded = marker.read_text(errors="replace").strip() if marker.exists() else None
        if recorded is not None and recorded != config_hash:
            raise FolderTaken(
                f"{folder} holds checkpoints of another configuration (hash {recorded!r}, this run "
                f"{config_hash}); run into a new folder (hydra.run.dir=... or hydra.sweep.dir=...) or delete it"
            )
        return recorded

    def __init__(self, folder: Path, config_hash: str, code: str | None = None):
        self.folder = folder
        marker, code_marker = folder / "config_hash", folder / "code"
        recorded = self.check_owner(folder, config_hash)
        written_by = code_marker.read_text(errors="replace").strip() if code_marker.exists() else None
        if code is not None and recorded is not None and written_by != code:
            aside = folder.with_name(f"{folder.name}-old-code-{written_by or 'unknown'}-{os.getpid()}")
            os.replace(folder, aside)
            print(f"prune_lab: the code changed since {folder} was written (code {written_by or 'unrecorded'}, "
                  f"now {code}); its phases train again with this code (old checkpoints kept in {aside.name})",
                  file=sys.stderr, flush=True)
        folder.mkdir(parents=True, exist_ok=True)
        if not marker.exists():  # the code marker first: where config_hash is, the code is recorded too
            if code is not None:
                atomic_write_bytes(code_marker, code.encode())
            atomic_write_bytes(marker, config_hash.encode())

    def _path(self, name: str, kind: str) -> Path:
        return self.folder / f"{name}.{kind}.pt"

    def load(self, name: str, kind: str) -> dict[str, Any] | None:
        path = self._path(name, kind)
        if not path.exists():
            return None
        try:
            raw = path.read_bytes()
            data, digest = raw, None
            if raw[-(len(CHECKSUM) + 64):].startswith(CHECKSUM):  # written with its sha256 (older ones without)
                data, digest = raw[: -(len(CHECKSUM) + 64)], raw[-64:].decode()
                if hashlib.sha256(data).hexdigest() != digest:
                    raise ValueError("its bytes fail their sha256 check")
            state = load_plain(data)  # verified, then read as data only: never executed
            if not isinstance(state, dict):
                raise ValueError(f"holds a {type(state).__name__}, not a checkpoint")
            return state
        except Exception as e:  # torn by a disk fault, overwritten, truncated, tampered: never fatal, never used
            aside = set_aside(path)
            print(f"prune_lab: checkpoint {path} does not load ({one_line(e, 120)}); moved it to "
                  f"{aside.name} and this phase restarts from the last good point", file=sys.stderr, flush=True)
            return None

    def save(self, name: str, kind: str, state: dict[str, Any]) -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        data = buffer.getvalue()  # + its sha256, so a flipped byte is caught, not trained on
        atomic_write_bytes(self._path(name, kind), data + CHECKSUM + hashlib.sha256(data).hexdigest().encode())

    def drop(self, name: str, kind: str) -> None:
        self._path(name, kind).unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove every checkpoint once the run's results are written."""
        for path in self.folder.glob("*.pt"):
            path.unlink(missing_ok=True)
        (self.folder / "config_hash").unlink(missing_ok=True)
        (self.folder / "code").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()


# Which `.*.tmp` files (left by atomic writes killed part-way: `kill -9`, preemption) are stale. Their names
# carry no writer pid (mkstemp's random part), and several processes may write into one run folder at once
# (two launches of one command, a sweep relaunched while jobs still run, on other nodes too), so a temp file
# is removed only when no live writer can own it: untouched for STALE_AFTER_S (every atomic write here
# finishes in seconds: a longer-lived temp file's writer is dead, on whatever node it ran), or last written
# before this process started on a local filesystem; and never while a process on this machine holds it open
# (/proc/*/fd). A writer keeps its temp file open while writing and renames it within microseconds of closing
# it, so on a local disk "older than us and open nowhere" is dead; a writer on another node is invisible to
# /proc, so on NFS, Lustre, GPFS... only the age rule applies.
STALE_AFTER_S = 600
REMOTE_FS = ("nfs", "nfs4", "lustre", "gpfs", "beegfs", "cifs", "smb3", "ceph", "fuse", "panfs", "afs", "9p")


def _process_start() -> float:
    """This process's start (seconds since the epoch), from /proc; its import time where /proc is absent.

    /proc counts in clock ticks (10 ms) since boot, rounded down: rounded up here, so a file written just
    before this process was forked (a relaunch right after a kill) counts as older than it."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        age = time.clock_gettime(time.CLOCK_BOOTTIME) - (ticks + 1) / os.sysconf("SC_CLK_TCK")
        return time.time() - age
    except (OSError, ValueError, IndexError, AttributeError):
        return _IMPORTED


_IMPORTED = time.time()


def _open_here() -> set[str] | None:
    """Every file some process on this machine holds open (None when /proc cannot tell)."""
    held: set[str] = set()
    try:
        pids = [p for p in os.listdir("/proc") if p.isdigit()]
    except OSError:
        return None
    for pid in pids:
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    held.add(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return held


def _remote(path: Path, mounts_file: str = "/proc/mounts") -> bool:
    """Whether `path` is on a network or cluster filesystem (its mount in /proc/mounts), or cannot tell."""
    try:
        mounts = [line.split()[1:3] for line in Path(mounts_file).read_text().splitlines()]
    except OSError:
        return True
    target = str(path.resolve())
    best = max((m for m in mounts if target == m[0] or target.startswith(m[0].rstrip("/") + "/")),
               key=lambda m: len(m[0]), default=None)
    return best is None or best[1].split(".")[0] in REMOTE_FS


def stale_temp_files(*folders: Path) -> list[Path]:
    """The `.*.tmp` files in `folders` that no live writer can own (see STALE_AFTER_S above)."""
    found = [p for folder in folders for p in folder.glob(".*.tmp") if p.is_file()]
    if not found:
        return []
    started, now = _process_start(), time.time()
    held = _open_here()
    local = held is not None and not _remote(found[0].parent)
    stale = []
    for path in found:
        with contextlib.suppress(OSError):
            if held is not None and str(path.resolve()) in held:
                continue  # a writer on this machine has it open, however old
            mtime = path.stat().st_mtime
            if now - mtime > STALE_AFTER_S or (local and mtime < started):
                stale.append(path)
    return stale


def remove_stale_temp_files(run_dir: Path) -> list[Path]:
    """Remove the stale temp files of `run_dir` and its checkpoints/ (what kills during atomic writes left,
    which would otherwise pile up across kills), at the start of a run into that folder."""
    removed = stale_temp_files(run_dir, run_dir / "checkpoints")
    for path in removed:
        path.unlink(missing_ok=True)
    return removed


def clean_leftovers(run_dir: Path, keep_checkpoints: bool = False) -> None:
    """What a complete run no longer needs: stale temp files of a kill during its last writes and, unless
    kept, its checkpoints (a kill between writing results.json and clearing them leaves them behind)."""
    removed = remove_stale_temp_files(run_dir)
    checkpoints = run_dir / "checkpoints"
    if not keep_checkpoints and checkpoints.is_dir():
        shutil.rmtree(checkpoints, ignore_errors=True)
        removed.append(checkpoints)
    if removed:
        print(f"prune_lab: removed leftovers of an interrupted finish: {', '.join(p.name for p in removed)}")
