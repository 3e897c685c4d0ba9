"""prune_lab: neural-network pruning experiments as Hydra sweeps.

From Python: `from prune_lab import run, load_run` (prune_lab.api). They are imported on first use, so
`import prune_lab` (and the command line's start-up) stays light.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Run", "load_run", "run"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from prune_lab import api

        return getattr(api, name)
    raise AttributeError(f"module 'prune_lab' has no attribute {name!r}")
