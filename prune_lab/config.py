"""From Hydra's composed config to typed objects: the only module that touches a DictConfig.

Everything a run needs is instantiated and validated here, before any data is loaded or any step is
trained, so a bad value stops the run with one clear message and no results.
"""

from __future__ import annotations

import difflib
import hashlib
import inspect
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from prune_lab.bookkeeping import experiment_config, override_dirname_excludes
from prune_lab.data.splits import DataInfo, Splits
from prune_lab.errors import UserError
from prune_lab.init import Initializer
from prune_lab.masks import PrunableSelection
from prune_lab.options import options_help
from prune_lab.payoff import check_measure
from prune_lab.pruners.base import Pruner, check_sparsity
from prune_lab.threads import resolve_threads
from prune_lab.training import TrainSettings
from prune_lab.validate import check_range, check_value
from prune_lab.weights import file_sha256

GROUPS = ("dataset", "model", "init", "pruner", "train")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")  # the app's config groups (hydra.main, compose)


def register_resolvers() -> None:
    """The resolvers conf/ uses; registered when this module is imported (before Hydra composes)."""
    # A sweep job's folder is named after its overrides ("init=xavier_normal,seed=1"), not its position in
    # the sweep, so relaunching a sweep with more seeds finds every finished run in the same place.
    OmegaConf.register_new_resolver("prune_lab_subdir", lambda name: (name or "default").replace("/", "_"),
                                    replace=True)
    # hydra.job.config.override_dirname.exclude_keys: bookkeeping never names a folder (prune_lab.bookkeeping).
    # train.finetune_epochs: ${prune_lab_half:${train.epochs}}: fine-tuning follows the dense budget.
    OmegaConf.register_new_resolver("prune_lab_half", lambda epochs: _half(epochs), replace=True)
    OmegaConf.register_new_resolver("prune_lab_bookkeeping", lambda *extra: override_dirname_excludes(*extra),
                                    replace=True)
    # init.sha256: ${prune_lab_sha256:${init.path}}: a weights file's content is part of the config (init=checkpoint).
    OmegaConf.register_new_resolver("prune_lab_sha256", file_sha256, replace=True)
    # --help (conf/config.yaml's help template): every option with the first sentence of its YAML's comment,
    # the user's --config-dir options among them (${prune_lab_options:${hydra:runtime.config_sources}}).
    OmegaConf.register_new_resolver("prune_lab_options", lambda sources=None: options_help(CONF_DIR, sources),
                                    replace=True)


def _half(epochs: Any) -> Any:
    """Half of a whole number of epochs (rounded up: 1 of 1); anything else is passed on for TrainSettings to
    refuse with its own message."""
    if isinstance(epochs, int) and not isinstance(epochs, bool):
        return (epochs + 1) // 2
    return epochs


register_resolvers()


class Dataset(Protocol):
    def load(self) -> Splits: ...


ModelFactory = Callable[[DataInfo], nn.Module]


@dataclass(frozen=True)
class RunSpec:
    seed: int
    device: str
    threads: int | str  # a count, or "auto" (prune_lab.threads)
    dataset: Dataset
    model: ModelFactory
    init: Initializer
    pruner: Pruner  # its `target` is the run's target sparsity: the only one recorded
    train: TrainSettings
    prunable: PrunableSelection
    keep_checkpoints: bool
    choices: Mapping[str, str]  # option chosen in each config group, e.g. {"init": "xavier_normal"}
    config: Mapping[str, Any]  # the resolved config as plain data (recorded in results.json)
    config_hash: str
    cache_dir: str | None = None  # folder of the dense-training cache (prune_lab.cache); None: off
    keep_tickets: bool = False  # every level's weights and mask in <run>/tickets/
    skip_absent_data: bool = False  # a dataset whose files are absent skips the run instead of failing it
    measure: str = "cheap"  # prune_lab.payoff.MEASURES


def config_hash(config: Mapping[str, Any]) -> str:
    """sha256 of the resolved config minus bookkeeping (prune_lab.bookkeeping), 16 hex digits."""
    return hashlib.sha256(json.dumps(experiment_config(config), sort_keys=True).encode()).hexdigest()[:16]


def recorded_choice(group: str, choices: Mapping[str, str]) -> str:
    """The option's name, with any option nested in it: "sparsity_aware(xavier_normal)" for
    init=sparsity_aware init@init.base=xavier_normal, so analyses tell the bases apart."""
    nested = [str(v) for k, v in choices.items() if k.startswith(f"{group}@{group}.") and v is not None]
    name = str(choices.get(group, "?"))
    return f"{name}({','.join(nested)})" if nested else name


# What torch's and numpy's seeding take without two seeds meaning the same stream: a signed 64-bit integer.
SEED_RANGE = (-(2**63), 2**63 - 1)


def check_seed(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"seed={value!r} must be an integer, e.g. seed=0 or seed=0,1,2 with -m")
    check_range(value, "seed", *SEED_RANGE, example="seed=0")
    return value


