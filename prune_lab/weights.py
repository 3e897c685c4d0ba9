"""init=checkpoint: start from your own trained weights (a state_dict file) instead of an init scheme.

    torch.save(model.state_dict(), "my_net.pt")      # your network, trained however you like
    python -m prune_lab model=... init=checkpoint init.path=my_net.pt train.epochs=0 pruner=magnitude

With train.epochs=0 the "dense" level is your network as saved (its accuracy before pruning); the pruner then
prunes and fine-tunes it. The file's sha256 is part of the resolved config (`init.sha256`, through the
`prune_lab_sha256` resolver, registered by prune_lab.config), so a new file at the same path is a new
configuration: a new config hash and a new dense-cache key, never a stale result.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from prune_lab.errors import UserError


def file_sha256(path: object) -> str | None:
    """16 hex digits of a file's sha256; None for no path or a missing file (FromCheckpoint then says why)."""
    if path is None or not Path(str(path)).expanduser().is_file():
        return None
    h = hashlib.sha256()
    with Path(str(path)).expanduser().open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


@dataclass
class FromCheckpoint:
    """Load `path` (a state_dict, or a dict holding one under "state_dict" such as prune_lab's model.pt)."""

    path: str | None = None
    sha256: str | None = None  # the file's content as composed; the load checks the file has not changed since
    strict: bool = True  # every key of the model must be in the file and nothing else
    _loaded: bool = field(default=False, repr=False)

    def __call__(self, model: nn.Module, generator: torch.Generator) -> None:
        if self._loaded:  # a pruner asked for a fresh draw (reinit=random): a file has only one
            raise UserError("init=checkpoint loads one fixed set of weights and has no fresh random draw; "
                            "reinit=random needs an init scheme (init=kaiming_normal, ...)")
        if not self.path:
            raise UserError("init=checkpoint needs the weights file: init.path=FILE (a torch.save'd state_dict)")
        path = Path(self.path).expanduser()
        if not path.is_file():
            raise UserError(f"init.path={self.path}: no such file")
        if self.sha256 is not None and file_sha256(path) != self.sha256:
            raise UserError(f"init.path={self.path} changed while the run started (sha256 {self.sha256} when "
                            "composed); run again")
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as e:
            raise UserError(f"init.path={self.path} is not a torch.save'd state_dict ({type(e).__name__})") from None
        state = saved.get("state_dict", saved) if isinstance(saved, dict) else None
        if not isinstance(state, dict):
            raise UserError(f"init.path={self.path} holds a {type(saved).__name__}, not a state_dict")
        own = model.state_dict()
        missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if self.strict and (missing or unexpected):
            raise UserError(f"init.path={self.path} does not match the model: missing {missing[:3]}, unexpected "
                            f"{unexpected[:3]} (of {len(missing)}, {len(unexpected)}); check model=... or set "
                            "init.strict=false to load the keys that match")
        wrong = [k for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
        if wrong:
            k = wrong[0]
            raise UserError(f"init.path={self.path}: {k} has shape {tuple(state[k].shape)} in the file but "
                            f"{tuple(own[k].shape)} in the model (e.g. another class count); check model=... and "
                            "dataset=...")
        model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        self._loaded = True
