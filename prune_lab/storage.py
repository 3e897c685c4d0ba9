"""Atomic files and the run's phase store (what makes an interrupted run resume where it stopped).

Every file is written to a temporary name in the same folder and renamed into place, so a reader (or
a rerun after `kill -9`) sees either the old complete file or the new complete one, never a torn one.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from prune_lab.errors import UserError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# mkstemp makes 0600 files; a run folder's files are readable as the user's umask says (0644 under the usual
# 022), like `.hydra/`, so labmates on a shared filesystem can read results.
FILE_MODE = 0o666 & ~_umask()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode())


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


class PhaseStore:
    """`checkpoints/` of one run: `<phase>.done.pt` for finished phases, `<phase>.partial.pt` for one under way.

    The folder is tied to one config hash; resuming it under another config is refused.
    """

    def __init__(self, folder: Path, config_hash: str):
        self.folder = folder
        marker = folder / "config_hash"
        if marker.exists() and marker.read_text().strip() != config_hash:
            raise UserError(
                f"{folder} holds checkpoints of another configuration (hash {marker.read_text().strip()}, this run "
                f"{config_hash}); run into a new folder (hydra.run.dir=... or hydra.sweep.dir=...) or delete it"
            )
        folder.mkdir(parents=True, exist_ok=True)
        if not marker.exists():
            atomic_write_bytes(marker, config_hash.encode())

    def _path(self, name: str, kind: str) -> Path:
        return self.folder / f"{name}.{kind}.pt"

    def load(self, name: str, kind: str) -> dict[str, Any] | None:
        path = self._path(name, kind)
        if not path.exists():
            return None
        return torch.load(path, map_location="cpu", weights_only=False)

    def save(self, name: str, kind: str, state: dict[str, Any]) -> None:
        atomic_torch_save(self._path(name, kind), state)

    def drop(self, name: str, kind: str) -> None:
        self._path(name, kind).unlink(missing_ok=True)

    def clear(self) -> None:
        """Remove every checkpoint once the run's results are written."""
        for path in self.folder.glob("*.pt"):
            path.unlink(missing_ok=True)
        (self.folder / "config_hash").unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            self.folder.rmdir()
