"""What a run leaves in its folder.

- `results.json`: written last and atomically, only if it passes the record contract (prune_lab.record),
  with the sha256 of the files below; it marks the run complete.
- `metrics.jsonl`: one line per epoch (train loss, validation accuracy) and per level.
- `masks.json`: the per-layer mask report of the final model.
- `model.pt`: the final weights and their masks.
- `error.json`: instead of results, when a run fails (the reason and, for crashes, the traceback).
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
import subprocess
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import prune_lab
from prune_lab.errors import Diverged
from prune_lab.record import RESULTS, SCHEMA_VERSION, artifacts, check_record, inspect
from prune_lab.storage import atomic_write_bytes, atomic_write_json

ERROR = "error.json"
METRICS = "metrics.jsonl"


class InvalidRecord(RuntimeError):
    """A finished run's record breaks the contract (prune_lab.record): a bug, never written as ok."""

    kind = "invalid_record"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(prune_lab.__file__).parent, capture_output=True, text=True,
            timeout=5,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def code_digest(config: Mapping[str, Any]) -> str:
    """16 hex digits naming the code a run's results depend on: prune_lab's own source and the code behind every
    `_target_` of its config (a user's module: its files; an installed package: its version), as the dense
    cache keys it (prune_lab.cache.target_code). A target whose code cannot be located counts by its name."""
    from prune_lab.cache import _targets, source_digest, target_code

    targets = {t: target_code(t) or f"unknown:{t}" for t in sorted(set(_targets(config)))}
    text = json.dumps({"prune_lab": source_digest(), "targets": targets}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def versions(config: Mapping[str, Any] | None = None) -> dict[str, str | None]:
    """What ran: Python, torch, prune_lab's version and git commit (None outside a clone), and the code digest."""
    out = {"python": platform.python_version(), "torch": torch.__version__, "prune_lab": prune_lab.__version__,
           "git_commit": git_commit()}
    if config is not None:
        out["code"] = code_digest(config)
    return out


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """The record of a complete run (it passes the contract and its artifacts verify), else None."""
    return inspect(run_dir)[0]


class MetricsLog:
    """Appends JSON lines as training goes (for watching a live run); rewritten whole at the end."""

    def __init__(self, path: Path):
        self.path = path

    def __call__(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")

    def finalize(self, records: list[dict[str, Any]]) -> None:
        atomic_write_bytes(self.path, "".join(json.dumps(r) + "\n" for r in records).encode())


def write_artifacts(run_dir: Path, model: torch.nn.Module, mask_state: dict[str, torch.Tensor],
                    layers: dict[str, dict[str, float]]) -> None:
    """model.pt (plain tensors only: read back with weights_only=True) and masks.json."""
    buffer = io.BytesIO()
    torch.save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "masks": {k: v.detach().cpu() for k, v in mask_state.items()}}, buffer)
    atomic_write_bytes(run_dir / "model.pt", buffer.getvalue())
    atomic_write_json(run_dir / "masks.json", layers)


def write_results(run_dir: Path, record: dict[str, Any]) -> Path:
    """results.json, written only for a record that passes the contract, with its artifacts' checksums."""
    record = {"schema_version": SCHEMA_VERSION, "status": "ok", **record, "artifacts": artifacts(run_dir)}
    problem = check_record(record)
    if problem is not None:
        raise (Diverged if "non-finite" in problem else InvalidRecord)(
            f"the run's record breaks the contract, so it is not written as complete: {problem}")
    atomic_write_json(run_dir / RESULTS, record)
    (run_dir / ERROR).unlink(missing_ok=True)
    return run_dir / RESULTS


def write_error(run_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_json(run_dir / ERROR, {"schema_version": SCHEMA_VERSION, "status": "failed", "at": now(), **record})
