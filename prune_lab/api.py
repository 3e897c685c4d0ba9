"""prune_lab from Python (a notebook, a script): `run` an experiment from overrides, `load_run` a finished one.

    from prune_lab import run, load_run
    result = run("pruner=random", "sparsity=0.8", run_dir="runs/random80")
    result.levels[-1]["test_acc"], result.masks, result.model()

`run` composes conf/ with Hydra's compose API and the same overrides the command line takes, then runs the
very recipe `python -m prune_lab` runs (same config hash: a folder finished by one is complete for the other).
Progress lines go to `<run_dir>/run.log`, and to stdout when nothing else has configured logging.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from prune_lab.cache import _targets
from prune_lab.errors import UserError
from prune_lab.record import inspect
from prune_lab.results import METRICS

# The code `Run.model()` may import for a record it reads: prune_lab's models and datasets, torchvision's models.
# A results.json is data someone may hand you; its `_target_` strings are never imported beyond these unless the
# caller names more (`run.model(allow=["my_lab.models."])`).
TRUSTED_TARGETS = ("prune_lab.models.", "prune_lab.data.", "torchvision.models.")


def _check_targets(node: Any, allow: tuple[str, ...], what: str) -> None:
    for target in _targets(node):
        if not target.startswith((*TRUSTED_TARGETS, *allow)):
            prefix = target.rsplit(".", 1)[0] + "."
            raise UserError(f"the run's {what} config names {target!r}, code load_run does not import from a "
                            f"results.json; if you trust this run folder, call .model(allow=[{prefix!r}])")

if TYPE_CHECKING:
    from prune_lab.config import RunSpec
    from prune_lab.job import Job


@dataclass(frozen=True)
class Run:
    """A finished run's folder, read: results.json, metrics.jsonl and model.pt."""

    path: Path
    results: dict[str, Any]  # results.json: choices, config, levels, timings, versions
    allow: tuple[str, ...] = ()  # code `model()` may import beyond TRUSTED_TARGETS (what this process ran itself)

    @property
    def levels(self) -> list[dict[str, Any]]:
        """One dict per evaluated level (dense first): sparsity, test_acc, val_acc, layers, ..."""
        return self.results["levels"]

    @property
    def config(self) -> dict[str, Any]:
        """The resolved config the run ran (plain dicts and lists)."""
        return self.results["config"]

    def metrics(self) -> list[dict[str, Any]]:
        """metrics.jsonl: one record per epoch ({phase, epoch, epochs, train_loss, val_acc...}), then per level."""
        import json

        return [json.loads(line) for line in (self.path / METRICS).read_text().splitlines() if line.strip()]

    def _saved(self) -> dict[str, Any]:
        return torch.load(self.path / "model.pt", map_location="cpu", weights_only=True)

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        """Parameter name -> bool tensor of the final mask (True: the weight survives)."""
        return self._saved()["masks"]

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The final weights (zero where the masks say)."""
        return self._saved()["state_dict"]

    def model(self, allow: list[str] | tuple[str, ...] = ()) -> nn.Module:
        """The final network, rebuilt from the run's model config and loaded with its weights (on the CPU, in
        eval mode). The dataset is loaded for its shapes (and a graph's adjacency), as the run did.

        Only code under TRUSTED_TARGETS (or the prefixes in `allow`, for your own models) is imported."""
        from hydra.utils import instantiate

        allow = (*self.allow, *allow)
        _check_targets(self.config["model"], allow, "model")
        net = instantiate(self.config["model"], _convert_="all")(self._data(allow).info)
        net.load_state_dict(self.state_dict())
        return net.eval()

    def sample_input(self, allow: list[str] | tuple[str, ...] = ()) -> torch.Tensor:
        """One training input, [1, *input_shape] (what the payoff's FLOPs and timings feed the network)."""
        return self._data((*self.allow, *allow)).train.x[:1]

    def _data(self, allow: tuple[str, ...] = ()) -> Any:
        from hydra.utils import instantiate

        from prune_lab.cache import load_once

        _check_targets(self.config["dataset"], allow, "dataset")
        return load_once(instantiate(self.config["dataset"], _convert_="all"))


def load_run(run_dir: str | Path, allow: list[str] | tuple[str, ...] = ()) -> Run:
    """A finished run's folder; one that is missing, did not finish, or whose results.json or artifacts break the
    record contract (prune_lab.record: the same check the rerun's skip and the analysis make) is refused.
    `allow`: module prefixes of your own code its `model()` may import (see TRUSTED_TARGETS)."""
    path = Path(run_dir).expanduser().resolve()
    results, problem = inspect(path)
    if results is None:
        if problem is not None:
            raise UserError(f"{path} holds no valid run: {problem}; rerun it into the same folder to redo it")
        hint = " (error.json says why it failed)" if (path / "error.json").exists() else ""
        raise UserError(f"{path} holds no finished run: no results.json{hint}")
    return Run(path, results, tuple(allow))


def compose(*overrides: str, config_dir: str | Path | None = None) -> tuple[Any, dict[str, str]]:
    """(the composed DictConfig without its `hydra` node, the option chosen in each group) for `overrides`.

    `config_dir`: a folder of your own config groups (model/my_net.yaml, ...), searched before prune_lab's
    conf/, as `--config-dir` does on the command line."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from omegaconf import open_dict

    from prune_lab.config import CONF_DIR

    extra = []
    if config_dir is not None:
        extra = [f"hydra.searchpath=[file://{Path(config_dir).expanduser().resolve()}]"]
    from prune_lab.errors import UserError
    from prune_lab.guard import describe_hydra_error

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3", job_name="prune_lab"):
        try:
            cfg = hydra_compose("config", overrides=[*overrides, *extra], return_hydra_config=True)
        except Exception as e:  # a typo or a bad override: the command line's one line, as a UserError
            line = describe_hydra_error(e)
            if line is None:
                raise
            raise UserError(line) from e
    choices = {k: v for k, v in cfg.hydra.runtime.choices.items() if not k.startswith("hydra/")}
    with open_dict(cfg):
        del cfg["hydra"]  # the command line's task function never sees it either: same config, same hash
    return cfg, choices


def prepare(*overrides: str, run_dir: str | Path, config_dir: str | Path | None = None,
            job_type: type[Job] | None = None) -> tuple[RunSpec, Job]:
    """(the run's spec, the job its pruner drives) for `overrides`, built exactly as `python -m prune_lab` and
    `run` build them (prune_lab.__main__.build_job), with nothing trained yet: `spec.pruner.run(job)` is the run.

    The seam for tests and for notebooks that step through a method: a `job_type` subclass of Job may record
    what the pruner does. Results files are not written; `run` does that."""
    from prune_lab.__main__ import build_job
    from prune_lab.config import compose_run
    from prune_lab.job import Job

    spec = compose_run(*compose(*overrides, config_dir=config_dir))
    folder = Path(run_dir).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return spec, build_job(spec, folder, job_type or Job)


@contextlib.contextmanager
def _progress_to(log_file: Path) -> Iterator[None]:
    """Progress lines into the run folder's run.log, and to stdout unless the caller configured logging."""
    logger = logging.getLogger("prune_lab")
    handlers: list[logging.Handler] = [logging.FileHandler(log_file)]
    if not logging.getLogger().handlers and not logger.handlers:
        handlers.append(logging.StreamHandler(sys.stdout))
    level = logger.level
    for handler in handlers:
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.INFO:
        logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        for handler in handlers:
            logger.removeHandler(handler)
            handler.close()
        logger.setLevel(level)


def run(*overrides: str, run_dir: str | Path, config_dir: str | Path | None = None) -> Run:
    """Run one experiment, e.g. run("pruner=random", "sparsity=0.8", run_dir="runs/r80"), and load it.

    Overrides are the command line's (no -m: one run; loop in Python to sweep). A folder already holding
    this run's results is not run again; one holding another configuration's results is refused."""
    from prune_lab.__main__ import run as run_spec
    from prune_lab.config import compose_run

    cfg, choices = compose(*overrides, config_dir=config_dir)
    spec = compose_run(cfg, choices, overrides)
    path = Path(run_dir).expanduser().resolve()
    path.mkdir(parents=True, exist_ok=True)
    with _progress_to(path / "run.log"):
        run_spec(spec, path, list(overrides))
    return load_run(path, allow=tuple(_targets(spec.config)))  # the code this process just ran is the caller's
