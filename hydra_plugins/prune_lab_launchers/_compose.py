"""Composing a sweep's job configs fast: jobs that differ from an earlier one only in plain values reuse it.

Hydra composes every job of a sweep from scratch (`load_sweep_config`: the defaults tree, every YAML file read
and merged), 0.2 s a job on a quiet 2-core machine and most of a warm worker's cost per run. In a sweep most
jobs differ only in values (seed=3, sparsity=0.9, train.lr=0.01); their configs are the same composition with
other values set. `SweepComposer` composes the first job of each kind (the same config-group choices and the
same value keys) with Hydra, then makes the others from a copy of it: Hydra's own override application
(`_apply_overrides_to_config`), `hydra.overrides.task` and `hydra.job.override_dirname` as Hydra sets them.

The first copy of each kind is checked against Hydra's own composition (the whole config, as YAML); on any
difference that kind is composed by Hydra from then on. Anything else (a group choice that differs, `+key`,
`~key`, `hydra.*`, a value that interpolates) is always composed by Hydra.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from typing import Any

from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import OverrideType, ValueType
from omegaconf import OmegaConf

from hydra_plugins.prune_lab_launchers import _hydra

log = logging.getLogger(__name__)


class SweepComposer:
    def __init__(self, loader: Any, master: Any):
        self.loader, self.master = loader, master
        self.parser = OverridesParser.create()
        self.templates: dict[tuple[Any, ...], list[Any] | None] = {}  # kind -> [config, checked] or None: Hydra's
        self.fast = self.full = 0

    def _is_group(self, key: str) -> bool:
        repository = getattr(self.loader, "repository", None)
        if repository is None:
            return True
        return bool(repository.group_exists(key.replace(".", "/")))

    def _plain(self, override: Any) -> bool:
        if (override.type != OverrideType.CHANGE or override.package is not None or override.is_hydra_override()
                or override.value_type != ValueType.ELEMENT or self._is_group(override.key_or_group)):
            return False
        value = override.value()
        return not (isinstance(value, str) and "${" in value) and not isinstance(value, (list, dict))

    def _kind(self, overrides: Sequence[str]) -> tuple[Any, ...] | None:
        try:
            parsed = self.parser.parse_overrides(list(overrides))
            return (tuple(o.input_line for o in parsed if not self._plain(o)),
                    tuple(o.key_or_group for o in parsed if self._plain(o)))
        except Exception:
            return None

    def prepare(self, jobs: Sequence[Sequence[str]]) -> None:
        """Compose (and check) the first kind of job before forking workers: they inherit it, and compose fast
        from their first job on instead of each composing and checking it with Hydra."""
        if not jobs:
            return
        kind = self._kind(jobs[0])
        same = [job for job in jobs if self._kind(job) == kind][:2]
        for job in same:
            self.compose(job)

    def compose(self, overrides: Sequence[str]) -> Any:
        try:
            parsed = self.parser.parse_overrides(list(overrides))
            values = [o for o in parsed if self._plain(o)]
            kind = (tuple(o.input_line for o in parsed if not self._plain(o)), tuple(o.key_or_group for o in values))
        except Exception:  # anything unusual: Hydra decides
            return self._hydra(overrides)
        if kind not in self.templates:
            cfg = self._hydra(overrides)
            self.templates[kind] = [copy.deepcopy(cfg), False]
            return cfg
        entry = self.templates[kind]
        if entry is None:
            return self._hydra(overrides)
        cfg = copy.deepcopy(entry[0])
        _hydra.apply_overrides(values, cfg)
        task = [o for o in parsed if not o.is_hydra_override()]
        cfg.hydra.overrides.task = [o.input_line for o in task]
        dirname = cfg.hydra.job.config.override_dirname
        cfg.hydra.job.override_dirname = _hydra.overrides_dirname(task, dirname.kv_sep, dirname.item_sep,
                                                                  dirname.exclude_keys)
        OmegaConf.copy_cache(from_config=self.master, to_config=cfg)
        if not entry[1]:  # the first of its kind: must be exactly what Hydra composes
            hydra = self._hydra(overrides)
            if OmegaConf.to_yaml(hydra) != OmegaConf.to_yaml(cfg):
                log.warning(f"fast composition differs from Hydra's for {list(overrides)}; composing such jobs "
                            "with Hydra")
                self.templates[kind] = None
                return hydra
            entry[1] = True
        self.fast += 1
        return cfg

    def _hydra(self, overrides: Sequence[str]) -> Any:
        self.full += 1  # Hydra's own, also when the loader is a FastSweepLoader
        return _hydra.load_sweep_config(self.loader, self.master, overrides)


_COMPOSERS: dict[int, SweepComposer] = {}


def composer(loader: Any, master: Any) -> SweepComposer:
    """The composer of this process for this launcher's sweep (one per process: a fork copies the parent's)."""
    key = id(master)
    if key not in _COMPOSERS:
        _COMPOSERS[key] = SweepComposer(loader, master)
    return _COMPOSERS[key]


class FastSweepLoader(_hydra.ConfigLoader):  # type: ignore[misc,valid-type]
    """Hydra's config loader whose load_sweep_config goes through the sweep's SweepComposer.

    Hydra's sweeper composes every job once to validate the batch before launching (serially, in the
    launching process); with this loader that validation also fills the composer, which the warm
    workers then inherit."""

    def load_sweep_config(self, master_config: Any, sweep_overrides: list[str]) -> Any:
        return composer(self, master_config).compose(sweep_overrides)


def make_fast(loader: Any) -> None:
    """Swap a Hydra ConfigLoaderImpl for FastSweepLoader in place (same state; picklable by reference)."""
    if type(loader) is _hydra.ConfigLoader:
        loader.__class__ = FastSweepLoader
