"""What a run leaves in its folder.

- `results.json`: written last and atomically; its presence marks the run complete.
- `metrics.jsonl`: one line per epoch (train loss, validation accuracy) and per level.
- `masks.json`: the per-layer mask report of the final model.
- `model.pt`: the final weights and their masks.
- `error.json`: instead of results, when a run fails (the reason and, for crashes, the traceback).
"""

from __future__ import annotations

import json
import platform
import subprocess
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import prune_lab
from prune_lab.storage import atomic_torch_save, atomic_write_bytes, atomic_write_json

RESULTS = "results.json"
ERROR = "error.json"
METRICS = "metrics.jsonl"
SCHEMA_VERSION = 1


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


def versions() -> dict[str, str | None]:
    return {"python": platform.python_version(), "torch": torch.__version__, "prune_lab": prune_lab.__version__,
            "git_commit": git_commit()}


def read_results(run_dir: Path) -> dict[str, Any] | None:
    """The run's results if it completed, else None (a torn or foreign file counts as absent)."""
    try:
        data = json.loads((run_dir / RESULTS).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("status") == "ok" else None


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
    atomic_torch_save(run_dir / "model.pt", {"state_dict": model.state_dict(), "masks": mask_state})
    atomic_write_json(run_dir / "masks.json", layers)


def write_results(run_dir: Path, record: dict[str, Any]) -> Path:
    record = {"schema_version": SCHEMA_VERSION, "status": "ok", **record}
    atomic_write_json(run_dir / RESULTS, record)
    (run_dir / ERROR).unlink(missing_ok=True)
    return run_dir / RESULTS


def write_error(run_dir: Path, record: dict[str, Any]) -> None:
    atomic_write_json(run_dir / ERROR, {"schema_version": SCHEMA_VERSION, "status": "failed", "at": now(), **record})