def _instantiate(node: DictConfig, group: str) -> Any:
    try:
        return instantiate(node, _convert_="all")
    except InstantiationException as e:
        cause: BaseException | None = e
        while cause is not None and not isinstance(cause, UserError):
            cause = cause.__cause__
        if isinstance(cause, UserError):
            raise cause from None
        unknown = _unknown_setting(e, group)
        if unknown is not None:
            raise UserError(unknown) from None
        reason = e.__cause__ or e
        raise UserError(f"{group}: cannot build {node.get('_target_')}: {reason}") from e


def _unknown_setting(error: InstantiationException, group: str) -> str | None:
    """`+train.lrr=1` reaches the class as an unknown keyword: say which key, what the class takes, and the
    nearest name, instead of Python's TypeError. None for any other failure."""
    cause = error.__cause__
    found = re.search(r"unexpected keyword argument '(\w+)'", str(cause)) if isinstance(cause, TypeError) else None
    if found is None:
        return None
    key = found.group(1)
    where = re.search(r"full_key: (\S+)", str(error))
    node = where.group(1) if where else group
    target = re.search(r"Error in call to target '([^']+)'", str(error))
    try:
        from hydra._internal.utils import _locate  # Hydra's own resolver of _target_ strings

        obj: Any = _locate(target.group(1)) if target else None
        params = [n for n, p in inspect.signature(obj).parameters.items()
                  if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)] if obj is not None else []
    except (ImportError, ValueError, TypeError, AttributeError):
        obj, params = None, []
    line = f"{node}.{key} is not a setting of {target.group(1) if target else node}"
    if obj is not None:
        line += f" (its settings: {', '.join(params)})" if params else " (it takes no settings)"
    near = difflib.get_close_matches(key, params, n=1)
    return line + (f"; did you mean {node}.{near[0]}?" if near else "; drop the override")


def check_added_keys(overrides: list[str], cfg: DictConfig, groups: Mapping[str, Any]) -> None:
    """`+foo=1` adds a top-level key that nothing reads: it would only change the config hash (a new folder
    and curve for the same experiment). Refused, naming the top-level settings there are. `groups`: Hydra's
    choices, whose names `+group=option` adds legitimately (`+experiment=...`)."""
    for item in overrides:
        key, sep, _ = item.partition("=")
        name = key[1:]  # `+name` only: Hydra refuses it for a key that exists (`++name` sets or adds)
        if sep and key.startswith("+") and not name.startswith("+") and not set(name) & set("./@") \
                and name not in groups:
            known = sorted(k for k in cfg if k != name and k != "hydra")
            near = difflib.get_close_matches(name, known, n=1)
            hint = f"Did you mean {near[0]}={item.partition('=')[2]}? " if near else ""
            raise UserError(f"{item} adds a top-level setting that prune_lab does not read (it would only change "
                            f"the config hash). {hint}The top-level settings are: {', '.join(known)}")


def check_one_target(cfg: DictConfig) -> None:
    """`sparsity` is the run's one target: a pruner setting its own `pruner.sparsity` to something else would
    prune to one number while the sweep is labelled by the other, so the two must agree."""
    top = check_sparsity(cfg.get("sparsity"))
    pruner = cfg.get("pruner")
    own = pruner.get("sparsity") if isinstance(pruner, DictConfig) else None
    if own is not None and own != top:
        raise UserError(f"pruner.sparsity={own} disagrees with sparsity={top}: the run has one target; set "
                        f"sparsity={own} (top level) and leave pruner.sparsity at its default ${{sparsity}}")


def compose_run(cfg: DictConfig, choices: Mapping[str, str], overrides: Sequence[str] = ()) -> RunSpec:
    """The run `cfg` describes, checked; `overrides`: the command line's, for the keys it adds."""
    check_added_keys(list(overrides), cfg, choices)
    seed = check_seed(cfg.get("seed"))
    check_one_target(cfg)
    device = str(cfg.get("device", "auto"))
    threads = cfg.get("threads", "auto")
    resolve_threads(threads)  # validated now, applied when the run starts
    if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise UserError(f"device={device!r} must be auto, cpu, cuda or cuda:N")
    config = OmegaConf.to_container(cfg, resolve=True)
    assert isinstance(config, dict)
    objects = {group: _instantiate(cfg[group], group) for group in GROUPS}
    prunable = PrunableSelection(**config.get("prunable", {}))
    return RunSpec(
        seed=seed,
        device=device,
        threads=threads,
        prunable=prunable,
        keep_checkpoints=check_value(cfg.get("keep_checkpoints", False), (bool,), "keep_checkpoints"),
        choices={g: recorded_choice(g, choices) for g in (*GROUPS, "experiment") if choices.get(g) is not None},
        config=config,
        config_hash=config_hash(config),
        cache_dir=config.get("cache_dir"),
        keep_tickets=check_value(cfg.get("keep_tickets", False), (bool,), "keep_tickets"),
        measure=check_measure(cfg.get("measure", "cheap")),
        skip_absent_data=check_value(cfg.get("skip_absent_data", False), (bool,), "skip_absent_data"),
        **objects,
    )
